//! onerec-core: the algorithms of onerec, a generative recommender in the manner of OneRec.
//!
//! Without the default `pipeline` feature only the portable parts build, so that the browser
//! can compile them to WebAssembly.

#[cfg(feature = "model")]
pub mod align;
pub mod api;
pub mod codec;
#[cfg(feature = "model")]
pub mod device;
pub mod error;
pub mod rescore;

#[cfg(feature = "pipeline")]
pub mod data;
#[cfg(feature = "pipeline")]
pub mod decode;
#[cfg(feature = "pipeline")]
pub mod embed;
#[cfg(feature = "pipeline")]
pub mod eval;
#[cfg(feature = "model")]
pub mod generator;
#[cfg(feature = "wgpu")]
pub mod gpu;
#[cfg(feature = "pipeline")]
pub mod linalg;
#[cfg(feature = "model")]
pub mod reward;
#[cfg(feature = "pipeline")]
pub mod tokenizer;
#[cfg(feature = "model")]
pub mod training;

#[cfg(all(test, feature = "model"))]
mod test_fixtures;

pub use error::{Error, Result};
