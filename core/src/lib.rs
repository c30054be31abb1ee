//! onerec-core: the algorithms of onerec, a generative recommender in the manner of OneRec.
//!
//! Without the default `pipeline` feature only the portable parts build, so that the browser
//! can compile them to WebAssembly.

pub mod codec;
pub mod error;

#[cfg(feature = "pipeline")]
pub mod data;
#[cfg(feature = "pipeline")]
pub mod embed;
#[cfg(feature = "pipeline")]
pub mod eval;
#[cfg(feature = "pipeline")]
pub mod linalg;
#[cfg(feature = "pipeline")]
pub mod tokenizer;

pub use error::{Error, Result};
