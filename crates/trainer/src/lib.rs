//! Training face recognisers: any backbone, any margin head, any dataset, on any Burn autodiff
//! backend and one or several devices, on one machine or several ([`Collective`]); schedules
//! stepped per iteration, global-norm clipping, gradient accumulation, a NaN guard, verification
//! with a feature-collapse check, early stopping, resumable checkpoints.
//!
//! Two ways in: [`Learner`], the library API (bring your own [`iresnet::Backbone`],
//! [`arcface_loss::MarginHead`] and [`face_data::FaceDataset`]; add [`LossTerm`]s, parameter
//! groups, a [`HeadUpdate`]), and [`train`]/[`resume`]/[`train_nodes`], which run what a
//! [`TrainConfig`] (the TOML file of `arcface train`) describes through it.

pub mod checkpoint;
pub mod clip;
pub mod collapse;
pub mod collective;
pub mod config;
pub mod continual;
pub mod distill;
mod error;
mod groups;
mod hooks;
mod learner;
mod metrics;
pub mod mixed;
mod model;
pub mod multimodal;
pub mod optim;
pub mod plots;
mod report;
mod run;
pub mod schedule;
mod settings;
pub mod source;
mod state;
mod step;
mod stopping;
mod sync;
pub mod verify;

pub use checkpoint::{CheckpointError, Checkpointer};
pub use clip::{clip_global_norm, global_norm};
pub use collapse::top_singular_share;
pub use collective::{ClusterConfig, Collective, RingCollective};
pub use config::{DataSource, EvalData, EvalSettings, TrainConfig};
pub use error::TrainError;
pub use groups::ParamGroup;
pub use hooks::{EvalHook, HeadUpdate, LossTerm, StepView};
pub use learner::{Export, Learner, Trained};
pub use metrics::{read_metrics, StepInfo};
pub use mixed::Precision;
pub use model::{materialize, Model};
pub use optim::{Algorithm, HeadGroup, OptimizerSettings};
pub use report::TrainReport;
pub use run::{resume, train, train_nodes};
pub use schedule::{LrSchedule, Schedule, ScheduleConfig};
pub use settings::{CheckpointSettings, ConfigError, EarlyStopping, FitSettings, StopMetric};
pub use source::{load_run, SavedRun};
pub use verify::{ValidationSet, Verification};
