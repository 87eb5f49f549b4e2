//! Optimisers with one parameter group for the backbone and one for the head, as arcface_torch
//! builds them: SGD (PyTorch's rule: dampening 0, optional Nesterov) or AdamW, each group with
//! its own weight decay and learning-rate scale; state saved and restored for checkpoints.

use burn::module::AutodiffModule;
use burn::optim::{
    adaptor::OptimizerAdaptor, decay::WeightDecayConfig, momentum::MomentumConfig, AdamW,
    AdamWConfig, GradientsParams, Optimizer, Sgd, SgdConfig, SimpleOptimizer,
};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::groups::ParamGroup;

/// The update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    /// SGD with momentum, dampening 0 (PyTorch's; Burn's default dampening is 0.1).
    #[serde(rename = "sgd")]
    Sgd,
    /// AdamW with decoupled weight decay (`w *= 1 - lr * wd`), as PyTorch's `AdamW`.
    #[serde(rename = "adamw")]
    AdamW,
}

/// The head's parameter group, relative to the backbone's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadGroup {
    /// The head's learning rate is the schedule's times this.
    pub lr_scale: f64,
    /// The head's weight decay; unset = the backbone's.
    pub weight_decay: Option<f64>,
}

impl Default for HeadGroup {
    fn default() -> Self {
        Self {
            lr_scale: 1.0,
            weight_decay: None,
        }
    }
}

/// The optimiser of both parameter groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerSettings {
    /// SGD or AdamW.
    pub algorithm: Algorithm,
    /// SGD only.
    pub momentum: f64,
    /// SGD only.
    pub nesterov: bool,
    /// AdamW only: (beta1, beta2).
    pub betas: [f64; 2],
    /// AdamW only (PyTorch's default 1e-8; Burn's is 1e-5).
    pub epsilon: f64,
    /// The backbone group's weight decay (L2 for SGD, decoupled for AdamW).
    pub weight_decay: f64,
    /// The head group's rate scale and weight decay.
    pub head: HeadGroup,
}

impl Default for OptimizerSettings {
    /// arcface_torch's: SGD, momentum 0.9, weight decay 5e-4 on both groups.
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Sgd,
            momentum: 0.9,
            nesterov: false,
            betas: [0.9, 0.999],
            epsilon: 1e-8,
            weight_decay: 5e-4,
            head: HeadGroup::default(),
        }
    }
}

impl OptimizerSettings {
    /// Refuses values out of range.
    pub fn validate(&self) -> Result<(), String> {
        let decay_ok = |d: f64| d.is_finite() && d >= 0.0;
        if !decay_ok(self.weight_decay) || !self.head.weight_decay.is_none_or(decay_ok) {
            return Err("weight decay must be finite and >= 0".into());
        }
        if !(self.head.lr_scale.is_finite() && self.head.lr_scale >= 0.0) {
            return Err("head.lr_scale must be finite and >= 0".into());
        }
        match self.algorithm {
            Algorithm::Sgd if !(0.0..1.0).contains(&self.momentum) => {
                Err("SGD momentum must be in [0, 1)".into())
            }
            Algorithm::AdamW if !self.betas.iter().all(|b| (0.0..1.0).contains(b)) => {
                Err("AdamW betas must be in [0, 1)".into())
            }
            Algorithm::AdamW if !(self.epsilon.is_finite() && self.epsilon > 0.0) => {
                Err("AdamW epsilon must be > 0".into())
            }
            _ => Ok(()),
        }
    }

    /// The head group's weight decay.
    pub fn head_weight_decay(&self) -> f64 {
        self.head.weight_decay.unwrap_or(self.weight_decay)
    }

    /// arcface_torch's two parameter groups: the backbone, and the head with its own rate
    /// scale and weight decay.
    pub fn default_groups(&self) -> Vec<ParamGroup> {
        vec![
            ParamGroup::new("backbone", &["backbone"], self.weight_decay),
            ParamGroup::new("head", &["head"], self.head_weight_decay())
                .with_lr_scale(self.head.lr_scale),
        ]
    }

    /// The optimiser of one group of parameters (`M`) with `weight_decay`.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        weight_decay: f64,
    ) -> GroupOptimizer<B, M> {
        match self.algorithm {
            Algorithm::Sgd => {
                let momentum = (self.momentum > 0.0).then(|| {
                    MomentumConfig::new()
                        .with_momentum(self.momentum)
                        .with_dampening(0.0)
                        .with_nesterov(self.nesterov)
                });
                let decay =
                    (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32));
                GroupOptimizer::Sgd(
                    SgdConfig::new()
                        .with_momentum(momentum)
                        .with_weight_decay(decay)
                        .init(),
                )
            }
            Algorithm::AdamW => GroupOptimizer::AdamW(
                AdamWConfig::new()
                    .with_beta_1(self.betas[0] as f32)
                    .with_beta_2(self.betas[1] as f32)
                    .with_epsilon(self.epsilon as f32)
                    .with_weight_decay(weight_decay as f32)
                    .init(),
            ),
        }
    }
}

/// One parameter group's optimiser.
pub enum GroupOptimizer<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// SGD.
    Sgd(OptimizerAdaptor<Sgd<B::InnerBackend>, M, B>),
    /// AdamW.
    AdamW(OptimizerAdaptor<AdamW, M, B>),
}

/// Why saved optimiser state could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("optimizer state: {0}")]
pub struct StateError(String);

type Bytes = BinBytesRecorder<FullPrecisionSettings>;

fn record_bytes<B, O>(
    optimizer: &OptimizerAdaptor<O, impl AutodiffModule<B>, B>,
) -> Result<Vec<u8>, StateError>
where
    B: AutodiffBackend,
    O: SimpleOptimizer<B::InnerBackend>,
{
    Bytes::default()
        .record(optimizer.to_record(), ())
        .map_err(|e| StateError(e.to_string()))
}

fn load_bytes<B, O, M>(
    optimizer: OptimizerAdaptor<O, M, B>,
    bytes: Vec<u8>,
    device: &B::Device,
) -> Result<OptimizerAdaptor<O, M, B>, StateError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: SimpleOptimizer<B::InnerBackend>,
{
    let record: <OptimizerAdaptor<O, M, B> as Optimizer<M, B>>::Record = Bytes::default()
        .load(bytes, device)
        .map_err(|e| StateError(e.to_string()))?;
    Ok(optimizer.load_record(record))
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> GroupOptimizer<B, M> {
    /// One optimizer step at `lr`.
    pub fn step(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        match self {
            Self::Sgd(o) => o.step(lr, module, grads),
            Self::AdamW(o) => o.step(lr, module, grads),
        }
    }

    /// The state (momenta per parameter id) as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, StateError> {
        match self {
            Self::Sgd(o) => record_bytes(o),
            Self::AdamW(o) => record_bytes(o),
        }
    }

    /// Continues from [`to_bytes`](Self::to_bytes)' state (same algorithm, same parameter ids).
    pub fn load_bytes(self, bytes: Vec<u8>, device: &B::Device) -> Result<Self, StateError> {
        Ok(match self {
            Self::Sgd(o) => Self::Sgd(load_bytes(o, bytes, device)?),
            Self::AdamW(o) => Self::AdamW(load_bytes(o, bytes, device)?),
        })
    }
}
