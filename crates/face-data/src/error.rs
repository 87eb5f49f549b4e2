use std::path::PathBuf;

use thiserror::Error;

/// Why a dataset could not be read or written. Every variant names the file, and the record or
/// sample where there is one.
#[derive(Debug, Error)]
pub enum DataError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A RecordIO record is damaged.
    #[error("{path}: record at byte {offset}: {reason}")]
    Record {
        /// The `.rec` file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A line of a `.idx` file is damaged.
    #[error("{path}: line {line}: {reason}")]
    Index {
        /// The `.idx` file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A record the dataset needs is not in the index.
    #[error("{path}: key {key} is not in the index")]
    MissingKey {
        /// The `.rec` file.
        path: PathBuf,
        /// The missing key.
        key: u64,
    },
    /// An image could not be decoded.
    #[error("{path}: sample {index}: cannot decode the image: {reason}")]
    Decode {
        /// The file it came from.
        path: PathBuf,
        /// Its sample index.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Not the pickle insightface writes.
    #[error("{path}: not an insightface verification .bin: {reason}")]
    Bin {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A line of a pairs file is malformed.
    #[error("{path}: line {line}: {reason}")]
    Pairs {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A folder or file is not laid out as the dataset needs.
    #[error("{path}: {reason}")]
    Layout {
        /// The folder or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A sample index past the end.
    #[error("index {index} out of range for {len} samples")]
    OutOfRange {
        /// The index asked for.
        index: usize,
        /// Samples there are.
        len: usize,
    },
    /// A setting out of range.
    #[error("invalid {what}: {reason}")]
    Config {
        /// The setting.
        what: &'static str,
        /// The range it must be in.
        reason: String,
    },
}

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.into();
    move |source| DataError::Io { path, source }
}

/// Results of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
