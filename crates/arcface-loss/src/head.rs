//! The classification head: normalized class centres, a margin, label smoothing, Partial FC.

use burn::{
    module::{Module, Param},
    nn::Initializer,
    tensor::{backend::Backend, DType, FloatDType, IndexingUpdateOp, Int, Tensor, TensorData},
};
use serde::{Deserialize, Serialize};

use crate::{
    error::{invalid, LossError},
    loss::smoothed_cross_entropy,
    margin::{Margin, MarginConfig},
    sampling::{sample_classes, step_rng, ClassSample},
};

/// What the trainer needs from a head, whichever margin or sampling it uses.
pub trait MarginHead<B: Backend> {
    /// Number of identities the head classifies.
    fn num_classes(&self) -> usize;

    /// Embedding width the head expects.
    fn embedding_dim(&self) -> usize;

    /// Scores a batch: `embeddings` is `[N, D]` (f16/bf16 are computed in f32), `labels` holds
    /// each sample's class, `step` seeds Partial FC's sampling (pass the iteration number).
    fn forward(
        &self,
        embeddings: Tensor<B, 2>,
        labels: &[usize],
        step: u64,
    ) -> Result<HeadOutput<B>, LossError>;
}

/// One batch through a head.
#[derive(Debug, Clone)]
pub struct HeadOutput<B: Backend> {
    /// Loss averaged over the batch (shape `[1]`), ready for `backward()`.
    pub loss: Tensor<B, 1>,
    /// Scaled logits with the margin on the target, `[N, C']`, over the sampled classes.
    pub logits: Tensor<B, 2>,
    /// Cosines between embeddings and the sampled centres, `[N, C']`, before filtering and margin.
    pub cosine: Tensor<B, 2>,
    /// The centres the batch was scored against, `[C', D]`. With Partial FC this is a leaf of
    /// the autodiff graph (the `[K, D]` parameter gets no gradient): pass it to
    /// [`MarginFc::step_sampled`], which updates those rows.
    pub centres: Tensor<B, 2>,
    /// Which classes the columns are and each sample's target column.
    pub sample: ClassSample,
}

/// Configuration of [`MarginFc`]; serde-readable from the trainer's TOML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarginFcConfig {
    /// Number of identities `K`.
    pub num_classes: usize,
    /// Embedding width `D` (512 for insightface's backbones).
    pub embedding_dim: usize,
    /// The margin on the target logit.
    pub margin: MarginConfig,
    /// Partial FC: share of classes scored per step (positives always included); 1.0 = all.
    pub sample_rate: f64,
    /// Label smoothing epsilon; the target becomes `(1 - eps) * onehot + eps / C'`.
    pub label_smoothing: f64,
    /// Inter-class filtering: non-target cosines above this are set to 0 before the margin
    /// (insightface's `interclass_filtering_threshold`; for noisy, near-duplicate identities).
    pub interclass_filter: Option<f64>,
    /// Seed of Partial FC's sampling; the sample at a step depends on (seed, step) only.
    pub seed: u64,
}

impl Default for MarginFcConfig {
    fn default() -> Self {
        Self {
            num_classes: 1000,
            embedding_dim: 512,
            margin: MarginConfig::default(),
            sample_rate: 1.0,
            label_smoothing: 0.0,
            interclass_filter: None,
            seed: 0,
        }
    }
}

impl MarginFcConfig {
    /// A full head over `num_classes` identities with the default ArcFace margin.
    pub fn new(num_classes: usize, embedding_dim: usize) -> Self {
        Self {
            num_classes,
            embedding_dim,
            ..Self::default()
        }
    }

    /// The margin applied to the target logit (ArcFace, CosFace or combined).
    pub fn with_margin(mut self, margin: impl Into<MarginConfig>) -> Self {
        self.margin = margin.into();
        self
    }

    /// Partial FC: the share of classes sampled per step (1 = all).
    pub fn with_sample_rate(mut self, sample_rate: f64) -> Self {
        self.sample_rate = sample_rate;
        self
    }

    /// Label smoothing `epsilon` of the cross-entropy (0 = off).
    pub fn with_label_smoothing(mut self, epsilon: f64) -> Self {
        self.label_smoothing = epsilon;
        self
    }

    /// Inter-class filtering: non-target cosines above `threshold` are set to 0 (`None` = off).
    pub fn with_interclass_filter(mut self, threshold: Option<f64>) -> Self {
        self.interclass_filter = threshold;
        self
    }

    /// Seed of Partial FC's class sampling.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Classes scored per step: `floor(sample_rate * K)` as insightface computes it, at least 1.
    pub fn num_sample(&self) -> usize {
        ((self.sample_rate * self.num_classes as f64) as usize).clamp(1, self.num_classes)
    }

    /// Checks every value against the range where the head is defined.
    pub fn validate(&self) -> Result<(), LossError> {
        if self.num_classes < 2 {
            return Err(invalid("num_classes", self.num_classes, "need at least 2"));
        }
        if self.embedding_dim == 0 {
            return Err(invalid("embedding_dim", 0, "must be > 0"));
        }
        if !(self.sample_rate > 0.0 && self.sample_rate <= 1.0) {
            return Err(invalid(
                "sample_rate",
                self.sample_rate,
                "must be in (0, 1]",
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(invalid(
                "label_smoothing",
                self.label_smoothing,
                "must be in [0, 1)",
            ));
        }
        if let Some(t) = self.interclass_filter {
            if !(t > -1.0 && t <= 1.0) {
                return Err(invalid("interclass_filter", t, "must be in (-1, 1]"));
            }
        }
        self.margin.validate()
    }

    /// Builds the head with class centres drawn from normal(0, 0.01), as insightface does.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<MarginFc<B>, LossError> {
        self.validate()?;
        let centres = Initializer::Normal {
            mean: 0.0,
            std: 0.01,
        }
        .init([self.num_classes, self.embedding_dim], device);
        Ok(MarginFc {
            centres,
            config: self.clone(),
        })
    }

    /// Builds the head around given centres (`[K, D]`), e.g. from a checkpoint or a test.
    pub fn init_with<B: Backend>(&self, centres: Tensor<B, 2>) -> Result<MarginFc<B>, LossError> {
        self.validate()?;
        let dims = centres.dims();
        if dims != [self.num_classes, self.embedding_dim] {
            return Err(LossError::Shape(format!(
                "centres are {dims:?}, config says [{}, {}]",
                self.num_classes, self.embedding_dim
            )));
        }
        Ok(MarginFc {
            centres: Param::from_tensor(centres),
            config: self.clone(),
        })
    }
}

/// A fully connected layer of L2-normalized class centres with a margin on the target logit;
/// Partial FC when `sample_rate < 1`. Its only parameter is `centres` (`[K, D]`).
#[derive(Module, Debug)]
pub struct MarginFc<B: Backend> {
    /// The class centres `[K, D]`, stored as trained and L2-normalized when used.
    pub centres: Param<Tensor<B, 2>>,
    #[module(skip)]
    config: MarginFcConfig,
}

impl<B: Backend> MarginFc<B> {
    /// The configuration it was built from.
    pub fn config(&self) -> &MarginFcConfig {
        &self.config
    }

    /// The classes step `step` scores for these labels (all of them without Partial FC).
    pub fn sample(&self, labels: &[usize], step: u64) -> ClassSample {
        let num_sample = self.config.num_sample();
        if num_sample >= self.config.num_classes {
            ClassSample::all(labels)
        } else {
            let mut rng = step_rng(self.config.seed, step);
            sample_classes(labels, self.config.num_classes, num_sample, &mut rng)
        }
    }

    fn check_batch(&self, dims: [usize; 2], labels: &[usize]) -> Result<(), LossError> {
        let [n, d] = dims;
        if n == 0 || n != labels.len() || d != self.config.embedding_dim {
            return Err(LossError::Shape(format!(
                "embeddings are [{n}, {d}] with {} labels; the head expects [N > 0, {}] and N labels",
                labels.len(),
                self.config.embedding_dim
            )));
        }
        let num_classes = self.config.num_classes;
        if let Some((index, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= num_classes) {
            return Err(LossError::LabelOutOfRange {
                label,
                index,
                num_classes,
            });
        }
        Ok(())
    }
}

impl<B: Backend> MarginHead<B> for MarginFc<B> {
    fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    fn embedding_dim(&self) -> usize {
        self.config.embedding_dim
    }

    fn forward(
        &self,
        embeddings: Tensor<B, 2>,
        labels: &[usize],
        step: u64,
    ) -> Result<HeadOutput<B>, LossError> {
        self.check_batch(embeddings.dims(), labels)?;
        let sample = self.sample(labels, step);
        self.forward_sampled(embeddings, sample)
    }
}

impl<B: Backend> MarginFc<B> {
    /// Scores a batch against a given class sample (from [`MarginFc::sample`] or built by hand);
    /// the targets must index the sample's classes.
    pub fn forward_sampled(
        &self,
        embeddings: Tensor<B, 2>,
        sample: ClassSample,
    ) -> Result<HeadOutput<B>, LossError> {
        let num_columns = sample.len(self.config.num_classes);
        if let Some(classes) = &sample.classes {
            if let Some(&bad) = classes.iter().find(|&&c| c >= self.config.num_classes) {
                return Err(LossError::LabelOutOfRange {
                    label: bad,
                    index: 0,
                    num_classes: self.config.num_classes,
                });
            }
        }
        self.check_batch(embeddings.dims(), &sample.targets)?;
        if let Some((index, &label)) = sample
            .targets
            .iter()
            .enumerate()
            .find(|(_, &t)| t >= num_columns)
        {
            return Err(LossError::LabelOutOfRange {
                label,
                index,
                num_classes: num_columns,
            });
        }
        let device = embeddings.device();
        let centres = match &sample.classes {
            // A fresh leaf: its gradient stays [C', D] instead of being scattered into a dense
            // [K, D] one (that scatter is most of the backward pass at 100k classes), and
            // `step_sampled` updates exactly these rows from it.
            Some(classes) => self
                .centres
                .val()
                .select(0, index_tensor(classes, &device))
                .detach()
                .require_grad(),
            None => self.centres.val(),
        };
        let cosine = cosine_similarity(embeddings, centres.clone());
        let targets = index_tensor::<B>(&sample.targets, &device).unsqueeze_dim(1);
        let filtered = match self.config.interclass_filter {
            Some(threshold) => filter_interclass(cosine.clone(), targets.clone(), threshold),
            None => cosine.clone(),
        };
        let logits = margin_logits(filtered, targets.clone(), &self.config.margin);
        let loss = smoothed_cross_entropy(logits.clone(), targets, self.config.label_smoothing);
        Ok(HeadOutput {
            loss,
            logits,
            cosine,
            centres,
            sample,
        })
    }
}

/// Class ids or columns as an Int tensor.
pub(crate) fn index_tensor<B: Backend>(values: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let data: Vec<i64> = values.iter().map(|&v| v as i64).collect();
    Tensor::from_data(TensorData::new(data, [values.len()]), device)
}

/// The dtype the head computes in: f64 if either input is f64, else f32 (f16/bf16 are widened,
/// since normalisation and the margin lose too much in half precision).
fn working_dtype(a: DType, b: DType) -> FloatDType {
    if a == DType::F64 || b == DType::F64 {
        FloatDType::F64
    } else {
        FloatDType::F32
    }
}

/// Rows scaled to unit L2 norm. Norms are floored at 1e-6 (as PyTorch's `F.normalize` floors at
/// 1e-12): a zero row stays zero, so its cosines are 0 (a defined value, not NaN), and the
/// gradient stays finite there. Real embeddings and centres are many orders above the floor.
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).clamp_min(1e-12).sqrt();
    x / norm
}

/// `cos(theta)` between every embedding (`[N, D]`) and every centre (`[C, D]`), clamped to
/// `[-1, 1]` against rounding, in at least f32.
pub fn cosine_similarity<B: Backend>(
    embeddings: Tensor<B, 2>,
    centres: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let dtype = working_dtype(embeddings.dtype(), centres.dtype());
    let e = l2_normalize(embeddings.cast(dtype));
    let w = centres.cast(dtype);
    // Dividing the [N, C] product by the centres' norms, rather than normalising the [C, D]
    // centres first, saves several full passes over the (large) centre matrix forward and back.
    let [c, _] = w.dims();
    let inv_norm = w
        .clone()
        .powi_scalar(2)
        .sum_dim(1)
        .clamp_min(1e-12)
        .sqrt()
        .recip()
        .reshape([1, c]);
    (e.matmul(w.transpose()) * inv_norm).clamp(-1.0, 1.0)
}

/// Zeroes non-target cosines above `threshold` (insightface's inter-class filtering): such
/// classes are likely the same person under another label, so they are neither pushed away nor
/// given a gradient.
pub fn filter_interclass<B: Backend>(
    cosine: Tensor<B, 2>,
    targets: Tensor<B, 2, Int>,
    threshold: f64,
) -> Tensor<B, 2> {
    let dirty = cosine.clone().greater_elem(threshold).int();
    let at_target = dirty.clone().gather(1, targets.clone());
    let dirty = dirty.scatter(1, targets, at_target.neg(), IndexingUpdateOp::Add);
    cosine.mask_fill(dirty.bool(), 0.0)
}

/// `s * cos` everywhere, with the target column replaced by the margin's target logit.
/// Non-target logits are exactly `s * cos(theta_j)`.
pub fn margin_logits<B: Backend, M: Margin>(
    cosine: Tensor<B, 2>,
    targets: Tensor<B, 2, Int>,
    margin: &M,
) -> Tensor<B, 2> {
    let t = cosine.clone().gather(1, targets.clone());
    let shift = margin.target_logit(t.clone()) - t;
    cosine
        .scatter(1, targets, shift, IndexingUpdateOp::Add)
        .mul_scalar(margin.scale())
}
