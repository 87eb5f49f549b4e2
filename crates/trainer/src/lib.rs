//! The training loop for face recognition: any backbone, any margin head, schedules stepped per
//! iteration, global-norm clipping, gradient accumulation, a NaN guard, and verification on
//! held-out identities; `arcface train` drives it.

pub mod clip;
pub mod config;
pub mod schedule;
pub mod train;
pub mod verify;

pub use clip::{clip_global_norm, global_norm};
pub use config::{DataSource, EvalSettings, SgdSettings, TrainConfig};
pub use schedule::{LrSchedule, Schedule, ScheduleConfig};
pub use train::{train, Model, StepInfo, TrainError, TrainReport};
pub use verify::ten_fold_accuracy;
