use std::path::PathBuf;

use thiserror::Error;

/// Why a dataset could not be read or written. Every variant names the file, and the record or
/// sample where there is one.
#[derive(Debug, Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: record at byte {offset}: {reason}")]
    Record {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{path}: line {line}: {reason}")]
    Index {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: key {key} is not in the index")]
    MissingKey { path: PathBuf, key: u64 },
    #[error("{path}: sample {index}: cannot decode the image: {reason}")]
    Decode {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("{path}: not an insightface verification .bin: {reason}")]
    Bin { path: PathBuf, reason: String },
    #[error("{path}: line {line}: {reason}")]
    Pairs {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Layout { path: PathBuf, reason: String },
    #[error("index {index} out of range for {len} samples")]
    OutOfRange { index: usize, len: usize },
    #[error("invalid {what}: {reason}")]
    Config { what: &'static str, reason: String },
}

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.into();
    move |source| DataError::Io { path, source }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
