//! The training loop for face recognition: any backbone, any margin head, schedules stepped per
//! iteration, global-norm clipping, gradient accumulation, a NaN guard, checkpoints, and
//! verification on held-out identities.

pub mod clip;
pub mod schedule;

pub use clip::{clip_global_norm, global_norm};
pub use schedule::{LrSchedule, Schedule, ScheduleConfig};
