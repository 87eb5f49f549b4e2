//! Why a run stopped early or could not start.

use std::path::{Path, PathBuf};

use crate::checkpoint::CheckpointError;

/// Why a run stopped early or could not start.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting out of range.
    #[error(transparent)]
    Config(#[from] crate::settings::ConfigError),
    /// The data did not load.
    #[error(transparent)]
    Data(#[from] face_data::DataError),
    /// The head refused its inputs.
    #[error(transparent)]
    Loss(#[from] arcface_loss::LossError),
    /// The backbone could not be built or saved.
    #[error(transparent)]
    Backbone(#[from] iresnet::BackboneError),
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Optimizer state could not be saved or restored.
    #[error(transparent)]
    State(#[from] crate::optim::StateError),
    /// Verification failed.
    #[error(transparent)]
    Eval(#[from] eval::EvalError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Too many non-finite steps in a row.
    #[error("{count} consecutive non-finite losses or gradients at step {step}: stopping (last checkpoint: {checkpoint})")]
    Diverged {
        /// The last step.
        step: u64,
        /// Non-finite steps in a row.
        count: usize,
        /// The checkpoint to resume from.
        checkpoint: String,
    },
    /// Another node of a multi-node run did not answer, or the nodes could not agree.
    #[error("multi-node run: {0}")]
    Collective(String),
    /// Anything else, in words.
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
