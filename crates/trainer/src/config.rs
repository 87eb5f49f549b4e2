//! The training configuration, read from TOML with every choice spelled out.

use arcface_loss::MarginFcConfig;
use face_augment::PipelineConfig;
use face_data::{LoaderConfig, SyntheticConfig};
use iresnet::{BackboneConfig, IResNetConfig};
use serde::{Deserialize, Serialize};

use crate::optim::{Algorithm, OptimizerSettings};
use crate::schedule::ScheduleConfig;
use crate::settings::{
    invalid, CheckpointSettings, ConfigError, EarlyStopping, FitSettings, StopMetric,
};

/// Where the training images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSource {
    /// The built-in synthetic identities; verification uses its held-out identities.
    Synthetic(SyntheticConfig),
    /// An identity-per-folder image tree.
    Folder {
        /// The root folder.
        path: std::path::PathBuf,
    },
    /// An insightface `train.rec` (+ `.idx`).
    Rec {
        /// The `.rec` file.
        path: std::path::PathBuf,
    },
}

/// The pairs verified during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EvalData {
    /// Pairs of the synthetic data's held-out identities (only with synthetic training data).
    HeldOut,
    /// An insightface verification `.bin` (`lfw.bin`, `cfp_fp.bin`, ...) of aligned 112x112 faces.
    Bin {
        /// The `.bin` file.
        path: std::path::PathBuf,
    },
    /// LFW's `pairs.txt` over a folder `name/name_0001.jpg` of aligned 112x112 faces (what
    /// `arcface align` writes); its ten folds are the file's.
    Lfw {
        /// LFW's `pairs.txt`.
        pairs: std::path::PathBuf,
        /// The folder of aligned faces.
        images: std::path::PathBuf,
    },
}

/// Verification during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSettings {
    /// Evaluate every this many optimiser steps (and at the end); 0 = only at the end.
    pub every_steps: u64,
    /// Matched pairs drawn from the held-out synthetic identities (as many mismatched).
    pub pairs: usize,
    /// Embed each face and its mirror image and add them, as insightface's verification does.
    pub flip_test: bool,
    /// Which pairs are verified.
    pub data: EvalData,
    /// Warn when the top-10 singular values hold more than this share of the spectrum of the
    /// evaluation embeddings (feature collapse).
    pub collapse_warn: f64,
}

impl Default for EvalSettings {
    fn default() -> Self {
        Self {
            every_steps: 200,
            pairs: 300,
            flip_test: true,
            data: EvalData::HeldOut,
            collapse_warn: 0.7,
        }
    }
}

/// Everything a run needs; `arcface train --print-default-config` writes the default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Seed of initialization, shuffling and augmentation.
    pub seed: u64,
    /// Training length in epochs (fractions allowed; 0 evaluates and exports the starting model,
    /// e.g. a continual round's imprinted head).
    pub epochs: f64,
    /// Stop after this many seconds of wall time, evaluating and checkpointing as at the end; 0 =
    /// no limit. Per invocation: `--resume` continues such a run with the time again. (A number
    /// rather than an optional so that "none" survives a TOML round trip.)
    pub time_limit_secs: u64,
    /// Batches per optimiser step; the effective batch is `loader.batch_size * accumulation`.
    pub accumulation: usize,
    /// Global L2-norm clipping of the backbone's gradients (PyTorch's `clip_grad_norm_`).
    pub clip_norm: Option<f64>,
    /// What the backbone computes in: `f32`, or `bf16` with f32 master weights (see
    /// `trainer::mixed`); verification always runs in f32.
    pub precision: crate::mixed::Precision,
    /// Consecutive non-finite losses or gradients that stop the run (each one skips its step).
    pub max_bad_steps: usize,
    /// The backbone to train.
    pub backbone: BackboneConfig,
    /// The head; `num_classes` and `embedding_dim` are filled in from the data and backbone.
    pub head: MarginFcConfig,
    /// Optimizer of both parameter groups.
    pub optimizer: OptimizerSettings,
    /// Learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// Training data.
    pub data: DataSource,
    /// Augmentation of each training image.
    pub augmentation: PipelineConfig,
    /// Batching, workers and sampling.
    pub loader: LoaderConfig,
    /// Verification during training.
    pub eval: EvalSettings,
    /// When to stop before the end.
    pub early_stopping: EarlyStopping,
    /// How often to checkpoint and how many to keep.
    pub checkpoint: CheckpointSettings,
    /// Write a metrics line every this many steps.
    pub log_every: u64,
    /// Knowledge distillation from a teacher (`[distill]`; absent: none).
    pub distill: Option<distill::DistillConfig>,
    /// Continual learning: continue a trained run on this config's data, its new identities
    /// added to the head (`[continual]`; absent: a run of its own).
    pub continual: Option<crate::continual::ContinualConfig>,
}

impl Default for TrainConfig {
    /// The main command's run: a small IResNet on the synthetic identities, sized for a 2-core
    /// CPU (see docs/performance.md for what it reaches and how long it takes).
    fn default() -> Self {
        let backbone = BackboneConfig::IResNet(
            IResNetConfig::new([1, 1, 1, 1])
                .with_widths([8, 16, 32, 64])
                .with_embedding_dim(128),
        );
        Self {
            seed: 0,
            epochs: 2.2,
            time_limit_secs: 570,
            accumulation: 1,
            clip_norm: Some(5.0),
            precision: crate::mixed::Precision::F32,
            max_bad_steps: 5,
            backbone,
            // `num_classes` and `embedding_dim` are taken from the data and the backbone at run
            // time; the defaults say what they will be, so the printed config agrees with itself.
            head: MarginFcConfig {
                num_classes: 500,
                embedding_dim: 128,
                margin: arcface_loss::CosFace {
                    scale: 32.0,
                    margin: 0.3,
                }
                .into(),
                ..MarginFcConfig::default()
            },
            optimizer: OptimizerSettings::default(),
            schedule: ScheduleConfig::ThreeStage {
                base_lr: 0.1,
                warmup_epochs: 0.3,
                final_fraction: 0.15,
                final_lr: 0.001,
            },
            data: DataSource::Synthetic(SyntheticConfig {
                identities: 500,
                per_identity: 24,
                held_out: 200,
                ..SyntheticConfig::default()
            }),
            augmentation: PipelineConfig::insightface_minimal(),
            loader: LoaderConfig {
                batch_size: 64,
                ..LoaderConfig::default()
            },
            eval: EvalSettings::default(),
            early_stopping: EarlyStopping::default(),
            checkpoint: CheckpointSettings::default(),
            log_every: 10,
            distill: None,
            continual: None,
        }
    }
}

impl TrainConfig {
    /// Parses TOML, rejecting unknown keys, then checks every value.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The config as TOML (what `config.toml` in a run folder holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config serialises")
    }

    /// The loop's settings (everything but the model, the data and the evaluation pairs).
    pub fn fit_settings(&self) -> FitSettings {
        FitSettings {
            seed: self.seed,
            epochs: self.epochs,
            time_limit_secs: self.time_limit_secs,
            accumulation: self.accumulation,
            clip_norm: self.clip_norm,
            precision: self.precision,
            max_bad_steps: self.max_bad_steps,
            optimizer: self.optimizer.clone(),
            schedule: self.schedule.clone(),
            eval_every_steps: self.eval.every_steps,
            flip_test: self.eval.flip_test,
            collapse_warn: self.eval.collapse_warn,
            early_stopping: self.early_stopping.clone(),
            checkpoint: self.checkpoint.clone(),
            log_every: self.log_every,
        }
    }

    /// Checks every value, naming the config field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.fit_settings().validate()?;
        // Verification, model files and the tools after training read RGB: multimodal models
        // train through `arcface multimodal` (trainer::multimodal).
        if self.loader.modalities != [face_data::Modality::Rgb] {
            return Err(invalid(
                "loader.modalities",
                format!("{:?}", self.loader.modalities),
                "arcface train trains RGB models; multimodal ones train with `arcface multimodal` (docs/multimodal.md)",
            ));
        }
        if self.backbone.in_channels() != 3 {
            return Err(invalid(
                "backbone.in_channels",
                self.backbone.in_channels(),
                "arcface train trains RGB models (3 planes); multimodal ones train with `arcface multimodal` (docs/multimodal.md)",
            ));
        }
        if let Some(d) = &self.distill {
            d.validate()
                .map_err(|reason| invalid("distill", &d.teacher, reason))?;
        }
        if let Some(c) = &self.continual {
            c.validate()
                .map_err(|reason| invalid("continual", c.from.display(), reason))?;
            if self.distill.is_some() {
                return Err(invalid(
                    "distill",
                    "set",
                    "a continual round distils from its old run: use [continual.distill]",
                ));
            }
        }
        if self.accumulation > 1 && self.head.sample_rate < 1.0 {
            return Err(invalid(
                "accumulation",
                self.accumulation,
                "Partial FC (head.sample_rate < 1) updates sampled rows every batch; accumulate only with the full head",
            ));
        }
        if self.head.sample_rate < 1.0 && self.optimizer.algorithm != Algorithm::Sgd {
            return Err(invalid(
                "optimizer.algorithm",
                self.optimizer.algorithm,
                "Partial FC (head.sample_rate < 1) updates its sampled centres with SGD; use sgd or the full head",
            ));
        }
        let synthetic = matches!(self.data, DataSource::Synthetic(_));
        if !synthetic
            && self.eval.data == EvalData::HeldOut
            && self.early_stopping.metric == StopMetric::Accuracy
        {
            // Without held-out identities there is nothing to verify on: early stopping on
            // accuracy would never see a number.
            return Err(invalid(
                "early_stopping.metric",
                "accuracy",
                "needs verification pairs: set eval.data to a .bin or LFW pairs, or early_stopping.metric = \"off\"",
            ));
        }
        if !synthetic && self.early_stopping.metric == StopMetric::ValidationLoss {
            return Err(invalid(
                "early_stopping.metric",
                "validation_loss",
                "validation samples are rendered for synthetic data only",
            ));
        }
        self.backbone
            .validate()
            .map_err(|e| invalid("backbone", &self.backbone, e.to_string()))?;
        if self.loader.batch_size < 2 {
            return Err(invalid(
                "loader.batch_size",
                self.loader.batch_size,
                "need at least 2 for BatchNorm",
            ));
        }
        if self.eval.pairs < 10 {
            return Err(invalid(
                "eval.pairs",
                self.eval.pairs,
                "need at least 10 for 10-fold accuracy",
            ));
        }
        if let DataSource::Synthetic(s) = &self.data {
            s.validate()
                .map_err(|e| invalid("data", s, e.to_string()))?;
        }
        face_augment::Pipeline::from_config(&self.augmentation)
            .map_err(|e| invalid("augmentation", "", e.to_string()))?;
        let mut head = self.head.clone();
        head.num_classes = head.num_classes.max(2);
        head.validate()
            .map_err(|e| invalid("head", &self.head, e.to_string()))?;
        Ok(())
    }
}

impl Default for FitSettings {
    /// The built-in run's.
    fn default() -> Self {
        TrainConfig::default().fit_settings()
    }
}
