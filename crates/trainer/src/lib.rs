//! The training loop for face recognition: any backbone, any margin head, on one or several
//! devices; schedules stepped per iteration, global-norm clipping, gradient accumulation, a NaN
//! guard, verification with a feature-collapse check, early stopping, and resumable checkpoints;
//! `arcface train` drives it.

pub mod checkpoint;
pub mod clip;
pub mod collapse;
pub mod config;
pub mod mixed;
pub mod optim;
pub mod plots;
pub mod schedule;
pub mod train;
pub mod verify;

pub use checkpoint::{CheckpointError, Checkpointer};
pub use clip::{clip_global_norm, global_norm};
pub use collapse::top_singular_share;
pub use config::{
    CheckpointSettings, DataSource, EarlyStopping, EvalData, EvalSettings, StopMetric, TrainConfig,
};
pub use mixed::Precision;
pub use optim::{Algorithm, HeadGroup, OptimizerSettings};
pub use schedule::{LrSchedule, Schedule, ScheduleConfig};
pub use train::{resume, train, Model, StepInfo, TrainError, TrainReport};
pub use verify::Verification;
