//! Continual learning (`[continual]`, `arcface train --from RUN --add DATA`): a trained run
//! takes in new identities without retraining all of it. The head grows by the new people's
//! centres, each started at the mean of its images' embeddings (weight imprinting); what trains
//! is the head, the head and the last stage, or everything with the old parts at a lower rate;
//! a replay buffer of old exemplars and distillation from the frozen old model hold on to what
//! was known. People the run already knows (by name) keep their centre and train on further.
//! Every evaluation reports old- and new-identity accuracy ([`OldNew`]).
//!
//! A run folder of a continual run holds, besides what every run writes: `identities.json` (the
//! head's names), `replay.rec` (the exemplars it trained on, with their names) and `eval.rec`
//! (unseen images of every identity so far), which the next round starts from.

mod evaluate;
mod exemplars;
mod imprint;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::HashSet;

use arcface_loss::MarginFc;
use burn::module::{AutodiffModule, Param};
use burn::tensor::Tensor;
use distill::DistillConfig;
use face_data::{FaceDataset, Merged, RecordDataset, SyntheticFaces};
use iresnet::{AnyBackbone, Backbone, ConvAutodiffBackend};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::distill::Teacher;
use crate::error::TrainError;
use crate::groups::ParamGroup;
use crate::source::{self, SavedRun};

pub use evaluate::OldNew;
pub use exemplars::herding;

/// What trains in a continual round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trainable {
    /// The head only; the backbone is frozen (the old embeddings stay exactly as they were).
    Head,
    /// The head and the backbone's last stage (IResNet `layer4` and the embedding layers; more
    /// stages with `stages`).
    LastStage,
    /// Everything, the backbone at `backbone_lr_scale` times the schedule's rate.
    All,
}

/// How the replay buffer's exemplars are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// iCaRL's herding: the images whose running mean stays closest to the identity's mean
    /// embedding (under the old model).
    Herding,
    /// A seeded random draw.
    Random,
}

/// `[continual]`: continue the run `from` on this config's data (the new identities).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContinualConfig {
    /// The trained run to continue: its folder (a model file has no head to grow).
    pub from: PathBuf,
    /// What trains.
    pub train: Trainable,
    /// With `train = "last_stage"`: how many of the backbone's last stages train (1 to 4).
    pub stages: usize,
    /// With `train = "all"`: the backbone's rate is the schedule's times this.
    pub backbone_lr_scale: f64,
    /// Start new identities' centres at their images' normalised mean embedding (else random).
    pub imprint: bool,
    /// Exemplars of old identities replayed with the new data, in all (0 = none); an equal share
    /// per old identity.
    pub replay: usize,
    /// How exemplars are chosen.
    pub selection: Selection,
    /// Learning without forgetting: distillation from the frozen old model on every batch (the
    /// `distill` losses; `teacher` is `from` and is left out).
    pub distill: Option<DistillConfig>,
    /// Unseen images per identity for the old/new report: rendered for synthetic data, kept out
    /// of training for other data.
    pub eval_images: usize,
}

impl Default for ContinualConfig {
    fn default() -> Self {
        Self {
            from: PathBuf::new(),
            train: Trainable::Head,
            stages: 1,
            backbone_lr_scale: 0.1,
            imprint: true,
            replay: 0,
            selection: Selection::Herding,
            distill: None,
            eval_images: 2,
        }
    }
}

impl ContinualConfig {
    /// Refuses an empty `from`, rates out of range, and distillation into a frozen backbone.
    pub fn validate(&self) -> Result<(), String> {
        if self.from.as_os_str().is_empty() {
            return Err("continual.from: name the trained run's folder".into());
        }
        if !(self.backbone_lr_scale.is_finite() && self.backbone_lr_scale >= 0.0) {
            return Err(format!(
                "continual.backbone_lr_scale = {}: must be >= 0",
                self.backbone_lr_scale
            ));
        }
        if !(1..=4).contains(&self.stages) {
            return Err(format!("continual.stages = {}: 1 to 4", self.stages));
        }
        if self.eval_images == 1 {
            return Err("continual.eval_images = 1: verification needs 2 images per identity (0 turns the report off)".into());
        }
        if let Some(d) = &self.distill {
            if self.train == Trainable::Head {
                return Err("continual.distill with train = \"head\": the backbone is frozen, there is nothing to distil into (train last_stage or all)".into());
            }
            if !d.teacher.as_os_str().is_empty() && d.teacher != self.from {
                return Err(format!(
                    "continual.distill.teacher = {}: the teacher is the old run, continual.from; leave it out",
                    d.teacher.display()
                ));
            }
            self.lwf().expect("set").validate()?;
        }
        Ok(())
    }

    /// The distillation settings with the old run as the teacher.
    fn lwf(&self) -> Option<DistillConfig> {
        let mut d = self.distill.clone()?;
        d.teacher = self.from.clone();
        Some(d)
    }
}

/// A continual round, ready for the [`crate::Learner`].
pub(crate) struct Round<B: ConvAutodiffBackend> {
    /// The new data, its held-back images removed, merged with the replay buffer; labels in the
    /// grown head's order.
    pub dataset: Merged,
    /// The old backbone and the grown head.
    pub backbone: AnyBackbone<B>,
    pub head: MarginFc<B>,
    pub groups: Vec<ParamGroup>,
    /// The old model, for distillation.
    pub teacher: Option<(Teacher<B::InnerBackend>, DistillConfig)>,
    pub report: Option<OldNew>,
}

/// Prepares the round `config.continual` describes in `out`: loads the old run, makes (or, on a
/// resume, reopens) the replay buffer and the evaluation set, and grows the head (imprinted,
/// unless resuming: the checkpoint then holds the head).
pub(crate) fn prepare<B: ConvAutodiffBackend>(
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    device: &B::Device,
) -> Result<Round<B>, TrainError> {
    let c = config.continual.as_ref().expect("a continual run");
    let (old, old_names) = old_run::<B>(c, config, device)?;
    let (train, held_back) = split(config, c.eval_images)?;
    let new_names: HashSet<String> = source::names(train.as_ref())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let old_backbone = old.model.backbone.valid();
    let mut parts = vec![train];
    let pool = || replay_pool(&old);
    parts.extend(exemplars::buffer(
        pool,
        &old_backbone,
        c,
        out,
        config.seed,
        device,
    )?);
    let dataset = Merged::by_name(&old_names, parts)?;
    let added = dataset.num_identities() - old_names.len();
    tracing::info!(
        "continual round from {}: {} known identities, {added} new, {} known ones with new images; {} images to train on",
        c.from.display(),
        old_names.len(),
        new_names.len() - added,
        dataset.len()
    );
    let report = match c.eval_images {
        0 => None,
        n => {
            let sources = || report_sources(&old, held_back, n);
            let (flip, seed) = (config.eval.flip_test, config.seed);
            OldNew::prepare(sources, dataset.names(), &new_names, out, flip, seed)?
        }
    };
    let centres = old.model.head.centres.val().inner();
    let mut head = config.head.clone();
    head.num_classes = dataset.num_identities();
    head.embedding_dim = old_backbone.embedding_dim();
    head.seed = config.seed;
    let mut head = head.init::<B>(device)?;
    crate::model::materialize(&head);
    if !resume {
        let fresh = head.centres.val().inner();
        let faces = old_faces(&dataset, old_names.len(), report.as_ref())?;
        let grown = imprint::grow(
            &centres,
            &fresh,
            &old_backbone,
            &dataset,
            &faces,
            c.imprint,
            device,
        )?;
        head.centres = Param::from_tensor(Tensor::from_inner(grown).require_grad());
    }
    let teacher = c.lwf().map(|d| {
        let teacher = Teacher {
            backbone: old_backbone,
            centres: Some(centres),
        };
        (teacher, d)
    });
    Ok(Round {
        groups: groups(c, config),
        dataset,
        backbone: old.model.backbone,
        head,
        teacher,
        report,
    })
}

/// The old run and its identity names, refused when it has none or another backbone.
fn old_run<B: ConvAutodiffBackend>(
    c: &ContinualConfig,
    config: &TrainConfig,
    device: &B::Device,
) -> Result<(SavedRun<B>, Vec<String>), TrainError> {
    let old = source::load_run::<B>(&c.from, device)?;
    let names = old.names.clone().ok_or_else(|| {
        TrainError::Other(format!(
            "{}: its training data does not name its identities, so new data cannot be told apart from it (train it from an image folder, a .rec with names.json or synthetic data)",
            c.from.display()
        ))
    })?;
    if old.config.backbone != config.backbone {
        return Err(TrainError::Other(format!(
            "the config's backbone ({}) is not the one {} trained ({}): a continual round keeps the old backbone",
            config.backbone.describe(),
            c.from.display(),
            old.config.backbone.describe()
        )));
    }
    Ok((old, names))
}

/// The old people's images exemplars are chosen from: the old run's training data and its own
/// replay buffer.
fn replay_pool<B: ConvAutodiffBackend>(
    old: &SavedRun<B>,
) -> Result<Vec<Box<dyn FaceDataset>>, TrainError> {
    let held = old.config.continual.as_ref().map_or(0, |c| c.eval_images);
    let mut pool = vec![split(&old.config, held)?.0];
    let replay = old.dir.join(exemplars::REPLAY_FILE);
    if replay.is_file() {
        pool.push(Box::new(RecordDataset::open(&replay)?));
    }
    Ok(pool)
}

/// The report's images: the old run's (its `eval.rec`, or unseen renders of its synthetic
/// people), then this round's held-back images of people the old set does not hold.
fn report_sources<B: ConvAutodiffBackend>(
    old: &SavedRun<B>,
    held_back: Option<Box<dyn FaceDataset>>,
    images: usize,
) -> Result<Vec<Box<dyn FaceDataset>>, TrainError> {
    let mut sources: Vec<Box<dyn FaceDataset>> = Vec::new();
    let old_eval = old.dir.join(evaluate::EVAL_FILE);
    if old_eval.is_file() {
        sources.push(Box::new(RecordDataset::open(&old_eval)?));
    } else if let Some(s) = source::synthetic(&old.config) {
        sources.push(Box::new(SyntheticFaces::unseen_images(s, images)?));
    }
    // People the old set already holds keep its images (synthetic ones would repeat).
    let known: HashSet<String> = (sources.iter())
        .flat_map(|s| source::names(s.as_ref()).unwrap_or_default())
        .collect();
    if let Some(held) = held_back {
        let held: Arc<dyn FaceDataset> = Arc::from(held);
        let mut keep = Vec::new();
        for i in 0..held.len() {
            let name = held.identity_name(held.label(i)?).unwrap_or_default();
            if !known.contains(&name) {
                keep.push(i);
            }
        }
        if !keep.is_empty() {
            sources.push(Box::new(face_data::Subset::new(held, keep)?));
        }
    }
    Ok(sources)
}

/// Faces of old identities (labels below `known`) to calibrate imprints on, one each and at
/// most [`imprint::CALIBRATION_FACES`]: the round's exemplars and known people's new images,
/// else the report's old faces.
fn old_faces(
    dataset: &Merged,
    known: usize,
    report: Option<&OldNew>,
) -> Result<imprint::OldFaces, TrainError> {
    let mut firsts: Vec<(usize, usize)> = (face_data::by_identity(dataset)?.iter().enumerate())
        .take(known)
        .filter_map(|(label, samples)| Some((*samples.first()?, label)))
        .collect();
    // In the order the data holds them, as a scan of it would meet them.
    firsts.sort_unstable();
    firsts.truncate(imprint::CALIBRATION_FACES);
    let (indices, labels): (Vec<usize>, Vec<usize>) = firsts.into_iter().unzip();
    if indices.is_empty() {
        if let Some(report) = report {
            return Ok(report.old_faces(imprint::CALIBRATION_FACES));
        }
    }
    Ok((face_data::images(dataset, &indices)?, labels))
}

/// Images to train on, and images of the same people kept for the report.
type Split = (Box<dyn FaceDataset>, Option<Box<dyn FaceDataset>>);

/// The new data to train on, and unseen images of its identities for the report: rendered for
/// synthetic data; otherwise the last `images` of each identity that has `images + 2` or more,
/// kept out of training.
fn split(config: &TrainConfig, images: usize) -> Result<Split, TrainError> {
    let data = source::dataset(config)?;
    if images == 0 {
        return Ok((data, None));
    }
    if let Some(s) = source::synthetic(config) {
        return Ok((
            data,
            Some(Box::new(SyntheticFaces::unseen_images(s, images)?)),
        ));
    }
    let (mut keep, mut held) = (Vec::new(), Vec::new());
    for indices in face_data::by_identity(data.as_ref())? {
        let cut = match indices.len() >= images + 2 {
            true => indices.len() - images,
            false => indices.len(),
        };
        keep.extend_from_slice(&indices[..cut]);
        held.extend_from_slice(&indices[cut..]);
    }
    keep.sort_unstable();
    let data: Arc<dyn FaceDataset> = Arc::from(data);
    let train = face_data::Subset::new(data.clone(), keep)?;
    let held = face_data::Subset::new(data, held)?;
    Ok((Box::new(train), Some(Box::new(held))))
}

/// The parameter groups of `c.train`: the head always trains, the backbone as chosen.
fn groups(c: &ContinualConfig, config: &TrainConfig) -> Vec<ParamGroup> {
    let optimizer = &config.optimizer;
    let mut groups = optimizer.default_groups();
    let backbone = groups[0].clone();
    match c.train {
        Trainable::Head => groups[0] = backbone.frozen(),
        Trainable::LastStage => {
            groups[0] = backbone.frozen();
            let last: Vec<String> = (config.backbone.last_stages(c.stages))
                .iter()
                .map(|p| format!("backbone.{p}"))
                .collect();
            let last: Vec<&str> = last.iter().map(String::as_str).collect();
            groups.push(ParamGroup::new(
                "backbone_last",
                &last,
                optimizer.weight_decay,
            ));
        }
        Trainable::All => groups[0] = backbone.with_lr_scale(c.backbone_lr_scale),
    }
    groups
}
