//! The loop: batches from the loader, backbone + margin head, SGD (dampening 0) with the
//! schedule, global-norm clipping, accumulation, a NaN guard, periodic verification on held-out
//! identities, metrics as JSON lines, and the trained model file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arcface_loss::{MarginFc, MarginHead, SampledSgd, SampledSgdConfig};
use burn::module::{AutodiffModule, Module};
use burn::optim::{
    decay::WeightDecayConfig, momentum::MomentumConfig, GradientsAccumulator, GradientsParams,
    Optimizer, SgdConfig,
};
use burn::tensor::{backend::AutodiffBackend, backend::Backend};
use face_augment::Pipeline;
use face_data::{
    verification_pair_indices, FaceDataset, ImageFolder, Loader, RecordDataset, SyntheticFaces,
};
use iresnet::{AnyBackbone, Backbone};
use serde::Serialize;

use crate::{
    clip::{clip_global_norm, global_norm},
    config::{DataSource, TrainConfig},
    schedule::LrSchedule,
    verify::ten_fold_accuracy,
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
#[derive(Debug, Clone, Serialize)]
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
}

/// The end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub steps: u64,
    pub epochs: f64,
    pub images: u64,
    pub effective_batch: usize,
    pub wall_secs: f64,
    pub final_loss: f64,
    pub final_accuracy: f64,
    pub best_accuracy: f64,
    pub skipped_steps: usize,
    pub model: PathBuf,
    pub metrics: PathBuf,
    pub stopped_by_time_limit: bool,
}

/// The faces of the verification pairs, rendered once, and whether each pair is one person.
struct EvalSet {
    faces: Vec<image::RgbImage>,
    issame: Vec<bool>,
}

/// Pairs of held-out synthetic identities, taken from the split directly (no encode/decode).
fn eval_set(held: &SyntheticFaces, pairs: usize, seed: u64) -> Result<EvalSet, TrainError> {
    let mut set = EvalSet {
        faces: Vec::with_capacity(4 * pairs),
        issame: Vec::with_capacity(2 * pairs),
    };
    for (a, b, same) in verification_pair_indices(held, pairs, seed)? {
        set.faces.push(held.get(a)?.image);
        set.faces.push(held.get(b)?.image);
        set.issame.push(same);
    }
    Ok(set)
}

/// Embeds all faces (and their mirror images, with flip test) with the inference-mode backbone,
/// L2-normalises, and returns the 10-fold verification accuracy.
fn verify<B: Backend>(
    backbone: &AnyBackbone<B>,
    set: &EvalSet,
    flip: bool,
    device: &B::Device,
) -> Result<f64, TrainError> {
    let mut embeddings: Vec<Vec<f32>> = Vec::with_capacity(set.faces.len());
    for chunk in set.faces.chunks(64) {
        let bytes: Vec<&[u8]> = chunk.iter().map(|f| f.as_raw().as_slice()).collect();
        let x = iresnet::preprocess::faces_to_tensor::<B>(&bytes, device)?;
        let mut e = backbone.embed(x.clone());
        if flip {
            e = e + backbone.embed(x.flip([3]));
        }
        let [_, d] = e.dims();
        let values = e
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 embeddings");
        for row in values.chunks(d) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            embeddings.push(row.iter().map(|v| v / norm).collect());
        }
    }
    let scores: Vec<f64> = (0..set.issame.len())
        .map(|k| {
            embeddings[2 * k]
                .iter()
                .zip(&embeddings[2 * k + 1])
                .map(|(a, b)| (*a * *b) as f64)
                .sum()
        })
        .collect();
    Ok(ten_fold_accuracy(&scores, &set.issame))
}

/// Trains per `config`, writing into `out`: `config.toml`, `metrics.jsonl`, `model.arcface`,
/// `report.json`. `progress` is called after every optimiser step.
pub fn train<B: AutodiffBackend>(
    config: &TrainConfig,
    out: &Path,
    device: &B::Device,
    mut progress: impl FnMut(&StepInfo),
) -> Result<TrainReport, TrainError> {
    config.validate()?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    std::fs::write(out.join("config.toml"), config.to_toml())
        .map_err(io(&out.join("config.toml")))?;
    B::seed(device, config.seed);
    let pipeline = Pipeline::from_config(&config.augmentation)
        .map_err(|e| TrainError::Other(e.to_string()))?;
    let mut loader_config = config.loader.clone();
    loader_config.seed = config.seed;
    match &config.data {
        DataSource::Synthetic(s) => {
            let mut s = s.clone();
            s.seed = s.seed.wrapping_add(config.seed);
            let held = SyntheticFaces::held_out(s.clone())?;
            let eval = eval_set(&held, config.eval.pairs, config.seed)?;
            let loader = Loader::new(SyntheticFaces::train(s)?, pipeline, loader_config)?;
            run::<B, _>(config, out, device, loader, Some(eval), &mut progress)
        }
        DataSource::Folder { path } => {
            let loader = Loader::new(ImageFolder::open(path)?, pipeline, loader_config)?;
            run::<B, _>(config, out, device, loader, None, &mut progress)
        }
        DataSource::Rec { path } => {
            let loader = Loader::new(RecordDataset::open(path)?, pipeline, loader_config)?;
            run::<B, _>(config, out, device, loader, None, &mut progress)
        }
    }
}

fn run<B: AutodiffBackend, D: FaceDataset + 'static>(
    config: &TrainConfig,
    out: &Path,
    device: &B::Device,
    loader: Loader<D>,
    eval: Option<EvalSet>,
    progress: &mut dyn FnMut(&StepInfo),
) -> Result<TrainReport, TrainError> {
    let start = Instant::now();
    let backbone = config.backbone.init::<B>(device)?;
    let mut head_config = config.head.clone();
    head_config.num_classes = loader.dataset().num_identities();
    head_config.embedding_dim = backbone.embedding_dim();
    head_config.seed = config.seed;
    let head = head_config.init::<B>(device)?;
    let mut model = Model { backbone, head };
    let partial_fc = head_config.sample_rate < 1.0;

    let momentum = (config.sgd.momentum > 0.0).then(|| {
        MomentumConfig::new()
            .with_momentum(config.sgd.momentum)
            .with_dampening(0.0)
            .with_nesterov(config.sgd.nesterov)
    });
    let weight_decay = (config.sgd.weight_decay > 0.0)
        .then(|| WeightDecayConfig::new(config.sgd.weight_decay as f32));
    let mut optimizer = SgdConfig::new()
        .with_momentum(momentum)
        .with_weight_decay(weight_decay)
        .init::<B, Model<B>>();
    let mut sampled_sgd: SampledSgd<B::InnerBackend> = SampledSgdConfig {
        momentum: config.sgd.momentum,
        weight_decay: config.sgd.weight_decay,
        nesterov: config.sgd.nesterov,
    }
    .init()?;

    let batches_per_epoch = loader.batches_per_epoch().max(1);
    let steps_per_epoch = (batches_per_epoch / config.accumulation).max(1);
    let total_steps = (config.epochs * steps_per_epoch as f64).ceil() as u64;
    let schedule = config.schedule.build(steps_per_epoch, config.epochs);
    let effective_batch = config.loader.batch_size * config.accumulation;
    tracing::info!(
        "{} images, {} identities; {steps_per_epoch} steps/epoch of {effective_batch} images; {total_steps} steps",
        loader.dataset().len(),
        loader.dataset().num_identities()
    );

    let metrics_path = out.join("metrics.jsonl");
    let mut metrics =
        std::io::BufWriter::new(std::fs::File::create(&metrics_path).map_err(io(&metrics_path))?);
    let mut accumulator = GradientsAccumulator::new();
    let (mut step, mut images, mut batch_in_step) = (0u64, 0u64, 0usize);
    let mut guard = NanGuard {
        skipped: 0,
        in_a_row: 0,
        max: config.max_bad_steps,
    };
    let (mut last_loss, mut best_accuracy, mut last_accuracy) = (f64::NAN, 0.0f64, f64::NAN);
    let mut loss_sum = 0.0;
    let mut stopped_by_time = false;
    let time_limit = (config.time_limit_secs > 0).then_some(config.time_limit_secs as f64);

    'epochs: for epoch in 0.. {
        for batch in loader.epoch(epoch) {
            let batch = batch?;
            if batch.labels.len() < 2 {
                continue;
            }
            let (x, _) = batch.to_tensors::<B>(device);
            let embeddings = model.backbone.embed(x);
            let out_head = model.head.forward(embeddings, &batch.labels, step)?;
            let loss_value = out_head.loss.clone().into_scalar().elem::<f64>();
            images += batch.labels.len() as u64;
            let lr = schedule.lr(step);
            // A non-finite loss is caught before a backward pass is spent on it.
            if !loss_value.is_finite() {
                if guard.bad(step, &format!("non-finite loss {loss_value}")) {
                    return Err(diverged(&model, out, step, guard.in_a_row)?);
                }
                accumulator = GradientsAccumulator::new();
                (batch_in_step, loss_sum) = (0, 0.0);
                continue;
            }
            let grads = out_head
                .loss
                .div_scalar(config.accumulation as f64)
                .backward();
            if partial_fc {
                model.head = model.head.step_sampled(
                    &grads,
                    &out_head.sample,
                    &out_head.centres,
                    &mut sampled_sgd,
                    lr,
                );
            }
            let grads = GradientsParams::from_grads(grads, &model);
            accumulator.accumulate(&model, grads);
            loss_sum += loss_value;
            batch_in_step += 1;
            if batch_in_step < config.accumulation {
                continue;
            }
            batch_in_step = 0;
            let mut grads = accumulator.grads();
            // The norm is computed whether or not it clips, so the guard sees every gradient.
            let grad_norm = match config.clip_norm {
                Some(max) => clip_global_norm::<B, _>(&model.backbone, &mut grads, max),
                None => global_norm::<B, _>(&model.backbone, &grads),
            };
            if !grad_norm.is_finite() {
                if guard.bad(step, &format!("non-finite gradient norm {grad_norm}")) {
                    return Err(diverged(&model, out, step, guard.in_a_row)?);
                }
                loss_sum = 0.0;
                continue;
            }
            guard.in_a_row = 0;
            model = optimizer.step(lr, model, grads);
            last_loss = loss_sum / config.accumulation as f64;
            loss_sum = 0.0;
            step += 1;

            let elapsed = start.elapsed().as_secs_f64();
            let out_of_time = time_limit.is_some_and(|t| elapsed >= t);
            let done = step >= total_steps || out_of_time;
            let evaluate = eval.is_some()
                && (done || (config.eval.every_steps > 0 && step % config.eval.every_steps == 0));
            let accuracy = if evaluate {
                let set = eval.as_ref().expect("checked");
                let acc = verify(&model.backbone.valid(), set, config.eval.flip_test, device)?;
                best_accuracy = best_accuracy.max(acc);
                last_accuracy = acc;
                Some(acc)
            } else {
                None
            };
            let info = StepInfo {
                step,
                total_steps,
                epoch: step as f64 / steps_per_epoch as f64,
                loss: last_loss,
                lr,
                grad_norm,
                images_per_sec: images as f64 / elapsed.max(1e-9),
                elapsed_secs: elapsed,
                accuracy,
            };
            if step % config.log_every.max(1) == 0 || accuracy.is_some() || done {
                writeln!(
                    metrics,
                    "{}",
                    serde_json::to_string(&info).expect("serialisable")
                )
                .map_err(io(&metrics_path))?;
                metrics.flush().map_err(io(&metrics_path))?;
            }
            progress(&info);
            if done {
                stopped_by_time = out_of_time && step < total_steps;
                break 'epochs;
            }
        }
    }
    let model_path = save(&model, out, "model.arcface")?;
    let report = TrainReport {
        steps: step,
        epochs: step as f64 / steps_per_epoch as f64,
        images,
        effective_batch,
        wall_secs: start.elapsed().as_secs_f64(),
        final_loss: last_loss,
        final_accuracy: last_accuracy,
        best_accuracy,
        skipped_steps: guard.skipped,
        model: model_path,
        metrics: metrics_path,
        stopped_by_time_limit: stopped_by_time,
    };
    let report_path = out.join("report.json");
    std::fs::write(
        &report_path,
        serde_json::to_vec_pretty(&report).expect("serialisable"),
    )
    .map_err(io(&report_path))?;
    Ok(report)
}

/// The NaN guard's count: a non-finite loss or gradient norm drops the whole accumulation group.
struct NanGuard {
    skipped: usize,
    in_a_row: usize,
    max: usize,
}

impl NanGuard {
    /// Records a skipped step; `true` when `max` came in a row and the run must stop.
    fn bad(&mut self, step: u64, what: &str) -> bool {
        self.skipped += 1;
        self.in_a_row += 1;
        tracing::warn!(
            "step {step}: {what}, step skipped ({} in a row)",
            self.in_a_row
        );
        self.in_a_row >= self.max
    }
}

/// Saves what the run has and returns the error that stops it.
fn diverged<B: AutodiffBackend>(
    model: &Model<B>,
    out: &Path,
    step: u64,
    count: usize,
) -> Result<TrainError, TrainError> {
    let saved = save(model, out, "model.arcface")?;
    Ok(TrainError::Diverged {
        step,
        count,
        checkpoint: saved.display().to_string(),
    })
}

/// The backbone as an arcface-rs model file (atomic write, verified on load).
fn save<B: AutodiffBackend>(
    model: &Model<B>,
    out: &Path,
    name: &str,
) -> Result<PathBuf, TrainError> {
    let path = out.join(name);
    let backbone = model.backbone.valid();
    iresnet::record::save_model(
        &backbone,
        &path,
        iresnet::record::Precision::F32,
        "arcface train",
    )?;
    Ok(path)
}

use burn::tensor::ElementConversion;
