//! How much of each loss, at which temperature: the `[distill]` section of a training config.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The distance [`embedding_loss`](crate::embedding_loss) measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingDistance {
    /// `1 - cos(s, t)`.
    #[default]
    Cosine,
    /// `|s - t|^2` on unit vectors (twice the cosine form).
    L2,
}

/// The teacher, the weights of the distillation terms added to the student's margin loss
/// (0 turns one off), and the logit term's temperature and scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// The teacher: a training run's folder (its backbone and, for the logit term, its head's
    /// class centres), or a model file (`.arcface`, insightface `.onnx`/`.pth`; no head).
    pub teacher: PathBuf,
    /// Weight of the embedding term.
    pub embedding: f32,
    /// Its distance.
    pub distance: EmbeddingDistance,
    /// Weight of the logit (KL) term.
    pub logit: f32,
    /// Softmax temperature of the logit term (> 0; higher softens both distributions).
    pub temperature: f32,
    /// The cosine scale of the logit term's softmax (the teacher head's `s`, 64 in ArcFace).
    pub scale: f32,
    /// Weight of the relational (similarity-preserving) term.
    pub relational: f32,
}

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            teacher: PathBuf::new(),
            embedding: 1.0,
            distance: EmbeddingDistance::Cosine,
            logit: 0.0,
            temperature: 4.0,
            scale: 64.0,
            relational: 0.0,
        }
    }
}

impl DistillConfig {
    /// Refuses negative or non-finite weights, a non-positive temperature or scale, and a
    /// configuration that distils nothing.
    pub fn validate(&self) -> Result<(), String> {
        for (name, w) in [
            ("embedding", self.embedding),
            ("logit", self.logit),
            ("relational", self.relational),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(format!(
                    "distill.{name} = {w}: weights must be finite and >= 0"
                ));
            }
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(format!(
                "distill.temperature = {}: must be > 0",
                self.temperature
            ));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(format!("distill.scale = {}: must be > 0", self.scale));
        }
        if self.teacher.as_os_str().is_empty() {
            return Err("distill.teacher: name the teacher's run folder or model file".into());
        }
        if self.embedding + self.logit + self.relational == 0.0 {
            return Err("distill: every weight is 0, so nothing is distilled".into());
        }
        Ok(())
    }
}
