//! One error type for the whole crate, so that every failure names the file (and line) it came from.

use std::path::PathBuf;

/// Errors from loading data, reading or writing artefacts, and invalid settings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A malformed row in a data file; `line` is 1-based.
    #[error("{path}:{line}: {message}")]
    Parse { path: PathBuf, line: usize, message: String },
    /// A file that is readable but unusable as a whole (missing column, no rows, wrong kind).
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// An artefact (tokenizer, snapshot) refused because it is truncated, corrupt or of another version.
    #[error("{path}: refused: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// Settings that cannot work together (for example more codes than items).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An external step (such as a download) that failed, with what to do about it.
    #[error("{0}")]
    External(String),
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub fn parse(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        Error::Parse { path: path.into(), line, message: message.into() }
    }

    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Invalid { path: path.into(), message: message.into() }
    }

    pub fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Corrupt { path: path.into(), reason: reason.into() }
    }
}
