use std::path::PathBuf;

use thiserror::Error;

/// Why a detector could not be built or could not run.
#[derive(Debug, Error)]
pub enum DetectError {
    /// The weights file could not be read as a PyTorch checkpoint.
    #[error("{path}: {message}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An ONNX detector graph could not be loaded or run.
    #[error("{path}: {message}")]
    Model {
        /// The ONNX file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A tensor RetinaFace needs is not in the checkpoint.
    #[error("weight `{0}` is missing from the checkpoint")]
    MissingWeight(String),
    /// A tensor has another shape than RetinaFace's.
    #[error("weight `{name}` has shape {found:?}, expected {expected:?}")]
    WeightShape {
        /// The tensor's key.
        name: String,
        /// Its shape in the file.
        found: Vec<usize>,
        /// The shape RetinaFace needs.
        expected: Vec<usize>,
    },
    /// A tensor holds NaN or infinite values.
    #[error("weight `{0}` holds NaN or infinite values")]
    NonFiniteWeight(String),
    /// The checkpoint has tensors RetinaFace does not use (another network's file).
    #[error("checkpoint tensors not used by RetinaFace: {0}")]
    UnusedWeights(String),
    /// A setting is out of range.
    #[error("invalid detector config: {0}")]
    Config(String),
    /// The image (width, height) is too small to detect in.
    #[error("image is {0}x{1}: too small to detect faces in (need at least 1x1 after resizing)")]
    ImageSize(u32, u32),
}
