//! Margin-based softmax heads for face recognition: ArcFace, CosFace and insightface's combined
//! margin, label smoothing, inter-class filtering and Partial FC, on any Burn backend.
//!
//! ```
//! use arcface_loss::{MarginFcConfig, MarginHead};
//! use burn::{backend::Flex, tensor::Tensor};
//!
//! let device = Default::default();
//! let head = MarginFcConfig::new(10, 8).init::<Flex>(&device).unwrap();
//! let embeddings = Tensor::<Flex, 2>::ones([2, 8], &device);
//! let out = head.forward(embeddings, &[3, 7], 0).unwrap();
//! assert_eq!(out.logits.dims(), [2, 10]);
//! ```
//!
//! The formulas, their boundary handling and when to choose which head are in `docs/losses.md`.

mod error;
mod head;
mod loss;
mod margin;
mod sampling;
mod sgd;

pub use error::LossError;
pub use head::{
    cosine_similarity, filter_interclass, l2_normalize, margin_logits, HeadOutput, MarginFc,
    MarginFcConfig, MarginHead,
};
pub use loss::smoothed_cross_entropy;
pub use margin::{ArcFace, ArcFaceForm, CombinedMargin, CosFace, Margin, MarginConfig};
pub use sampling::{sample_classes, step_rng, ClassSample};
pub use sgd::{SampledSgd, SampledSgdConfig};
