//! Knowledge distillation for face recognition: what moves a large teacher's knowledge into a
//! small student (MobileFaceNet), as loss terms added to the student's own margin loss.
//!
//! - [`embedding_loss`]: the student's normalised embedding pulled onto the teacher's (cosine or
//!   L2; on unit vectors the L2 form is exactly twice the cosine form);
//! - [`logit_loss`]: the KL divergence between the teacher's and the student's
//!   temperature-softened class distributions, both scored against the teacher's class centres;
//! - [`relational_loss`]: similarity-preserving KD (Tung & Mori 2019) on the batch's pairwise
//!   cosine similarities.
//!
//! [`DistillConfig`] weighs them; `docs/distillation.md` says which helps and why.

mod config;
mod losses;

pub use config::{DistillConfig, EmbeddingDistance};
pub use losses::{embedding_loss, logit_loss, relational_loss};
