//! Why a run stopped early or could not start.

use std::path::{Path, PathBuf};

use crate::checkpoint::CheckpointError;

/// Why a run stopped early or could not start.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] crate::settings::ConfigError),
    #[error(transparent)]
    Data(#[from] face_data::DataError),
    #[error(transparent)]
    Loss(#[from] arcface_loss::LossError),
    #[error(transparent)]
    Backbone(#[from] iresnet::BackboneError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    State(#[from] crate::optim::StateError),
    #[error(transparent)]
    Eval(#[from] eval::EvalError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{count} consecutive non-finite losses or gradients at step {step}: stopping (last checkpoint: {checkpoint})")]
    Diverged {
        step: u64,
        count: usize,
        checkpoint: String,
    },
    #[error("{0}")]
    Other(String),
}

/// Maps an I/O error to one that names `path`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}
