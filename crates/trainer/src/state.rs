//! A run's position (everything besides tensors that a resume needs) and its checkpoints: the
//! model record, each parameter group's optimiser state, the head update's state and
//! `state.json`, written and verified by [`Checkpointer`].

use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{BestMarker, Checkpoint, CheckpointError, Checkpointer};
use crate::error::TrainError;
use crate::optim::GroupOptimizer;

/// Where a run is: everything besides the tensors that a checkpoint must restore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct TrainState {
    pub step: u64,
    /// The loader position: the next batch to read is batch `batch` of epoch `epoch`.
    pub epoch: u64,
    pub batch: usize,
    pub images: u64,
    pub elapsed_secs: f64,
    pub skipped_steps: usize,
    pub bad_in_a_row: usize,
    pub last_loss: Option<f64>,
    pub last_accuracy: Option<f64>,
    pub best_accuracy: Option<f64>,
    pub last_collapse: Option<f64>,
    /// The early-stopping metric's best value, and evaluations since it improved.
    pub best_metric: Option<f64>,
    pub evals_since_best: usize,
    /// The run reached its end (all steps, or early stopping); resuming it only rewrites the
    /// model file, plots and report. A run stopped by its time limit is not finished.
    pub finished: bool,
    pub stopped_early: bool,
    /// The evaluation hooks' last values.
    #[serde(default)]
    pub last_evals: std::collections::BTreeMap<String, f64>,
}

pub(crate) const MODEL_FILE: &str = "model.bin";
const HEAD_UPDATE_FILE: &str = "head-velocity.bin";
const STATE_FILE: &str = "state.json";

fn optim_file(group: &str) -> String {
    format!("optim-{group}.bin")
}

type Bytes = BinBytesRecorder<FullPrecisionSettings>;

/// What a checkpoint holds besides the run's position.
pub(crate) struct Snapshot<'a, B: AutodiffBackend, Mo: AutodiffModule<B>> {
    pub model: &'a Mo,
    /// Each trained group's name and optimiser.
    pub optimizers: Vec<(&'a str, &'a GroupOptimizer<B, Mo>)>,
    pub head_update: Option<Vec<u8>>,
}

/// Writes a checkpoint of `snapshot` at `state`; `best` marks it as the best so far.
pub(crate) fn write_checkpoint<B: AutodiffBackend, Mo: AutodiffModule<B>>(
    checkpoints: &Checkpointer,
    snapshot: Snapshot<'_, B, Mo>,
    state: &TrainState,
    best: Option<BestMarker>,
) -> Result<PathBuf, TrainError> {
    let model_bytes = Bytes::default()
        .record(snapshot.model.clone().into_record(), ())
        .map_err(|e| TrainError::Other(format!("model record: {e}")))?;
    let mut files = vec![
        (MODEL_FILE.to_string(), model_bytes),
        (
            STATE_FILE.to_string(),
            serde_json::to_vec_pretty(state).expect("serialisable"),
        ),
    ];
    for (name, optim) in snapshot.optimizers {
        files.push((optim_file(name), optim.to_bytes()?));
    }
    if let Some(bytes) = snapshot.head_update {
        files.push((HEAD_UPDATE_FILE.to_string(), bytes));
    }
    Ok(checkpoints.write(state.step, &files, best)?)
}

/// What a checkpoint gave back.
pub(crate) struct Restored<B: AutodiffBackend, Mo: AutodiffModule<B>> {
    pub model: Mo,
    pub optimizers: Vec<Option<GroupOptimizer<B, Mo>>>,
    pub head_update: Option<Vec<u8>>,
    pub state: TrainState,
}

/// Loads a checkpoint into the freshly built model and each named group's optimiser (`None`
/// for frozen groups, which have no state).
pub(crate) fn restore<B: AutodiffBackend, Mo: AutodiffModule<B>>(
    mut checkpoint: Checkpoint,
    model: Mo,
    optimizers: Vec<(String, Option<GroupOptimizer<B, Mo>>)>,
    device: &B::Device,
) -> Result<Restored<B, Mo>, TrainError> {
    let dir = checkpoint.dir.clone();
    let corrupt = |what: &str, e: String| {
        TrainError::Checkpoint(CheckpointError::Corrupt {
            path: dir.clone(),
            reason: format!("{what}: {e}"),
        })
    };
    let record = Bytes::default()
        .load(checkpoint.take(MODEL_FILE)?, device)
        .map_err(|e| corrupt(MODEL_FILE, e.to_string()))?;
    let mut loaded = Vec::with_capacity(optimizers.len());
    for (name, optim) in optimizers {
        loaded.push(match optim {
            Some(o) => Some(o.load_bytes(checkpoint.take(&optim_file(&name))?, device)?),
            None => None,
        });
    }
    let state = serde_json::from_slice(&checkpoint.take(STATE_FILE)?)
        .map_err(|e| corrupt(STATE_FILE, e.to_string()))?;
    Ok(Restored {
        model: model.load_record(record),
        optimizers: loaded,
        head_update: checkpoint.files.remove(HEAD_UPDATE_FILE),
        state,
    })
}
