//! Picks the loader for a path.
pub enum DataFormat {}
pub struct DataSource;
