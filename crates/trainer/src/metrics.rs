//! `metrics.jsonl`: one JSON line per logged step, continued across resumes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::error::{io, TrainError};

/// What the progress callback sees after every optimiser step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepInfo {
    /// The optimizer step, from 1.
    pub step: u64,
    /// Steps the run will take.
    pub total_steps: u64,
    /// Epochs done.
    pub epoch: f64,
    /// The loss the backward pass saw: margin loss plus any extra terms.
    pub loss: f64,
    /// The step's learning rate.
    pub lr: f64,
    /// Global L2 norm of the backbone's gradients, before clipping.
    pub grad_norm: f64,
    /// Training throughput.
    pub images_per_sec: f64,
    /// Seconds since the run (or its resume) began.
    pub elapsed_secs: f64,
    /// Set on steps that ran a verification.
    pub accuracy: Option<f64>,
    /// Share of the top-10 singular values of the evaluation embeddings (set with `accuracy`).
    pub collapse_share: Option<f64>,
    /// Margin loss on unseen samples of the training identities (early stopping on it).
    pub validation_loss: Option<f64>,
    /// The extra loss terms' values by name (absent when the run has none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub terms: BTreeMap<String, f64>,
    /// The evaluation hooks' values by name, on steps that evaluated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evals: BTreeMap<String, f64>,
}

/// The open metrics file.
pub(crate) struct MetricsLog {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl MetricsLog {
    /// `path`, continued after `step` on resume (lines past it are from work the checkpoint
    /// does not hold, and are dropped).
    pub fn open(path: &Path, step: u64) -> Result<Self, TrainError> {
        let kept = if step == 0 {
            String::new()
        } else {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter(|line| {
                    serde_json::from_str::<StepInfo>(line).is_ok_and(|info| info.step <= step)
                })
                .map(|line| format!("{line}\n"))
                .collect()
        };
        write_atomic(path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
        })
    }

    /// Appends one line and flushes it.
    pub fn write(&mut self, info: &StepInfo) -> Result<(), TrainError> {
        let line = serde_json::to_string(info).expect("serialisable");
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(io(&self.path))
    }
}

/// Every step in a metrics file (lines that do not parse are skipped).
pub fn read_metrics(path: &Path) -> Result<Vec<StepInfo>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}
