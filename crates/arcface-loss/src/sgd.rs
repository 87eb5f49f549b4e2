//! SGD that updates only the class centres a Partial FC step sampled.
//!
//! With Burn's (or PyTorch's) optimiser, weight decay and momentum also move the centres a step
//! did not score, so a class's centre drifts while it is absent. Partial FC's intent is that only
//! sampled centres change; [`SampledSgd`] does that, with PyTorch's SGD rule (dampening 0) on the
//! selected rows. Use Burn's optimiser for the backbone and this one for the head.

use burn::tensor::{
    backend::{AutodiffBackend, Backend},
    IndexingUpdateOp, Tensor,
};
use serde::{Deserialize, Serialize};

use crate::{
    error::{invalid, LossError},
    head::{index_tensor, MarginFc},
    sampling::ClassSample,
};

/// PyTorch SGD's hyper-parameters for the head (dampening is always 0, as PyTorch's default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampledSgdConfig {
    /// Momentum (PyTorch's; insightface: 0.9).
    pub momentum: f64,
    /// L2 weight decay added to the gradient (insightface: 5e-4).
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl Default for SampledSgdConfig {
    /// insightface's head settings: momentum 0.9, weight decay 5e-4.
    fn default() -> Self {
        Self {
            momentum: 0.9,
            weight_decay: 5e-4,
            nesterov: false,
        }
    }
}

impl SampledSgdConfig {
    /// The optimizer, after checking the ranges.
    pub fn init<B: Backend>(&self) -> Result<SampledSgd<B>, LossError> {
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(invalid("momentum", self.momentum, "must be in [0, 1)"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(invalid("weight_decay", self.weight_decay, "must be >= 0"));
        }
        Ok(SampledSgd {
            config: *self,
            velocity: None,
        })
    }
}

/// Row-sparse SGD state: one velocity row per class centre, touched only when sampled.
#[derive(Debug, Clone)]
pub struct SampledSgd<B: Backend> {
    config: SampledSgdConfig,
    velocity: Option<Tensor<B, 2>>,
}

impl<B: Backend> SampledSgd<B> {
    /// The velocity (`[K, D]`, `None` before the first step), for checkpoints.
    pub fn velocity(&self) -> Option<&Tensor<B, 2>> {
        self.velocity.as_ref()
    }

    /// Continues from a checkpoint's velocity.
    pub fn with_velocity(mut self, velocity: Option<Tensor<B, 2>>) -> Self {
        self.velocity = velocity;
        self
    }

    /// One update of `weights` (`[K, D]`) restricted to `rows` (all rows when `None`), from the
    /// gradient of those rows (`[rows, D]`, or `[K, D]` for all). Returns the new weights; other
    /// rows are returned unchanged.
    ///
    /// Per row: `g = grad + wd * w; v = mu * v + g; w -= lr * (nesterov ? g + mu * v : v)`,
    /// which is PyTorch's SGD with dampening 0 (a zero initial velocity gives its first step).
    pub fn step(
        &mut self,
        weights: Tensor<B, 2>,
        grad: Tensor<B, 2>,
        rows: Option<&[usize]>,
        lr: f64,
    ) -> Tensor<B, 2> {
        let SampledSgdConfig {
            momentum,
            weight_decay,
            nesterov,
        } = self.config;
        let velocity = self.velocity.take().unwrap_or_else(|| weights.zeros_like());
        let index = rows.map(|r| index_tensor::<B>(r, &weights.device()));
        let pick = |t: &Tensor<B, 2>| match &index {
            Some(i) => t.clone().select(0, i.clone()),
            None => t.clone(),
        };
        // Rows change by adding a delta (Burn 0.21's select_assign only adds); untouched rows
        // are not rewritten.
        let add = |t: Tensor<B, 2>, delta: Tensor<B, 2>| match &index {
            Some(i) => t.select_assign(0, i.clone(), delta, IndexingUpdateOp::Add),
            None => t + delta,
        };

        let w = pick(&weights);
        let mut g = grad;
        if weight_decay > 0.0 {
            g = g + w.mul_scalar(weight_decay);
        }
        let v_old = pick(&velocity);
        let v = v_old.clone().mul_scalar(momentum) + g.clone();
        let update = if nesterov {
            g + v.clone().mul_scalar(momentum)
        } else {
            v.clone()
        };
        self.velocity = Some(add(velocity, v - v_old));
        add(weights, update.mul_scalar(-lr))
    }
}

impl<B: AutodiffBackend> MarginFc<B> {
    /// Applies one [`SampledSgd`] step to the centres from `grads` (the result of
    /// `loss.backward()`), touching only the classes that batch scored. `sample` and `centres`
    /// are the batch's [`HeadOutput`](crate::HeadOutput) fields of those names.
    pub fn step_sampled(
        mut self,
        grads: &B::Gradients,
        sample: &ClassSample,
        centres: &Tensor<B, 2>,
        optimiser: &mut SampledSgd<B::InnerBackend>,
        lr: f64,
    ) -> Self {
        let weights = self.centres.val();
        let grad = match &sample.classes {
            Some(_) => centres.grad(grads),
            None => weights.grad(grads),
        };
        let Some(grad) = grad else {
            return self;
        };
        let updated = optimiser.step(weights.inner(), grad, sample.classes.as_deref(), lr);
        self.centres = self
            .centres
            .map(|_| Tensor::from_inner(updated).require_grad());
        self
    }
}
