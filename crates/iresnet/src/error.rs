use std::path::PathBuf;

/// Everything that can go wrong when building, importing, saving or loading a backbone.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    #[error(
        "unknown architecture `{0}` (expected one of: r18, r34, r50, r100, r200, mbf, mbf_large, mbf_w600k)"
    )]
    UnknownArch(String),

    #[error("invalid backbone config: {0}")]
    InvalidConfig(String),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: not a valid ONNX model: {message}")]
    Onnx { path: PathBuf, message: String },

    #[error("{path}: cannot read the PyTorch checkpoint: {message}")]
    Torch { path: PathBuf, message: String },

    #[error("weight `{source_name}` does not fit `{target}`: file has shape {found:?}, the model expects {expected:?}")]
    ShapeMismatch {
        source_name: String,
        target: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("weight `{source_name}` (for `{target}`) holds NaN or infinite values: the file is corrupt or the training diverged")]
    NonFinite { source_name: String, target: String },

    #[error("weight `{0}` is missing from the file")]
    MissingWeight(String),

    #[error("the file holds weights the architecture has no place for: {0}")]
    UnusedWeights(String),

    #[error("the graph does not follow the architecture: {0}")]
    GraphMismatch(String),

    #[error("{path}: not an arcface-rs model file: {message}")]
    BadModelFile { path: PathBuf, message: String },

    #[error("{path}: the file holds {found}, but {expected} was asked for")]
    WrongArchitecture {
        path: PathBuf,
        expected: String,
        found: String,
    },

    #[error("burn record error: {0}")]
    Record(String),

    #[error("input must be [N, 3, 112, 112] RGB; got {0:?}")]
    BadInput(Vec<usize>),
}

impl BackboneError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = BackboneError> = std::result::Result<T, E>;
