//! The loop's own settings, apart from what is trained on what: what a [`Learner`](crate::Learner)
//! needs whatever the model and data. `TrainConfig` (the TOML file) carries them too.

use serde::{Deserialize, Serialize};

use crate::mixed::Precision;
use crate::optim::OptimizerSettings;
use crate::schedule::ScheduleConfig;

/// How long and how a run trains, evaluates, stops and checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct FitSettings {
    /// Seed of shuffling, augmentation and sampling.
    pub seed: u64,
    /// Training length in epochs (fractions allowed; 0 evaluates and exports the model as it
    /// starts, e.g. a head grown by weight imprinting).
    pub epochs: f64,
    /// Stop after this many seconds of wall time per invocation; 0 = no limit.
    pub time_limit_secs: u64,
    /// Batches per optimiser step.
    pub accumulation: usize,
    /// Global L2-norm clipping of the backbone's gradients (PyTorch's `clip_grad_norm_`).
    pub clip_norm: Option<f64>,
    /// f32, or bf16 with f32 master weights.
    pub precision: Precision,
    /// Consecutive non-finite losses or gradients that stop the run.
    pub max_bad_steps: usize,
    /// Optimizer of the parameter groups.
    pub optimizer: OptimizerSettings,
    /// Learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// Evaluate every this many optimiser steps (and at the end); 0 = only at the end.
    pub eval_every_steps: u64,
    /// The flip test in verification.
    pub flip_test: bool,
    /// Warn when the top-10 singular values hold more than this share of the spectrum.
    pub collapse_warn: f64,
    /// When to stop before the end.
    pub early_stopping: EarlyStopping,
    /// How often to checkpoint and how many to keep.
    pub checkpoint: CheckpointSettings,
    /// Write a metrics line every this many steps.
    pub log_every: u64,
}

impl FitSettings {
    /// Checks every value, naming the config field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.epochs.is_finite() && self.epochs >= 0.0) {
            return Err(invalid(
                "epochs",
                self.epochs,
                "must be >= 0 (0 evaluates and exports the model as it is)",
            ));
        }
        if self.accumulation == 0 {
            return Err(invalid("accumulation", 0, "must be >= 1"));
        }
        if let Some(c) = self.clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(invalid("clip_norm", c, "must be > 0"));
            }
        }
        self.optimizer
            .validate()
            .map_err(|e| invalid("optimizer", &self.optimizer, e))?;
        if !(self.collapse_warn > 0.0 && self.collapse_warn <= 1.0) {
            return Err(invalid(
                "eval.collapse_warn",
                self.collapse_warn,
                "a share in (0, 1]",
            ));
        }
        if self.early_stopping.metric != StopMetric::Off && self.early_stopping.patience == 0 {
            return Err(invalid("early_stopping.patience", 0, "must be >= 1"));
        }
        self.schedule
            .validate()
            .map_err(|e| invalid("schedule", &self.schedule, e))
    }
}

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML does not parse.
    #[error("config: {0}")]
    Parse(String),
    /// A value out of range.
    #[error("config: {field} = {value}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: String,
        /// The range it must be in.
        reason: String,
    },
}

pub(crate) fn invalid(
    field: &'static str,
    value: impl std::fmt::Debug,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        field,
        value: format!("{value:?}"),
        reason: reason.into(),
    }
}

/// What early stopping watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMetric {
    /// Never stop early.
    Off,
    /// Verification accuracy (higher is better).
    Accuracy,
    /// The margin loss on unseen samples of the training identities (synthetic data only;
    /// lower is better).
    ValidationLoss,
}

/// Stop when the watched metric has not improved for `patience` evaluations in a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyStopping {
    /// The metric watched.
    pub metric: StopMetric,
    /// Evaluations without improvement before stopping.
    pub patience: usize,
    /// An improvement smaller than this does not count.
    pub min_delta: f64,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        Self {
            metric: StopMetric::Accuracy,
            patience: 3,
            min_delta: 0.0,
        }
    }
}

/// Resumable checkpoints under `<out>/checkpoints`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSettings {
    /// Write one every this many steps (and at every evaluation and at the end); 0 = only at
    /// evaluations and the end.
    pub every_steps: u64,
    /// Checkpoints kept besides the best.
    pub keep_last: usize,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        Self {
            every_steps: 100,
            keep_last: 2,
        }
    }
}
