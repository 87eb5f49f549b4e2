//! `arcface train`'s runs: the model, head, data and evaluation a [`TrainConfig`] describes,
//! handed to the [`Learner`]; `config.toml` and `model.arcface` written beside the run.

use std::path::{Path, PathBuf};

use arcface_loss::{MarginFc, SampledSgdConfig};
use eval::PairSet;
use face_augment::Pipeline;
use face_data::{FaceDataset, ImageFolder, Loader, RecordDataset, SyntheticFaces};
use iresnet::ConvAutodiffBackend;
use iresnet::{AnyBackbone, Backbone};

use crate::checkpoint::write_atomic;
use crate::config::{DataSource, EvalData, TrainConfig};
use crate::error::{io, TrainError};
use crate::learner::Learner;
use crate::metrics::StepInfo;
use crate::report::TrainReport;
use crate::settings::StopMetric;
use crate::verify::ValidationSet;

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
    run::<B>(config, out, devices, false, progress)
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
    run::<B>(&config, out, devices, true, progress)
}

/// The training data, its verification pairs and (synthetic data) validation samples.
type Data = (Box<dyn FaceDataset>, Option<PairSet>, Option<ValidationSet>);

/// The number of identities `config`'s training data holds (what its head was built for).
pub(crate) fn num_identities(config: &TrainConfig) -> Result<usize, TrainError> {
    Ok(data(config)?.0.num_identities())
}

fn data(config: &TrainConfig) -> Result<Data, TrainError> {
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
    Ok(match &config.data {
        DataSource::Synthetic(s) => {
            let mut s = s.clone();
            s.seed = s.seed.wrapping_add(config.seed);
            let held = SyntheticFaces::held_out(s.clone())?;
            let validation = (config.early_stopping.metric == StopMetric::ValidationLoss)
                .then(|| ValidationSet::synthetic(&s, 256));
            let eval = pairs(Some(&held))?;
            (Box::new(SyntheticFaces::train(s)?), eval, validation)
        }
        DataSource::Folder { path } => (Box::new(ImageFolder::open(path)?), pairs(None)?, None),
        DataSource::Rec { path } => (Box::new(RecordDataset::open(path)?), pairs(None)?, None),
    })
}

fn run<B: ConvAutodiffBackend>(
    config: &TrainConfig,
    out: &Path,
    devices: &[B::Device],
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
    let pipeline = Pipeline::from_config(&config.augmentation)
        .map_err(|e| TrainError::Other(e.to_string()))?;
    let mut loader_config = config.loader.clone();
    loader_config.seed = config.seed;
    let (dataset, pairs, validation) = data(config)?;
    let loader = Loader::new(dataset, pipeline, loader_config)?;
    let (backbone, head) = init_model::<B>(config, loader.dataset().num_identities(), device)?;
    let mut learner = Learner::new(backbone, head, config.fit_settings(), devices)
        .with_export(save_backbone::<B::InnerBackend>);
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

/// The config's backbone and a head over `classes` identities, drawn from the seed.
pub(crate) fn init_model<B: ConvAutodiffBackend>(
    config: &TrainConfig,
    classes: usize,
    device: &B::Device,
) -> Result<(AnyBackbone<B>, MarginFc<B>), TrainError> {
    // Burn's backend RNG is process-wide: seeding it and drawing the initial weights happen under
    // one lock, so runs started at the same time in one process (tests, sweeps) still start from
    // their seed's weights.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    B::seed(device, config.seed);
    let backbone = config.backbone.init::<B>(device)?;
    let mut head = config.head.clone();
    head.num_classes = classes;
    head.embedding_dim = backbone.embedding_dim();
    head.seed = config.seed;
    let head = head.init::<B>(device)?;
    crate::model::materialize(&backbone);
    crate::model::materialize(&head);
    Ok((backbone, head))
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
