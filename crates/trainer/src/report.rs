//! The end of a run: plots from the metrics and `report.json`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checkpoint::{write_atomic, Checkpointer};
use crate::error::TrainError;
use crate::state::TrainState;

/// The end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// Optimizer steps taken.
    pub steps: u64,
    /// Epochs done.
    pub epochs: f64,
    /// Images seen.
    pub images: u64,
    /// Images per optimiser step: loader batch x accumulation (split over the devices).
    pub effective_batch: usize,
    /// Devices the batch was split over.
    pub devices: usize,
    /// Wall time.
    pub wall_secs: f64,
    /// The last step's loss.
    pub final_loss: f64,
    /// The last verification's accuracy.
    pub final_accuracy: Option<f64>,
    /// The best verification accuracy.
    pub best_accuracy: Option<f64>,
    /// Share of the spectrum the top-10 singular values held at the last evaluation.
    pub collapse_share: Option<f64>,
    /// Steps skipped for non-finite losses or gradients.
    pub skipped_steps: usize,
    /// The exported model file (none when the run was given no exporter).
    pub model: Option<PathBuf>,
    /// `metrics.jsonl`.
    pub metrics: PathBuf,
    /// The checkpoint folder.
    pub checkpoints: PathBuf,
    /// The best checkpoint, by the early-stopping metric.
    pub best_checkpoint: Option<PathBuf>,
    /// The PNG plots written.
    pub plots: Vec<PathBuf>,
    /// The step a resumed run started from.
    pub resumed_from_step: Option<u64>,
    /// Whether the time limit ended the run.
    pub stopped_by_time_limit: bool,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// The evaluation hooks' values at the last evaluation (continual learning's old- and
    /// new-identity accuracies).
    pub evals: std::collections::BTreeMap<String, f64>,
}

/// What the loop knows at its end besides the run's state.
#[derive(Debug, Default)]
pub(crate) struct RunSummary {
    pub steps_per_epoch: u64,
    pub effective_batch: usize,
    pub devices: usize,
    pub metrics: PathBuf,
    pub resumed_from: Option<u64>,
    pub wall_secs: f64,
    pub stopped_by_time: bool,
    pub last_checkpoint: Option<PathBuf>,
}

/// Draws the plots and writes `report.json` into `out`.
pub(crate) fn finish(
    summary: RunSummary,
    state: &TrainState,
    model: Option<PathBuf>,
    checkpoints: &Checkpointer,
    out: &Path,
) -> Result<TrainReport, TrainError> {
    let plots = crate::plots::write(&summary.metrics, out)?;
    let report = TrainReport {
        steps: state.step,
        epochs: state.step as f64 / summary.steps_per_epoch.max(1) as f64,
        images: state.images,
        effective_batch: summary.effective_batch,
        devices: summary.devices,
        wall_secs: summary.wall_secs,
        final_loss: state.last_loss.unwrap_or(f64::NAN),
        final_accuracy: state.last_accuracy,
        best_accuracy: state.best_accuracy,
        collapse_share: state.last_collapse,
        skipped_steps: state.skipped_steps,
        model,
        metrics: summary.metrics,
        checkpoints: checkpoints.dir().to_path_buf(),
        best_checkpoint: checkpoints
            .best()
            .map(|b| checkpoints.dir().join(format!("step-{:06}", b.step)))
            .or(summary.last_checkpoint),
        plots,
        resumed_from_step: summary.resumed_from,
        stopped_by_time_limit: summary.stopped_by_time,
        stopped_early: state.stopped_early,
        evals: state.last_evals.clone(),
    };
    write_atomic(
        &out.join("report.json"),
        &serde_json::to_vec_pretty(&report).expect("serialisable"),
    )?;
    Ok(report)
}
