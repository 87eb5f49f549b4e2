use std::path::PathBuf;

/// Everything that can go wrong when building, importing, saving or loading a backbone.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    #[error(
        "unknown architecture `{0}` (expected one of: r18, r34, r50, r100, r200, mbf, mbf_large, mbf_w600k)"
    )]
    /// A name `--arch` does not know.
    UnknownArch(String),

    /// Settings out of range.
    #[error("invalid backbone config: {0}")]
    InvalidConfig(String),

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// An ONNX file that does not parse or is not a backbone.
    #[error("{path}: not a valid ONNX model: {message}")]
    Onnx {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A PyTorch checkpoint that does not read.
    #[error("{path}: cannot read the PyTorch checkpoint: {message}")]
    Torch {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A weight of another shape than its place in the architecture.
    #[error("weight `{source_name}` does not fit `{target}`: file has shape {found:?}, the model expects {expected:?}")]
    ShapeMismatch {
        /// Its name in the file.
        source_name: String,
        /// Its place in the module.
        target: String,
        /// The shape the place needs.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },

    /// A weight with NaN or infinite values.
    #[error("weight `{source_name}` (for `{target}`) holds NaN or infinite values: the file is corrupt or the training diverged")]
    NonFinite {
        /// Its name in the file.
        source_name: String,
        /// Its place in the module.
        target: String,
    },

    /// A weight the architecture needs is not in the file.
    #[error("weight `{0}` is missing from the file")]
    MissingWeight(String),

    /// The file has weights the architecture has no place for.
    #[error("the file holds weights the architecture has no place for: {0}")]
    UnusedWeights(String),

    /// An ONNX graph whose layers are not the architecture's.
    #[error("the graph does not follow the architecture: {0}")]
    GraphMismatch(String),

    /// A damaged or foreign model file.
    #[error("{path}: not an arcface-rs model file: {message}")]
    BadModelFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A model file of another architecture than the one asked for.
    #[error("{path}: the file holds {found}, but {expected} was asked for")]
    WrongArchitecture {
        /// The file.
        path: PathBuf,
        /// The architecture asked for.
        expected: String,
        /// The file's.
        found: String,
    },

    /// Burn could not read or write the weights.
    #[error("burn record error: {0}")]
    Record(String),

    /// Faces of another shape than `[N, 3, 112, 112]`.
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

/// Results of this crate.
pub type Result<T, E = BackboneError> = std::result::Result<T, E>;
