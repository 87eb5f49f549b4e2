//! Verification during training, through the `eval` crate: insightface's 10-fold protocol on
//! the configured pairs (`eval::PairSet`), the feature-collapse share of the same embeddings,
//! and the validation loss on unseen samples of the training identities.

use arcface_loss::MarginHead;
use burn::module::Module;
use burn::tensor::{backend::Backend, ElementConversion};
use eval::{embed_normalized, verify_pairs, BurnEmbedder, PairSet};
use iresnet::Backbone;

use crate::error::TrainError;
use crate::stopping::Evaluation;

/// What one verification measured.
#[derive(Debug, Clone, Copy)]
pub struct Verification {
    /// insightface's mean 10-fold accuracy.
    pub accuracy: f64,
    /// Share of the top-10 singular values of (up to 256) evaluation embeddings.
    pub collapse_share: f64,
}

/// Embeds the pairs with the inference-mode backbone (flip test when `flip`) and scores them.
pub fn verify<B: Backend, M: Backbone<B> + Module<B>>(
    set: &PairSet,
    backbone: &M,
    flip: bool,
    device: &B::Device,
) -> Result<Verification, TrainError> {
    let embedder = BurnEmbedder::new(backbone.clone(), device.clone());
    let embeddings =
        embed_normalized(&embedder, &set.faces, flip, |_| {}).map_err(eval::EvalError::from)?;
    let report = verify_pairs(&embeddings, &set.same, set.fold.as_deref())?;
    let dim = embeddings.first().map_or(0, Vec::len);
    let sample: Vec<f32> = embeddings.iter().take(256).flatten().copied().collect();
    Ok(Verification {
        accuracy: report.ten_fold.accuracy_mean,
        collapse_share: crate::collapse::top_singular_share(&sample, dim, 10),
    })
}

/// Unseen samples of the training identities with their labels: the validation loss.
pub struct ValidationSet {
    faces: Vec<image::RgbImage>,
    labels: Vec<usize>,
}

impl ValidationSet {
    /// Aligned 112x112 faces and their training labels.
    pub fn new(faces: Vec<image::RgbImage>, labels: Vec<usize>) -> Self {
        Self { faces, labels }
    }

    /// One unseen sample each of the first `count` synthetic identities (index `per_identity`).
    pub fn synthetic(config: &face_data::SyntheticConfig, count: usize) -> Self {
        let ids = config.identities.min(count);
        let faces = (0..ids)
            .map(|id| {
                let id = config.first_identity + id as u64;
                face_data::synthetic::render(config, id, config.per_identity as u64, None).image
            })
            .collect();
        Self::new(faces, (0..ids).collect())
    }

    /// Mean margin loss in inference mode.
    pub fn loss<B: Backend, M: Backbone<B>, H: MarginHead<B>>(
        &self,
        backbone: &M,
        head: &H,
        step: u64,
        device: &B::Device,
    ) -> Result<f64, TrainError> {
        let mut total = 0.0;
        for (faces, labels) in self.faces.chunks(64).zip(self.labels.chunks(64)) {
            let bytes: Vec<&[u8]> = faces.iter().map(|f| f.as_raw().as_slice()).collect();
            let x = iresnet::preprocess::faces_to_tensor::<B>(&bytes, device)?;
            let out = head.forward(backbone.embed(x), labels, step)?;
            total += out.loss.into_scalar().elem::<f64>() * labels.len() as f64;
        }
        Ok(total / self.labels.len().max(1) as f64)
    }
}

/// What the loop evaluates: verification pairs, a validation set, or both.
pub(crate) struct Evaluator {
    pub pairs: Option<PairSet>,
    pub validation: Option<ValidationSet>,
    pub flip_test: bool,
    pub collapse_warn: f64,
}

impl Evaluator {
    /// Evaluates the inference-mode model at `step`, warning when the features collapse.
    pub fn run<B: Backend, M: Backbone<B> + Module<B>, H: MarginHead<B>>(
        &self,
        backbone: &M,
        head: &H,
        step: u64,
        device: &B::Device,
    ) -> Result<Evaluation, TrainError> {
        let mut e = Evaluation::default();
        if let Some(set) = &self.pairs {
            let v = verify(set, backbone, self.flip_test, device)?;
            if v.collapse_share > self.collapse_warn {
                tracing::warn!(
                    "step {step}: the top-10 singular values hold {:.0}% of the embedding spectrum (> {:.0}%): the features may be collapsing",
                    100.0 * v.collapse_share,
                    100.0 * self.collapse_warn
                );
            }
            (e.accuracy, e.collapse_share) = (Some(v.accuracy), Some(v.collapse_share));
        }
        if let Some(set) = &self.validation {
            e.validation_loss = Some(set.loss(backbone, head, step, device)?);
        }
        Ok(e)
    }
}
