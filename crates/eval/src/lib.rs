//! Evaluation of face embedders: 1:1 verification with insightface's protocol (10-fold accuracy,
//! VAL@FAR) and sklearn's ROC reading (AUC, EER, TAR@FAR), LFW's own folds, 1:N identification
//! (rank-k, CMC, TPIR@FPIR, rank-1 against growing distractor sets), reports and plots.

pub mod embedder;
pub mod identification;
pub mod pairs;
pub mod report;
pub mod verification;

pub use embedder::{BurnEmbedder, MultimodalBurnEmbedder};
pub use face_embed::{
    cosine, embed_normalized, normalize, EmbedError, Embedder, FaceImages, MultimodalEmbedder,
};
pub use identification::{
    closed_set, open_set, rank1_with_distractors, search, ClosedSet, Labelled, OpenSetPoint,
    ProbeResult,
};
pub use pairs::{aligned, PairSet};
pub use report::{verify_pairs, VerificationReport};
pub use verification::{
    contiguous_folds, fold_ids, k_fold, ten_fold, val_at_far, Roc, TenFold, ValAtFar,
};

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A model file did not load.
    #[error(transparent)]
    Backbone(#[from] iresnet::BackboneError),
    /// A dataset or pairs file did not load.
    #[error(transparent)]
    Data(#[from] face_data::DataError),
    /// The model failed on the faces.
    #[error("model: {0}")]
    Model(String),
    /// The inputs cannot be evaluated (sizes, counts, empty sets).
    #[error("{0}")]
    Input(String),
    /// A plot could not be written.
    #[error(transparent)]
    Plot(#[from] arcface_plot::PlotError),
    /// The embedder failed.
    #[error(transparent)]
    Embed(#[from] face_embed::EmbedError),
}
