//! Learning-rate schedules, stepped per iteration.

use serde::{Deserialize, Serialize};

/// The learning rate at every optimiser step.
pub trait LrSchedule: Send + Sync + std::fmt::Debug {
    /// The learning rate at optimizer step `step` (from 0).
    fn lr(&self, step: u64) -> f64;
}

/// A schedule as written in the config (epochs; turned into steps by [`ScheduleConfig::build`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleConfig {
    /// Linear warm-up to `base_lr` over `warmup_epochs`, cosine annealing down to `final_lr`
    /// through the middle, then `final_lr` held for the last `final_fraction` of the run.
    ThreeStage {
        /// Peak rate.
        base_lr: f64,
        /// Warm-up length.
        warmup_epochs: f64,
        /// Share of the run held at `final_lr`.
        final_fraction: f64,
        /// The rate the cosine ends at.
        final_lr: f64,
    },
    /// insightface's `PolyScheduler`: linear warm-up, then `base_lr * (1 - t)^power` with `t` the
    /// fraction of the post-warm-up steps done.
    Poly {
        /// Peak rate.
        base_lr: f64,
        /// Warm-up length.
        warmup_epochs: f64,
        /// Exponent of the decay.
        power: f64,
    },
    /// `base_lr * gamma^k` after the k-th milestone epoch, with optional linear warm-up.
    Step {
        /// Peak rate.
        base_lr: f64,
        /// Warm-up length (0: none).
        warmup_epochs: f64,
        /// Epochs after which the rate drops.
        milestones: Vec<f64>,
        /// Factor of each drop.
        gamma: f64,
    },
}

impl Default for ScheduleConfig {
    /// The three-stage schedule: 2 warm-up epochs to 0.1 (at batch 512), cosine, the last 20% at 0.001.
    fn default() -> Self {
        Self::ThreeStage {
            base_lr: 0.1,
            warmup_epochs: 2.0,
            final_fraction: 0.2,
            final_lr: 0.001,
        }
    }
}

/// A schedule in steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    config: ScheduleConfig,
    steps_per_epoch: f64,
    total_steps: f64,
}

impl ScheduleConfig {
    /// The peak rate.
    pub fn base_lr(&self) -> f64 {
        match self {
            Self::ThreeStage { base_lr, .. }
            | Self::Poly { base_lr, .. }
            | Self::Step { base_lr, .. } => *base_lr,
        }
    }

    /// Checks the values; `Err` says which one and why.
    pub fn validate(&self) -> Result<(), String> {
        let base = self.base_lr();
        if !(base.is_finite() && base > 0.0) {
            return Err(format!("base_lr {base} must be > 0"));
        }
        let warm = match self {
            Self::ThreeStage { warmup_epochs, .. }
            | Self::Poly { warmup_epochs, .. }
            | Self::Step { warmup_epochs, .. } => *warmup_epochs,
        };
        if !(warm.is_finite() && warm >= 0.0) {
            return Err(format!("warmup_epochs {warm} must be >= 0"));
        }
        match self {
            Self::ThreeStage {
                final_fraction,
                final_lr,
                ..
            } => {
                if !(0.0..1.0).contains(final_fraction) {
                    return Err(format!("final_fraction {final_fraction} must be in [0, 1)"));
                }
                if !(*final_lr >= 0.0 && *final_lr <= base) {
                    return Err(format!("final_lr {final_lr} must be in [0, base_lr]"));
                }
            }
            Self::Poly { power, .. } if !(*power > 0.0 && power.is_finite()) => {
                return Err(format!("power {power} must be > 0"));
            }
            Self::Step {
                milestones, gamma, ..
            } => {
                if !(*gamma > 0.0 && *gamma <= 1.0) {
                    return Err(format!("gamma {gamma} must be in (0, 1]"));
                }
                if milestones.windows(2).any(|w| w[0] > w[1]) {
                    return Err("milestones must be increasing".into());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The schedule for a run of `epochs` epochs of `steps_per_epoch` optimiser steps.
    pub fn build(&self, steps_per_epoch: usize, epochs: f64) -> Schedule {
        Schedule {
            config: self.clone(),
            steps_per_epoch: steps_per_epoch.max(1) as f64,
            total_steps: (epochs * steps_per_epoch.max(1) as f64).max(1.0),
        }
    }
}

impl LrSchedule for Schedule {
    fn lr(&self, step: u64) -> f64 {
        let s = step as f64;
        let warm = |epochs: f64| epochs * self.steps_per_epoch;
        match &self.config {
            ScheduleConfig::ThreeStage {
                base_lr,
                warmup_epochs,
                final_fraction,
                final_lr,
            } => {
                let w = warm(*warmup_epochs);
                let final_start = (1.0 - final_fraction) * self.total_steps;
                if s < w {
                    base_lr * s / w
                } else if s >= final_start {
                    *final_lr
                } else {
                    let t = (s - w) / (final_start - w).max(1.0);
                    final_lr + (base_lr - final_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
                }
            }
            ScheduleConfig::Poly {
                base_lr,
                warmup_epochs,
                power,
            } => {
                let w = warm(*warmup_epochs);
                if s < w {
                    base_lr * s / w
                } else {
                    let t = ((s - w) / (self.total_steps - w).max(1.0)).min(1.0);
                    base_lr * (1.0 - t).powf(*power)
                }
            }
            ScheduleConfig::Step {
                base_lr,
                warmup_epochs,
                milestones,
                gamma,
            } => {
                let w = warm(*warmup_epochs);
                if s < w {
                    return base_lr * s / w;
                }
                let epoch = s / self.steps_per_epoch;
                let passed = milestones.iter().filter(|&&m| epoch >= m).count();
                base_lr * gamma.powi(passed as i32)
            }
        }
    }
}
