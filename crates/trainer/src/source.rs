//! What runs are built from and read back as: the data a [`TrainConfig`] names, a fresh model
//! for it, and a finished run folder loaded again (its config, newest checkpoint and identity
//! names), which distillation and continual learning start from.

use std::path::{Path, PathBuf};

use arcface_loss::MarginFc;
use burn::module::Module;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use eval::PairSet;
use face_data::{FaceDataset, ImageFolder, RecordDataset, SyntheticConfig, SyntheticFaces};
use iresnet::{AnyBackbone, Backbone, ConvAutodiffBackend};

use crate::config::{DataSource, EvalData, TrainConfig};
use crate::error::{io, TrainError};
use crate::model::Model;
use crate::settings::StopMetric;
use crate::verify::ValidationSet;

/// The identity names of a run, in head order (`identities.json` in the run folder).
pub const IDENTITIES_FILE: &str = "identities.json";

/// The training data, its verification pairs and (synthetic data) validation samples.
pub(crate) type Data = (Box<dyn FaceDataset>, Option<PairSet>, Option<ValidationSet>);

/// The synthetic settings a run renders with: the run's seed moves the data's.
pub(crate) fn synthetic(config: &TrainConfig) -> Option<SyntheticConfig> {
    match &config.data {
        DataSource::Synthetic(s) => {
            let mut s = s.clone();
            s.seed = s.seed.wrapping_add(config.seed);
            Some(s)
        }
        _ => None,
    }
}

/// The training set `config.data` names.
pub(crate) fn dataset(config: &TrainConfig) -> Result<Box<dyn FaceDataset>, TrainError> {
    Ok(match (&config.data, synthetic(config)) {
        (_, Some(s)) => Box::new(SyntheticFaces::train(s)?),
        (DataSource::Folder { path }, _) => Box::new(ImageFolder::open(path)?),
        (DataSource::Rec { path }, _) => Box::new(RecordDataset::open(path)?),
        (DataSource::Synthetic(_), None) => unreachable!("synthetic data has settings"),
    })
}

/// The training set, its verification pairs and validation samples.
pub(crate) fn data(config: &TrainConfig) -> Result<Data, TrainError> {
    let held = match synthetic(config) {
        Some(s) => Some(SyntheticFaces::held_out(s)?),
        None => None,
    };
    let pairs = match (&config.eval.data, &held) {
        (EvalData::HeldOut, Some(held)) => {
            Some(PairSet::synthetic(held, config.eval.pairs, config.seed)?)
        }
        (EvalData::HeldOut, None) => None,
        (EvalData::Bin { path }, _) => Some(PairSet::bin(path)?),
        (EvalData::Lfw { pairs, images }, _) => Some(PairSet::lfw(pairs, images)?),
    };
    let validation = match (synthetic(config), config.early_stopping.metric) {
        (Some(s), StopMetric::ValidationLoss) => Some(ValidationSet::synthetic(&s, 256)),
        _ => None,
    };
    Ok((dataset(config)?, pairs, validation))
}

/// Every identity's name in label order, when the dataset names them all.
pub(crate) fn names(data: &dyn FaceDataset) -> Option<Vec<String>> {
    (0..data.num_identities())
        .map(|label| data.identity_name(label))
        .collect()
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

/// A finished (or interrupted) training run, read back from its folder.
pub struct SavedRun<B: ConvAutodiffBackend> {
    /// The folder.
    pub dir: PathBuf,
    /// Its `config.toml`.
    pub config: TrainConfig,
    /// Its newest checkpoint's backbone and head.
    pub model: Model<B, AnyBackbone<B>, MarginFc<B>>,
    /// The head's identity names, when the run recorded or its data gives them.
    pub names: Option<Vec<String>>,
}

/// Loads the run in `dir`: `config.toml`, the newest intact checkpoint and the identity names
/// (`identities.json`, else its data's). A file is refused with a hint: a model file holds the
/// backbone only, and what needs a run needs its head.
pub fn load_run<B: ConvAutodiffBackend>(
    dir: &Path,
    device: &B::Device,
) -> Result<SavedRun<B>, TrainError> {
    if !dir.is_dir() {
        return Err(TrainError::Other(format!(
            "{}: not a training run folder{}: its head (the class centres) is needed, and only a run's checkpoints hold it; name the folder `arcface train --out` wrote",
            dir.display(),
            if dir.is_file() { " but a file (a model file holds the backbone only)" } else { "" }
        )));
    }
    let config_path = dir.join("config.toml");
    let text = std::fs::read_to_string(&config_path).map_err(io(&config_path))?;
    let config = TrainConfig::from_toml(&text)?;
    let names = match face_data::read_names(&dir.join(IDENTITIES_FILE)) {
        Some(names) => Some(names),
        None => names(dataset(&config)?.as_ref()),
    };
    let classes = match &names {
        Some(names) => names.len(),
        None => dataset(&config)?.num_identities(),
    };
    let (backbone, head) = init_model::<B>(&config, classes, device)?;
    let mut checkpoint = crate::Checkpointer::new(dir, config.checkpoint.keep_last)?.latest()?;
    let bytes = checkpoint.take(crate::state::MODEL_FILE)?;
    let record = BinBytesRecorder::<FullPrecisionSettings>::default()
        .load(bytes, device)
        .map_err(|e| {
            TrainError::Other(format!(
                "{}: the checkpoint's model record ({classes} identities expected): {e}",
                dir.display()
            ))
        })?;
    let model = Model::new(backbone, head).load_record(record);
    Ok(SavedRun {
        dir: dir.to_path_buf(),
        config,
        model,
        names,
    })
}
