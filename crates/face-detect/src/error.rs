use std::path::PathBuf;

use thiserror::Error;

/// Why a detector could not be built or could not run.
#[derive(Debug, Error)]
pub enum DetectError {
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("weight `{0}` is missing from the checkpoint")]
    MissingWeight(String),
    #[error("weight `{name}` has shape {found:?}, expected {expected:?}")]
    WeightShape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("weight `{0}` holds NaN or infinite values")]
    NonFiniteWeight(String),
    #[error("checkpoint tensors not used by RetinaFace: {0}")]
    UnusedWeights(String),
    #[error("invalid detector config: {0}")]
    Config(String),
    #[error("image is {0}x{1}: too small to detect faces in (need at least 1x1 after resizing)")]
    ImageSize(u32, u32),
}
