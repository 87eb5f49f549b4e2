//! `arcface train`'s runs: the model, head, data and evaluation a [`TrainConfig`] describes,
//! handed to the [`Learner`]; `config.toml` and `model.arcface` written beside the run.

use std::path::{Path, PathBuf};

use arcface_loss::{MarginFc, SampledSgdConfig};
use face_augment::Pipeline;
use face_data::{FaceDataset, Loader};
use iresnet::AnyBackbone;
use iresnet::ConvAutodiffBackend;

use crate::checkpoint::write_atomic;
use crate::collective::{ClusterConfig, RingCollective};
use crate::config::TrainConfig;
use crate::error::{io, TrainError};
use crate::groups::ParamGroup;
use crate::learner::Learner;
use crate::metrics::StepInfo;
use crate::report::TrainReport;
use crate::source::{data, init_model, names, IDENTITIES_FILE};

/// Trains per `config` on `devices` (one replica each; the first one holds the optimiser),
/// writing into `out`: `config.toml`, `metrics.jsonl`, `checkpoints/`, `model.arcface`, plots and
/// `report.json`. `progress` is called after every optimiser step.
pub fn train<B: ConvAutodiffBackend>(
    config: &TrainConfig,
    out: &Path,
    devices: &[B::Device],
    progress: impl FnMut(&StepInfo),
) -> Result<TrainReport, TrainError> {
    config.validate()?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let existing = crate::Checkpointer::new(out, config.checkpoint.keep_last)?.steps()?;
    if existing.is_empty() {
        write_atomic(&out.join("config.toml"), config.to_toml().as_bytes())?;
    }
    run::<B>(config, out, devices, None, false, progress)
}

/// Trains as node `cluster.rank` of a run over `cluster.nodes` processes (each with its own
/// `devices`): this node trains on its part of each global batch, and the nodes sum their
/// gradients after every backward pass (see [`Learner::with_collective`]). With `resume`, every
/// node continues from the newest checkpoint all of them hold in their own `out`.
pub fn train_nodes<B: ConvAutodiffBackend>(
    config: &TrainConfig,
    out: &Path,
    devices: &[B::Device],
    cluster: &ClusterConfig,
    resume: bool,
    progress: impl FnMut(&StepInfo),
) -> Result<TrainReport, TrainError> {
    if resume {
        let path = out.join("config.toml");
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let config = TrainConfig::from_toml(&text)?;
        return run::<B>(&config, out, devices, Some(cluster), true, progress);
    }
    config.validate()?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    write_atomic(&out.join("config.toml"), config.to_toml().as_bytes())?;
    run::<B>(config, out, devices, Some(cluster), false, progress)
}

/// Continues the run in `out` from its newest intact checkpoint, with the config it was
/// started with; the loss curve is the one the run would have had without the interruption.
pub fn resume<B: ConvAutodiffBackend>(
    out: &Path,
    devices: &[B::Device],
    progress: impl FnMut(&StepInfo),
) -> Result<TrainReport, TrainError> {
    let path = out.join("config.toml");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let config = TrainConfig::from_toml(&text)?;
    run::<B>(&config, out, devices, None, true, progress)
}

fn run<B: ConvAutodiffBackend>(
    config: &TrainConfig,
    out: &Path,
    devices: &[B::Device],
    cluster: Option<&ClusterConfig>,
    resume: bool,
    progress: impl FnMut(&StepInfo),
) -> Result<TrainReport, TrainError> {
    let device = devices
        .first()
        .ok_or_else(|| TrainError::Other("no device to train on".into()))?;
    if devices.len() > config.loader.batch_size {
        return Err(TrainError::Other(format!(
            "{} devices for batches of {}: each device needs at least one image",
            devices.len(),
            config.loader.batch_size
        )));
    }
    let shards = devices.len() * cluster.map_or(1, |c| c.nodes);
    if cluster.is_some() && (!config.loader.drop_last || config.loader.batch_size < 2 * shards) {
        return Err(TrainError::Other(format!(
            "a multi-node run splits every batch over {shards} devices in all: it needs loader.drop_last = true and loader.batch_size >= {} (2 images per device for BatchNorm)",
            2 * shards
        )));
    }
    let pipeline = Pipeline::from_config(&config.augmentation)
        .map_err(|e| TrainError::Other(e.to_string()))?;
    let mut loader_config = config.loader.clone();
    loader_config.seed = config.seed;
    let (dataset, pairs, validation) = data(config)?;
    let setup = setup::<B>(config, dataset, out, resume, device)?;
    if let (Some(names), false) = (&setup.names, out.join(IDENTITIES_FILE).is_file()) {
        face_data::write_label_map(names, &out.join(IDENTITIES_FILE))?;
    }
    let mut loader = Loader::new(setup.dataset, pipeline, loader_config)?;
    let mut learner = Learner::new(setup.backbone, setup.head, config.fit_settings(), devices)
        .with_export(save_backbone::<B::InnerBackend>);
    if let Some(cluster) = cluster {
        loader = loader.with_shard(cluster.rank, cluster.nodes)?;
        learner = learner.with_collective(RingCollective::join(cluster)?);
    }
    if let Some(groups) = setup.groups {
        learner = learner.with_groups(groups);
    }
    if let Some((teacher, d)) = setup.teacher {
        let dim = config.backbone.embedding_dim();
        learner = learner.with_loss_term(crate::distill::DistillTerm::new(teacher, d, dim)?);
    }
    if let Some(report) = setup.report {
        learner = learner.with_evaluation(report);
    }
    if let Some(pairs) = pairs {
        learner = learner.with_verification(pairs);
    }
    if let Some(set) = validation {
        learner = learner.with_validation(set);
    }
    if config.head.sample_rate < 1.0 {
        let settings = &config.optimizer;
        let sgd = SampledSgdConfig {
            momentum: settings.momentum,
            weight_decay: settings.head_weight_decay(),
            nesterov: settings.nesterov,
        }
        .init::<B::InnerBackend>()?;
        learner = learner.with_head_update(sgd);
    }
    if let Some(d) = &config.distill {
        let teacher = crate::distill::load_teacher::<B::InnerBackend>(&d.teacher, device)?;
        if let Some(centres) = &teacher.centres {
            let classes = centres.dims()[0];
            let ours = loader.dataset().num_identities();
            if d.logit > 0.0 && classes != ours {
                return Err(TrainError::Other(format!(
                    "distill.logit: the teacher was trained on {classes} identities and the student trains on {ours}; the logit term needs the same identities"
                )));
            }
        }
        let dim = config.backbone.embedding_dim();
        learner =
            learner.with_loss_term(crate::distill::DistillTerm::new(teacher, d.clone(), dim)?);
    }
    if resume {
        learner = learner.resuming();
    }
    Ok(learner.fit(&loader, out, progress)?.report)
}

/// What a run trains: the data, the model and, for a continual round, its groups, distillation
/// and old/new report.
struct Setup<B: ConvAutodiffBackend> {
    dataset: Box<dyn FaceDataset>,
    names: Option<Vec<String>>,
    backbone: AnyBackbone<B>,
    head: MarginFc<B>,
    groups: Option<Vec<ParamGroup>>,
    teacher: Option<(
        crate::distill::Teacher<B::InnerBackend>,
        distill::DistillConfig,
    )>,
    report: Option<crate::continual::OldNew>,
}

/// A fresh model for `dataset`, or (`[continual]`) the old run's grown to this round's data.
fn setup<B: ConvAutodiffBackend>(
    config: &TrainConfig,
    dataset: Box<dyn FaceDataset>,
    out: &Path,
    resume: bool,
    device: &B::Device,
) -> Result<Setup<B>, TrainError> {
    if config.continual.is_none() {
        let (backbone, head) = init_model::<B>(config, dataset.num_identities(), device)?;
        return Ok(Setup {
            names: names(dataset.as_ref()),
            dataset,
            backbone,
            head,
            groups: None,
            teacher: None,
            report: None,
        });
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let round = crate::continual::prepare::<B>(config, out, resume, device)?;
    Ok(Setup {
        names: Some(round.dataset.names().to_vec()),
        dataset: Box::new(round.dataset),
        backbone: round.backbone,
        head: round.head,
        groups: Some(round.groups),
        teacher: round.teacher,
        report: round.report,
    })
}

/// The backbone as an arcface-rs model file (atomic write, verified on load).
fn save_backbone<B: iresnet::ConvBackend>(
    backbone: &AnyBackbone<B>,
    out: &Path,
) -> Result<PathBuf, TrainError> {
    let path = out.join("model.arcface");
    iresnet::record::save_model(
        backbone,
        &path,
        iresnet::record::Precision::F32,
        "arcface train",
    )?;
    Ok(path)
}
