//! The loop: batches from the loader, backbone + margin head on one or several devices, two
//! parameter groups (SGD with dampening 0, or AdamW) stepped by the schedule, global-norm
//! clipping, accumulation, a NaN guard, periodic verification with a feature-collapse check,
//! early stopping, resumable checkpoints, metrics as JSON lines, plots and the model file.
//!
//! Determinism: every random choice is a function of the seed and a position (the loader's
//! order of (seed, epoch), each sample's augmentation of (seed, epoch, index), Partial FC's
//! classes and the backend RNG of (seed, step)), so a run resumed from a checkpoint takes the
//! same path as one never interrupted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arcface_loss::{MarginFc, MarginHead, SampledSgd, SampledSgdConfig};
use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::{
    backend::AutodiffBackend, backend::Backend, ElementConversion, FloatDType, Tensor, TensorData,
};
use eval::PairSet;
use face_augment::Pipeline;
use face_data::{Batch, FaceDataset, ImageFolder, Loader, RecordDataset, SyntheticFaces};
use iresnet::{AnyBackbone, Backbone};
use serde::{Deserialize, Serialize};

use crate::{
    checkpoint::{write_atomic, BestMarker, Checkpoint, CheckpointError, Checkpointer},
    clip::{clip_global_norm, global_norm},
    config::{DataSource, EvalData, StopMetric, TrainConfig},
    mixed::{compute_copy, Precision},
    optim::GroupOptimizer,
    schedule::LrSchedule,
    verify::{verify, ValidationSet},
};

/// Why a run stopped early or could not start.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Data(#[from] face_data::DataError),
    #[error(transparent)]
    Loss(#[from] arcface_loss::LossError),
    #[error(transparent)]
    Backbone(#[from] iresnet::BackboneError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    State(#[from] crate::optim::StateError),
    #[error(transparent)]
    Eval(#[from] eval::EvalError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{count} consecutive non-finite losses or gradients at step {step}: stopping (last checkpoint: {checkpoint})")]
    Diverged {
        step: u64,
        count: usize,
        checkpoint: String,
    },
    #[error("{0}")]
    Other(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Backbone and head trained together.
#[derive(Module, Debug)]
pub struct Model<B: Backend> {
    pub backbone: AnyBackbone<B>,
    pub head: MarginFc<B>,
}

/// What the progress callback sees after every optimiser step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepInfo {
    pub step: u64,
    pub total_steps: u64,
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
    /// Global L2 norm of the backbone's gradients, before clipping.
    pub grad_norm: f64,
    pub images_per_sec: f64,
    pub elapsed_secs: f64,
    /// Set on steps that ran a verification.
    pub accuracy: Option<f64>,
    /// Share of the top-10 singular values of the evaluation embeddings (set with `accuracy`).
    pub collapse_share: Option<f64>,
    /// Margin loss on unseen samples of the training identities (early stopping on it).
    pub validation_loss: Option<f64>,
}

/// The end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub steps: u64,
    pub epochs: f64,
    pub images: u64,
    /// Images per optimiser step: loader batch x accumulation (split over the devices).
    pub effective_batch: usize,
    pub devices: usize,
    pub wall_secs: f64,
    pub final_loss: f64,
    pub final_accuracy: Option<f64>,
    pub best_accuracy: Option<f64>,
    pub collapse_share: Option<f64>,
    pub skipped_steps: usize,
    pub model: PathBuf,
    pub metrics: PathBuf,
    pub checkpoints: PathBuf,
    pub best_checkpoint: Option<PathBuf>,
    pub plots: Vec<PathBuf>,
    pub resumed_from_step: Option<u64>,
    pub stopped_by_time_limit: bool,
    pub stopped_early: bool,
}

/// Where a run is: everything besides the tensors that a checkpoint must restore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct TrainState {
    step: u64,
    /// The loader position: the next batch to read is batch `batch` of epoch `epoch`.
    epoch: u64,
    batch: usize,
    images: u64,
    elapsed_secs: f64,
    skipped_steps: usize,
    bad_in_a_row: usize,
    last_loss: Option<f64>,
    last_accuracy: Option<f64>,
    best_accuracy: Option<f64>,
    last_collapse: Option<f64>,
    /// The early-stopping metric's best value, and evaluations since it improved.
    best_metric: Option<f64>,
    evals_since_best: usize,
    /// The run reached its end (all steps, or early stopping); resuming it only rewrites the
    /// model file, plots and report. A run stopped by its time limit is not finished.
    finished: bool,
    stopped_early: bool,
}

const MODEL_FILE: &str = "model.bin";
const BACKBONE_OPTIM_FILE: &str = "optim-backbone.bin";
const HEAD_OPTIM_FILE: &str = "optim-head.bin";
const VELOCITY_FILE: &str = "head-velocity.bin";
const STATE_FILE: &str = "state.json";

type Bytes = BinBytesRecorder<FullPrecisionSettings>;

/// Trains per `config` on `devices` (one replica each; the first one holds the optimiser),
/// writing into `out`: `config.toml`, `metrics.jsonl`, `checkpoints/`, `model.arcface`, plots and
/// `report.json`. `progress` is called after every optimiser step.
pub fn train<B: AutodiffBackend>(
    config: &TrainConfig,
    out: &Path,
    devices: &[B::Device],
    mut progress: impl FnMut(&StepInfo),
) -> Result<TrainReport, TrainError> {
    config.validate()?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let checkpoints = Checkpointer::new(out, config.checkpoint.keep_last)?;
    if let Some(step) = checkpoints.steps()?.last() {
        return Err(TrainError::Other(format!(
            "{} already holds checkpoints (up to step {step}): continue that run with `arcface train --resume {}`, or choose another --out",
            out.display(),
            out.display()
        )));
    }
    write_atomic(&out.join("config.toml"), config.to_toml().as_bytes())?;
    dispatch::<B>(config, out, devices, None, &mut progress)
}

/// Continues the run in `out` from its newest intact checkpoint, with the config it was
/// started with; the loss curve is the one the run would have had without the interruption.
pub fn resume<B: AutodiffBackend>(
    out: &Path,
    devices: &[B::Device],
    mut progress: impl FnMut(&StepInfo),
) -> Result<TrainReport, TrainError> {
    let path = out.join("config.toml");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let config = TrainConfig::from_toml(&text)?;
    let checkpoints = Checkpointer::new(out, config.checkpoint.keep_last)?;
    let checkpoint = checkpoints.latest()?;
    tracing::info!("resuming {} from step {}", out.display(), checkpoint.step);
    dispatch::<B>(&config, out, devices, Some(checkpoint), &mut progress)
}

fn dispatch<B: AutodiffBackend>(
    config: &TrainConfig,
    out: &Path,
    devices: &[B::Device],
    checkpoint: Option<Checkpoint>,
    progress: &mut dyn FnMut(&StepInfo),
) -> Result<TrainReport, TrainError> {
    if devices.is_empty() {
        return Err(TrainError::Other("no device to train on".into()));
    }
    if devices.len() > 1 && config.head.sample_rate < 1.0 {
        return Err(TrainError::Other(
            "Partial FC (head.sample_rate < 1) runs on one device here; use the full head for data-parallel training".into(),
        ));
    }
    if devices.len() > config.loader.batch_size {
        return Err(TrainError::Other(format!(
            "{} devices for batches of {}: each device needs at least one image",
            devices.len(),
            config.loader.batch_size
        )));
    }
    let pipeline = Pipeline::from_config(&config.augmentation)
        .map_err(|e| TrainError::Other(e.to_string()))?;
    let mut loader_config = config.loader.clone();
    loader_config.seed = config.seed;
    let pairs = |held: Option<&SyntheticFaces>| -> Result<Option<PairSet>, TrainError> {
        match (&config.eval.data, held) {
            (EvalData::HeldOut, Some(held)) => Ok(Some(PairSet::synthetic(
                held,
                config.eval.pairs,
                config.seed,
            )?)),
            (EvalData::HeldOut, None) => Ok(None),
            (EvalData::Bin { path }, _) => Ok(Some(PairSet::bin(path)?)),
            (EvalData::Lfw { pairs, images }, _) => Ok(Some(PairSet::lfw(pairs, images)?)),
        }
    };
    let ctx = Context {
        config,
        out,
        devices,
        progress,
    };
    match &config.data {
        DataSource::Synthetic(s) => {
            let mut s = s.clone();
            s.seed = s.seed.wrapping_add(config.seed);
            let held = SyntheticFaces::held_out(s.clone())?;
            let eval = pairs(Some(&held))?;
            let validation = (config.early_stopping.metric == StopMetric::ValidationLoss)
                .then(|| ValidationSet::synthetic(&s, 256));
            let loader = Loader::new(SyntheticFaces::train(s)?, pipeline, loader_config)?;
            run::<B, _>(ctx, loader, eval, validation, checkpoint)
        }
        DataSource::Folder { path } => {
            let loader = Loader::new(ImageFolder::open(path)?, pipeline, loader_config)?;
            run::<B, _>(ctx, loader, pairs(None)?, None, checkpoint)
        }
        DataSource::Rec { path } => {
            let loader = Loader::new(RecordDataset::open(path)?, pipeline, loader_config)?;
            run::<B, _>(ctx, loader, pairs(None)?, None, checkpoint)
        }
    }
}

struct Context<'a, B: Backend> {
    config: &'a TrainConfig,
    out: &'a Path,
    devices: &'a [B::Device],
    progress: &'a mut dyn FnMut(&StepInfo),
}

/// The backend RNG's seed for a step (dropout), so a resumed run draws what the original did.
fn step_seed(seed: u64, step: u64) -> u64 {
    seed ^ step.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The optimisers of both parameter groups and, with Partial FC, the head's row-sparse SGD.
struct Optimizers<B: AutodiffBackend> {
    backbone: GroupOptimizer<B, AnyBackbone<B>>,
    head: GroupOptimizer<B, MarginFc<B>>,
    sampled: Option<SampledSgd<B::InnerBackend>>,
}

/// One replica's share of a step: loss and gradients scaled by its share of the batch.
struct ShardGrads {
    loss: f64,
    backbone: GradientsParams,
    head: GradientsParams,
}

fn run<B: AutodiffBackend, D: FaceDataset + 'static>(
    ctx: Context<'_, B>,
    loader: Loader<D>,
    eval: Option<PairSet>,
    validation: Option<ValidationSet>,
    checkpoint: Option<Checkpoint>,
) -> Result<TrainReport, TrainError> {
    let Context {
        config,
        out,
        devices,
        progress,
    } = ctx;
    let start = Instant::now();
    let device = &devices[0];
    // Burn's backend RNG is process-wide: seeding it and drawing the initial weights happen under
    // one lock, so runs started at the same time in one process (tests, sweeps) still start from
    // their seed's weights.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let (model, head_config) = {
        let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
        B::seed(device, config.seed);
        let backbone = config.backbone.init::<B>(device)?;
        let mut head_config = config.head.clone();
        head_config.num_classes = loader.dataset().num_identities();
        head_config.embedding_dim = backbone.embedding_dim();
        head_config.seed = config.seed;
        let head = head_config.init::<B>(device)?;
        let model = Model { backbone, head };
        materialize(&model);
        (model, head_config)
    };
    let settings = &config.optimizer;
    let optim = Optimizers {
        backbone: settings.init(settings.weight_decay),
        head: settings.init(settings.head_weight_decay()),
        sampled: (head_config.sample_rate < 1.0)
            .then(|| {
                SampledSgdConfig {
                    momentum: settings.momentum,
                    weight_decay: settings.head_weight_decay(),
                    nesterov: settings.nesterov,
                }
                .init()
            })
            .transpose()?,
    };

    let checkpoints = Checkpointer::new(out, config.checkpoint.keep_last)?;
    let resumed_from = checkpoint.as_ref().map(|c| c.step);
    let (mut model, mut optim, mut state) = match checkpoint {
        Some(c) => restore::<B>(c, model, optim, device)?,
        None => (model, optim, TrainState::default()),
    };

    let batches_per_epoch = loader.batches_per_epoch().max(1);
    let steps_per_epoch = (batches_per_epoch / config.accumulation).max(1);
    let total_steps = (config.epochs * steps_per_epoch as f64).ceil() as u64;
    let schedule = config.schedule.build(steps_per_epoch, config.epochs);
    let effective_batch = config.loader.batch_size * config.accumulation;
    tracing::info!(
        "{} images, {} identities; {steps_per_epoch} steps/epoch of {effective_batch} images on {} device(s); {total_steps} steps",
        loader.dataset().len(),
        loader.dataset().num_identities(),
        devices.len()
    );

    let metrics_path = out.join("metrics.jsonl");
    let mut metrics = open_metrics(&metrics_path, state.step)?;
    let mut accumulators = (GradientsAccumulator::new(), GradientsAccumulator::new());
    let (mut batch_in_step, mut loss_sum) = (0usize, 0.0);
    let mut stopped_by_time = false;
    let time_limit = (config.time_limit_secs > 0).then_some(config.time_limit_secs as f64);
    let elapsed_before = state.elapsed_secs;
    let images_before = state.images;
    let mut last_checkpoint = None;

    let epochs = match state.finished {
        true => state.epoch..state.epoch,
        false => state.epoch..u64::MAX,
    };
    'epochs: for epoch in epochs {
        let first = if epoch == state.epoch { state.batch } else { 0 };
        for (offset, batch) in loader.epoch_from(epoch, first).enumerate() {
            let batch = batch?;
            let position = (epoch, first + offset + 1);
            if batch.labels.len() < 2 * devices.len() {
                continue;
            }
            let lr = schedule.lr(state.step);
            let head_lr = lr * settings.head.lr_scale;
            B::seed(device, step_seed(config.seed, state.step));
            state.images += batch.labels.len() as u64;
            let shards = if devices.len() == 1 {
                let (shard, new_head) = single_device(
                    &model, &batch, config, state.step, &mut optim, head_lr, device,
                )?;
                if let Some(h) = new_head {
                    model.head = h;
                }
                shard
            } else {
                data_parallel(&model, &batch, devices, config, state.step)?
            };
            // A non-finite loss is caught before a backward pass is spent on it.
            if !shards.loss.is_finite() {
                if guard(
                    &mut state,
                    &format!("non-finite loss {}", shards.loss),
                    config,
                ) {
                    return Err(diverged(&model, &optim, &state, &checkpoints)?);
                }
                accumulators = (GradientsAccumulator::new(), GradientsAccumulator::new());
                (batch_in_step, loss_sum) = (0, 0.0);
                continue;
            }
            accumulators.0.accumulate(&model.backbone, shards.backbone);
            accumulators.1.accumulate(&model.head, shards.head);
            loss_sum += shards.loss;
            batch_in_step += 1;
            if batch_in_step < config.accumulation {
                continue;
            }
            batch_in_step = 0;
            let mut backbone_grads = accumulators.0.grads();
            let head_grads = accumulators.1.grads();
            // The norm is computed whether or not it clips, so the guard sees every gradient.
            let grad_norm = match config.clip_norm {
                Some(max) => clip_global_norm::<B, _>(&model.backbone, &mut backbone_grads, max),
                None => global_norm::<B, _>(&model.backbone, &backbone_grads),
            };
            if !grad_norm.is_finite() {
                if guard(
                    &mut state,
                    &format!("non-finite gradient norm {grad_norm}"),
                    config,
                ) {
                    return Err(diverged(&model, &optim, &state, &checkpoints)?);
                }
                loss_sum = 0.0;
                continue;
            }
            state.bad_in_a_row = 0;
            model.backbone = optim.backbone.step(lr, model.backbone, backbone_grads);
            model.head = optim.head.step(head_lr, model.head, head_grads);
            let loss = loss_sum / config.accumulation as f64;
            loss_sum = 0.0;
            state.step += 1;
            state.last_loss = Some(loss);
            (state.epoch, state.batch) = position;

            let session = start.elapsed().as_secs_f64();
            state.elapsed_secs = elapsed_before + session;
            // The limit is per invocation: a resumed run gets its time again.
            let out_of_time = time_limit.is_some_and(|t| session >= t);
            let mut done = state.step >= total_steps || out_of_time;
            let evaluate =
                done || (config.eval.every_steps > 0 && state.step % config.eval.every_steps == 0);
            let mut info = StepInfo {
                step: state.step,
                total_steps,
                epoch: state.step as f64 / steps_per_epoch as f64,
                loss,
                lr,
                grad_norm,
                images_per_sec: (state.images - images_before) as f64 / session.max(1e-9),
                elapsed_secs: state.elapsed_secs,
                accuracy: None,
                collapse_share: None,
                validation_loss: None,
            };
            let mut improved = false;
            if evaluate {
                let valid = model.valid();
                if let Some(set) = &eval {
                    let v = verify(set, &valid.backbone, config.eval.flip_test, device)?;
                    state.last_accuracy = Some(v.accuracy);
                    state.best_accuracy = Some(state.best_accuracy.unwrap_or(0.0).max(v.accuracy));
                    state.last_collapse = Some(v.collapse_share);
                    if v.collapse_share > config.eval.collapse_warn {
                        tracing::warn!(
                            "step {}: the top-10 singular values hold {:.0}% of the embedding spectrum (> {:.0}%): the features may be collapsing",
                            state.step,
                            100.0 * v.collapse_share,
                            100.0 * config.eval.collapse_warn
                        );
                    }
                    (info.accuracy, info.collapse_share) =
                        (Some(v.accuracy), Some(v.collapse_share));
                }
                if let Some(set) = &validation {
                    info.validation_loss =
                        Some(set.loss(&valid.backbone, &valid.head, state.step, device)?);
                }
                let watched = match config.early_stopping.metric {
                    StopMetric::Off => None,
                    StopMetric::Accuracy => info.accuracy,
                    StopMetric::ValidationLoss => info.validation_loss.map(|l| -l),
                };
                if let Some(value) = watched {
                    improved = state
                        .best_metric
                        .is_none_or(|b| value > b + config.early_stopping.min_delta);
                    if improved {
                        (state.best_metric, state.evals_since_best) = (Some(value), 0);
                    } else {
                        state.evals_since_best += 1;
                        if state.evals_since_best >= config.early_stopping.patience {
                            tracing::info!(
                                "step {}: no improvement in {} evaluations: stopping early",
                                state.step,
                                state.evals_since_best
                            );
                            state.stopped_early = !done;
                            done = true;
                        }
                    }
                }
            }
            if state.step % config.log_every.max(1) == 0 || evaluate || done {
                writeln!(
                    metrics,
                    "{}",
                    serde_json::to_string(&info).expect("serialisable")
                )
                .and_then(|_| metrics.flush())
                .map_err(io(&metrics_path))?;
            }
            if done {
                stopped_by_time = out_of_time && state.step < total_steps && !state.stopped_early;
                state.finished = !stopped_by_time;
            }
            let every = config.checkpoint.every_steps;
            if evaluate || done || (every > 0 && state.step % every == 0) {
                let best = improved.then(|| BestMarker {
                    step: state.step,
                    metric: state.best_metric.unwrap_or(f64::NAN),
                });
                last_checkpoint = Some(write_checkpoint(
                    &checkpoints,
                    &model,
                    &optim,
                    &state,
                    best,
                )?);
            }
            progress(&info);
            if done {
                break 'epochs;
            }
        }
    }
    drop(metrics);
    let model_path = save_backbone(&model, out)?;
    let plots = crate::plots::write(&metrics_path, out)?;
    let report = TrainReport {
        steps: state.step,
        epochs: state.step as f64 / steps_per_epoch as f64,
        images: state.images,
        effective_batch,
        devices: devices.len(),
        wall_secs: elapsed_before + start.elapsed().as_secs_f64(),
        final_loss: state.last_loss.unwrap_or(f64::NAN),
        final_accuracy: state.last_accuracy,
        best_accuracy: state.best_accuracy,
        collapse_share: state.last_collapse,
        skipped_steps: state.skipped_steps,
        model: model_path,
        metrics: metrics_path,
        checkpoints: checkpoints.dir().to_path_buf(),
        best_checkpoint: checkpoints
            .best()
            .map(|b| checkpoints.dir().join(format!("step-{:06}", b.step)))
            .or(last_checkpoint),
        plots,
        resumed_from_step: resumed_from,
        stopped_by_time_limit: stopped_by_time,
        stopped_early: state.stopped_early,
    };
    write_atomic(
        &out.join("report.json"),
        &serde_json::to_vec_pretty(&report).expect("serialisable"),
    )?;
    Ok(report)
}

/// Initialises every lazily initialised parameter now. Burn draws a parameter's initial value
/// at its first use, and a clone made before that draws its own: data-parallel replicas of a
/// fresh model would each start from different weights.
fn materialize<B: Backend, M: Module<B>>(module: &M) {
    struct Touch;
    impl<B: Backend> burn::module::ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

/// Forward and backward of the whole batch on one device; with Partial FC the sampled
/// centres are updated here (they are not a parameter of the graph) and the new head returned.
fn single_device<B: AutodiffBackend>(
    model: &Model<B>,
    batch: &Batch,
    config: &TrainConfig,
    step: u64,
    optim: &mut Optimizers<B>,
    head_lr: f64,
    device: &B::Device,
) -> Result<(ShardGrads, Option<MarginFc<B>>), TrainError> {
    let (x, _) = batch.to_tensors::<B>(device);
    let embeddings = embed(&model.backbone, x, config.precision);
    let out = model.head.forward(embeddings, &batch.labels, step)?;
    let loss = out.loss.clone().into_scalar().elem::<f64>();
    if !loss.is_finite() {
        return Ok((non_finite(loss), None));
    }
    let mut grads = out.loss.div_scalar(config.accumulation as f64).backward();
    let head = optim.sampled.as_mut().map(|sgd| {
        model
            .head
            .clone()
            .step_sampled(&grads, &out.sample, &out.centres, sgd, head_lr)
    });
    let shard = ShardGrads {
        loss,
        backbone: GradientsParams::from_module(&mut grads, &model.backbone),
        head: GradientsParams::from_module(&mut grads, &model.head),
    };
    Ok((shard, head))
}

fn non_finite(loss: f64) -> ShardGrads {
    ShardGrads {
        loss,
        backbone: GradientsParams::new(),
        head: GradientsParams::new(),
    }
}

/// The batch's embeddings, f32, computed in the configured precision.
fn embed<B: AutodiffBackend>(
    backbone: &AnyBackbone<B>,
    x: Tensor<B, 4>,
    precision: Precision,
) -> Tensor<B, 2> {
    match precision.compute_dtype() {
        None => backbone.embed(x),
        Some(dtype) => compute_copy(backbone, dtype)
            .embed(x.cast(dtype))
            .cast(FloatDType::F32),
    }
}

/// Data parallelism: the batch split into one contiguous shard per device, a replica of the
/// model (`fork`) on each, forward and backward on every device in its own thread, and the
/// gradients brought to the first device and summed. Each shard's loss is weighted by its share
/// of the batch, so the sum is the gradient of the whole batch's mean loss: the global batch and
/// the learning rate are the config's whatever the number of devices (BatchNorm statistics are
/// per shard, as in PyTorch's DDP without SyncBatchNorm; the running averages of all replicas
/// are merged).
fn data_parallel<B: AutodiffBackend>(
    model: &Model<B>,
    batch: &Batch,
    devices: &[B::Device],
    config: &TrainConfig,
    step: u64,
) -> Result<ShardGrads, TrainError> {
    let main = &devices[0];
    let total = batch.labels.len() as f64;
    let results: Vec<Result<ShardGrads, TrainError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = batch
            .split(devices.len())
            .into_iter()
            .zip(devices)
            .enumerate()
            .map(|(k, (shard, device))| {
                let replica = model.clone().fork(device);
                scope.spawn(move || -> Result<ShardGrads, TrainError> {
                    B::seed(device, step_seed(config.seed, step) ^ k as u64);
                    let weight = shard.labels.len() as f64 / total;
                    let (x, _) = shard.to_tensors::<B>(device);
                    let out =
                        replica
                            .head
                            .forward(replica.backbone.embed(x), &shard.labels, step)?;
                    let loss = out.loss.clone().into_scalar().elem::<f64>();
                    if !loss.is_finite() {
                        return Ok(non_finite(loss));
                    }
                    let mut grads = out
                        .loss
                        .mul_scalar(weight / config.accumulation as f64)
                        .backward();
                    Ok(ShardGrads {
                        loss: loss * weight,
                        backbone: GradientsParams::from_module(&mut grads, &replica.backbone)
                            .to_device(main, &replica.backbone),
                        head: GradientsParams::from_module(&mut grads, &replica.head)
                            .to_device(main, &replica.head),
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(TrainError::Other("a replica thread panicked".into())))
            })
            .collect()
    });
    let mut sum = ShardGrads {
        loss: 0.0,
        backbone: GradientsParams::new(),
        head: GradientsParams::new(),
    };
    let mut backbone = GradientsAccumulator::new();
    let mut head = GradientsAccumulator::new();
    for shard in results {
        let shard = shard?;
        sum.loss += shard.loss;
        backbone.accumulate(&model.backbone, shard.backbone);
        head.accumulate(&model.head, shard.head);
    }
    sum.backbone = backbone.grads();
    sum.head = head.grads();
    Ok(sum)
}

/// Records a skipped step; `true` when `max_bad_steps` came in a row and the run must stop.
fn guard(state: &mut TrainState, what: &str, config: &TrainConfig) -> bool {
    state.skipped_steps += 1;
    state.bad_in_a_row += 1;
    tracing::warn!(
        "step {}: {what}, step skipped ({} in a row)",
        state.step,
        state.bad_in_a_row
    );
    state.bad_in_a_row >= config.max_bad_steps
}

/// Checkpoints what the run has and returns the error that stops it.
fn diverged<B: AutodiffBackend>(
    model: &Model<B>,
    optim: &Optimizers<B>,
    state: &TrainState,
    checkpoints: &Checkpointer,
) -> Result<TrainError, TrainError> {
    let saved = write_checkpoint(checkpoints, model, optim, state, None)?;
    Ok(TrainError::Diverged {
        step: state.step,
        count: state.bad_in_a_row,
        checkpoint: saved.display().to_string(),
    })
}

fn write_checkpoint<B: AutodiffBackend>(
    checkpoints: &Checkpointer,
    model: &Model<B>,
    optim: &Optimizers<B>,
    state: &TrainState,
    best: Option<BestMarker>,
) -> Result<PathBuf, TrainError> {
    let model_bytes = Bytes::default()
        .record(model.clone().into_record(), ())
        .map_err(|e| TrainError::Other(format!("model record: {e}")))?;
    let mut files = vec![
        (MODEL_FILE, model_bytes),
        (BACKBONE_OPTIM_FILE, optim.backbone.to_bytes()?),
        (HEAD_OPTIM_FILE, optim.head.to_bytes()?),
        (
            STATE_FILE,
            serde_json::to_vec_pretty(state).expect("serialisable"),
        ),
    ];
    if let Some(v) = optim.sampled.as_ref().and_then(|s| s.velocity()) {
        files.push((VELOCITY_FILE, matrix_bytes(v)));
    }
    Ok(checkpoints.write(state.step, &files, best)?)
}

/// Loads a checkpoint into the freshly built model and optimisers.
fn restore<B: AutodiffBackend>(
    mut checkpoint: Checkpoint,
    model: Model<B>,
    optim: Optimizers<B>,
    device: &B::Device,
) -> Result<(Model<B>, Optimizers<B>, TrainState), TrainError> {
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
    let velocity = match checkpoint.files.remove(VELOCITY_FILE) {
        Some(bytes) => Some(
            matrix_from_bytes::<B::InnerBackend>(&bytes, device)
                .ok_or_else(|| corrupt(VELOCITY_FILE, "bad size".into()))?,
        ),
        None => None,
    };
    let optim = Optimizers {
        backbone: optim
            .backbone
            .load_bytes(checkpoint.take(BACKBONE_OPTIM_FILE)?, device)?,
        head: optim
            .head
            .load_bytes(checkpoint.take(HEAD_OPTIM_FILE)?, device)?,
        sampled: optim.sampled.map(|sgd| sgd.with_velocity(velocity)),
    };
    let state = serde_json::from_slice(&checkpoint.take(STATE_FILE)?)
        .map_err(|e| corrupt(STATE_FILE, e.to_string()))?;
    Ok((model.load_record(record), optim, state))
}

/// `[rows, cols]` as two little-endian u64 and the f32 values.
fn matrix_bytes<B: Backend>(m: &Tensor<B, 2>) -> Vec<u8> {
    let [rows, cols] = m.dims();
    let values = m
        .to_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 matrix");
    let mut bytes = Vec::with_capacity(16 + 4 * values.len());
    bytes.extend((rows as u64).to_le_bytes());
    bytes.extend((cols as u64).to_le_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    bytes
}

fn matrix_from_bytes<B: Backend>(bytes: &[u8], device: &B::Device) -> Option<Tensor<B, 2>> {
    let rows = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let cols = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?) as usize;
    let body = bytes.get(16..)?;
    if body.len() != rows.checked_mul(cols)?.checked_mul(4)? {
        return None;
    }
    let values: Vec<f32> = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    Some(Tensor::from_data(
        TensorData::new(values, [rows, cols]),
        device,
    ))
}

/// The metrics file, continued after `step` on resume (lines past it are from work the
/// checkpoint does not hold, and are dropped).
fn open_metrics(path: &Path, step: u64) -> Result<std::io::BufWriter<std::fs::File>, TrainError> {
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
    Ok(std::io::BufWriter::new(file))
}

/// The backbone as an arcface-rs model file (atomic write, verified on load).
fn save_backbone<B: AutodiffBackend>(model: &Model<B>, out: &Path) -> Result<PathBuf, TrainError> {
    let path = out.join("model.arcface");
    iresnet::record::save_model(
        &model.backbone.valid(),
        &path,
        iresnet::record::Precision::F32,
        "arcface train",
    )?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{ModuleVisitor, Param};

    type Ad = burn::backend::Autodiff<burn::backend::Flex>;

    /// Largest |a - b| over the module's gradients, and the largest |a|.
    struct MaxDiff<'a> {
        a: &'a GradientsParams,
        b: &'a GradientsParams,
        diff: f32,
        scale: f32,
        count: usize,
    }

    impl ModuleVisitor<Ad> for MaxDiff<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
            type Inner = burn::backend::Flex;
            if let (Some(a), Some(b)) = (
                self.a.get::<Inner, D>(param.id),
                self.b.get::<Inner, D>(param.id),
            ) {
                let abs = |t: Tensor<Inner, D>| t.abs().max().into_scalar().elem::<f32>();
                self.diff = self.diff.max(abs(a.clone() - b));
                self.scale = self.scale.max(abs(a));
                self.count += 1;
            }
        }
    }

    #[test]
    fn data_parallel_gradient_is_the_mean_of_the_shards() {
        let config = TrainConfig {
            backbone: iresnet::BackboneConfig::IResNet(
                iresnet::IResNetConfig::new([1, 1, 1, 1])
                    .with_widths([4, 8, 8, 16])
                    .with_embedding_dim(16),
            ),
            ..Default::default()
        };
        let device = Default::default();
        let mut head = config.head.clone();
        (head.num_classes, head.embedding_dim) = (5, 16);
        let model = Model::<Ad> {
            backbone: config.backbone.init(&device).unwrap(),
            head: head.init(&device).unwrap(),
        };
        materialize(&model);
        let n = 8;
        let plane = 3 * 112 * 112;
        let batch = Batch {
            images: (0..n * plane)
                .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
                .collect(),
            shape: [n, 3, 112, 112],
            labels: vec![0, 1, 2, 3, 4, 0, 1, 2],
            indices: (0..n).collect(),
            skipped: vec![],
        };
        let mut optim = Optimizers::<Ad> {
            backbone: config.optimizer.init(0.0),
            head: config.optimizer.init(0.0),
            sampled: None,
        };
        let dp = data_parallel(&model, &batch, &[device, device], &config, 0).unwrap();
        let mut sum = (GradientsAccumulator::new(), GradientsAccumulator::new());
        let mut loss = 0.0;
        for shard in batch.split(2) {
            let (g, _) =
                single_device(&model, &shard, &config, 0, &mut optim, 0.1, &device).unwrap();
            loss += g.loss / 2.0;
            sum.0.accumulate(&model.backbone, g.backbone);
            sum.1.accumulate(&model.head, g.head);
        }
        assert!(
            (dp.loss - loss).abs() < 1e-6 * loss.abs(),
            "{} vs {loss}",
            dp.loss
        );
        // DP weights each shard's loss by 4/8: twice the DP gradient is the shards' sum.
        let (shards_backbone, shards_head) = (sum.0.grads(), sum.1.grads());
        let dp_backbone = scaled::<Ad, _>(&model.backbone, dp.backbone, 2.0);
        let dp_head = scaled::<Ad, _>(&model.head, dp.head, 2.0);
        let backbone = max_diff(&model.backbone, &dp_backbone, &shards_backbone);
        let head = max_diff(&model.head, &dp_head, &shards_head);
        for (v, name) in [(&backbone, "backbone"), (&head, "head")] {
            assert!(
                v.diff <= 1e-5 * v.scale,
                "{name}: max diff {} of {}",
                v.diff,
                v.scale
            );
        }
        assert!(
            backbone.count > 10,
            "{} backbone gradients compared",
            backbone.count
        );
        let v = head;
        assert_eq!(v.count, 1, "the head's centres");
        assert!(
            v.diff <= 1e-5 * v.scale,
            "head: max diff {} of {}",
            v.diff,
            v.scale
        );
    }

    fn max_diff<'a, M: Module<Ad>>(
        module: &M,
        a: &'a GradientsParams,
        b: &'a GradientsParams,
    ) -> MaxDiff<'a> {
        let mut v = MaxDiff {
            a,
            b,
            diff: 0.0,
            scale: 0.0,
            count: 0,
        };
        module.visit(&mut v);
        v
    }

    /// `grads` times `factor`, for `module`'s parameters.
    fn scaled<B: AutodiffBackend, M: AutodiffModule<B>>(
        module: &M,
        grads: GradientsParams,
        factor: f64,
    ) -> GradientsParams {
        struct Scale<'a> {
            grads: &'a mut GradientsParams,
            factor: f64,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                    self.grads
                        .register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.factor));
                }
            }
        }
        let mut grads = grads;
        module.visit(&mut Scale {
            grads: &mut grads,
            factor,
        });
        grads
    }
}
