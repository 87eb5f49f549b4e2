//! Verification of multimodal models (RGB, near-infrared, depth stacked as planes) under the
//! conditions night-time recognition meets: daylight, night (the colour camera dark and noisy),
//! and a modality missing (a camera without depth). An [`EvalHook`], so every evaluation of a
//! run reports each condition (docs/multimodal.md).

use burn::tensor::{backend::Backend, Tensor, TensorData};
use eval::verify_pairs;
use face_data::{
    total_planes, verification_pair_indices, FaceDataset, FaceSample, Modality, SyntheticConfig,
    SyntheticFaces,
};
use iresnet::{Backbone, INPUT_SIZE};

use crate::error::TrainError;
use crate::hooks::EvalHook;

/// One evaluation condition: when the images are taken and which modalities are missing.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// Its name in reports (`day`, `night`, `night_no_depth`).
    pub name: String,
    /// Taken at night.
    pub night: bool,
    /// Modalities the camera lacks (their planes are zeros).
    pub missing: Vec<Modality>,
}

impl Condition {
    /// Day and night with every modality, then each with `absent` missing (for models that read
    /// it; `None` for none).
    pub fn standard(absent: Option<Modality>) -> Vec<Condition> {
        let mut out = Vec::new();
        for night in [false, true] {
            let when = if night { "night" } else { "day" };
            out.push(Condition {
                name: when.into(),
                night,
                missing: vec![],
            });
            if let Some(m) = absent {
                out.push(Condition {
                    name: format!("{when}_no_{m}"),
                    night,
                    missing: vec![m],
                });
            }
        }
        out
    }
}

/// Verification pairs of held-out synthetic identities, rendered by day and at night with every
/// modality, scored for each condition.
pub struct MultimodalPairs {
    /// The model's input modalities, in batch order.
    modalities: Vec<Modality>,
    conditions: Vec<Condition>,
    /// Both images of every pair, by day and at night.
    day: Vec<FaceSample>,
    night: Vec<FaceSample>,
    same: Vec<bool>,
    flip: bool,
}

impl MultimodalPairs {
    /// `pairs` matched and as many mismatched pairs of `config`'s held-out identities (drawn
    /// from `seed`), for a model reading `modalities`, under `conditions`.
    pub fn new(
        config: &SyntheticConfig,
        modalities: &[Modality],
        conditions: Vec<Condition>,
        pairs: usize,
        seed: u64,
        flip: bool,
    ) -> Result<Self, TrainError> {
        face_data::check_list(modalities)?;
        let render = |night: f32| -> Result<(Vec<FaceSample>, Vec<bool>), TrainError> {
            let held = SyntheticFaces::held_out(SyntheticConfig {
                modalities: Modality::ALL.to_vec(),
                night,
                ..config.clone()
            })?;
            let indices = verification_pair_indices(&held, pairs, seed)?;
            let flat: Vec<usize> = indices.iter().flat_map(|&(a, b, _)| [a, b]).collect();
            use rayon::prelude::*;
            let faces = (flat.par_iter())
                .map(|&i| held.get(i))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((faces, indices.iter().map(|p| p.2).collect()))
        };
        let (day, same) = render(0.0)?;
        let (night, _) = render(1.0)?;
        Ok(Self {
            modalities: modalities.to_vec(),
            conditions,
            day,
            night,
            same,
            flip,
        })
    }

    /// 10-fold verification accuracy of `backbone` under each condition, in order.
    pub fn accuracies<B: Backend, M: Backbone<B>>(
        &self,
        backbone: &M,
        device: &B::Device,
    ) -> Result<Vec<(String, f64)>, TrainError> {
        let planes = total_planes(&self.modalities);
        if backbone.input_channels() != planes {
            return Err(TrainError::Other(format!(
                "the model reads {} planes, the modalities {:?} give {planes}",
                backbone.input_channels(),
                self.modalities
            )));
        }
        let mut out = Vec::with_capacity(self.conditions.len());
        for c in &self.conditions {
            let faces = if c.night { &self.night } else { &self.day };
            let embeddings = self.embed(backbone, faces, &c.missing, device)?;
            let report = verify_pairs(&embeddings, &self.same, None)?;
            out.push((c.name.clone(), report.ten_fold.accuracy_mean));
        }
        Ok(out)
    }

    /// L2-normalised embeddings of `faces` with `missing` zeroed (flip test: the sum with the
    /// mirror image's).
    fn embed<B: Backend, M: Backbone<B>>(
        &self,
        backbone: &M,
        faces: &[FaceSample],
        missing: &[Modality],
        device: &B::Device,
    ) -> Result<Vec<Vec<f32>>, TrainError> {
        let planes = total_planes(&self.modalities);
        let dim = backbone.embedding_dim();
        let mut out = Vec::with_capacity(faces.len());
        for (k, chunk) in faces.chunks(64).enumerate() {
            let mut data = Vec::with_capacity(chunk.len() * planes * INPUT_SIZE * INPUT_SIZE);
            for (j, face) in chunk.iter().enumerate() {
                data.extend(face.planes(&self.modalities, missing, k * 64 + j)?);
            }
            let shape = [chunk.len(), planes, INPUT_SIZE, INPUT_SIZE];
            let x = Tensor::<B, 4>::from_data(TensorData::new(data, shape), device);
            let mut e = backbone.embed(x.clone());
            if self.flip {
                e = e + backbone.embed(x.flip([3]));
            }
            let values = (e.into_data().convert::<f32>().to_vec::<f32>())
                .map_err(|e| TrainError::Other(format!("embeddings: {e:?}")))?;
            for row in values.chunks(dim) {
                let mut v = row.to_vec();
                face_embed::normalize(&mut v);
                out.push(v);
            }
        }
        Ok(out)
    }
}

impl<B: Backend, M: Backbone<B>, H> EvalHook<B, M, H> for MultimodalPairs {
    fn evaluate(
        &self,
        backbone: &M,
        _head: &H,
        _step: u64,
        device: &B::Device,
    ) -> Result<Vec<(String, f64)>, TrainError> {
        self.accuracies(backbone, device)
    }
}

/// Which model a [`FusionRun`] trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusionModel {
    /// One IResNet whose stem takes every plane of the listed modalities (one modality alone
    /// is this with its own planes).
    Early,
    /// One IResNet per modality, embeddings concatenated and fused by `Linear`.
    Late,
    /// One IResNet per modality, embeddings fused by learned per-modality weights.
    LateWeighted,
}

/// One row of the multimodal table: a model over some modalities, trained on the synthetic
/// identities (day and night mixed) and verified on held-out ones under each condition.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FusionRun {
    /// The model.
    pub model: FusionModel,
    /// Its input modalities, in batch order.
    pub modalities: Vec<Modality>,
    /// The chance that each modality of a training sample is zeroed (never all).
    pub modality_dropout: f32,
    /// The modalities dropout may zero (empty: any).
    pub dropout_modalities: Vec<Modality>,
    /// The training and held-out identities (`night` is the training share of night images).
    pub data: SyntheticConfig,
    /// Stage widths of each IResNet (blocks [1, 1, 1, 1]).
    pub widths: [usize; 4],
    /// Embedding size of each branch and of the fused model.
    pub embedding_dim: usize,
    /// Training length.
    pub epochs: f64,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate of the three-stage schedule.
    pub base_lr: f64,
    /// Matched (and as many mismatched) held-out pairs per condition.
    pub pairs: usize,
    /// Seed of initialisation, order, augmentation and pairs.
    pub seed: u64,
}

impl Default for FusionRun {
    /// The table's budget: 250 identities x 20 images, half of them at night, 2 epochs.
    fn default() -> Self {
        Self {
            model: FusionModel::Early,
            modalities: vec![Modality::Rgb],
            modality_dropout: 0.0,
            dropout_modalities: Vec::new(),
            data: SyntheticConfig {
                identities: 250,
                per_identity: 20,
                held_out: 200,
                night: 0.5,
                ..SyntheticConfig::default()
            },
            widths: [8, 16, 32, 64],
            embedding_dim: 128,
            epochs: 2.0,
            batch_size: 64,
            base_lr: 0.1,
            pairs: 300,
            seed: 0,
        }
    }
}

/// What a [`FusionRun`] measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FusionReport {
    /// The run as configured.
    pub run: FusionRun,
    /// Accuracy under each condition at the end (`day`, `night`, `day_no_depth`, ...).
    pub accuracy: std::collections::BTreeMap<String, f64>,
    /// The training run's report (steps, wall time, loss).
    pub train: crate::TrainReport,
}

impl FusionRun {
    /// The backbone of one modality group: IResNet [1, 1, 1, 1] reading `planes` planes.
    fn iresnet(&self, planes: usize) -> iresnet::BackboneConfig {
        iresnet::BackboneConfig::IResNet(
            iresnet::IResNetConfig::new([1, 1, 1, 1])
                .with_widths(self.widths)
                .with_embedding_dim(self.embedding_dim)
                .with_in_channels(planes),
        )
    }

    /// The late-fusion model's config: a branch per modality over its planes.
    pub fn late_config(&self) -> iresnet::LateFusionConfig {
        iresnet::LateFusionConfig {
            branches: (face_data::plane_ranges(&self.modalities).into_iter())
                .map(|(m, r)| iresnet::FusionBranch {
                    name: m.name().into(),
                    first_plane: r.start,
                    planes: r.len(),
                    backbone: self.iresnet(r.len()),
                })
                .collect(),
            fuse: match self.model {
                FusionModel::LateWeighted => iresnet::Fuse::Weighted,
                _ => iresnet::Fuse::Concat,
            },
            embedding_dim: self.embedding_dim,
        }
    }

    /// Trains the row into `out` (checkpoints, metrics, report; resumes from `out`'s newest
    /// checkpoint when `resume`) and verifies it under each condition.
    pub fn run<B: iresnet::ConvAutodiffBackend>(
        &self,
        out: &std::path::Path,
        device: &B::Device,
        resume: bool,
        progress: impl FnMut(&crate::StepInfo),
    ) -> Result<FusionReport, TrainError> {
        face_data::check_list(&self.modalities)?;
        B::seed(device, self.seed);
        let mut data = self.data.clone();
        data.modalities = Modality::ALL
            .into_iter()
            .filter(|m| *m == Modality::Rgb || self.modalities.contains(m))
            .collect();
        let train = SyntheticFaces::train(data.clone())?;
        let absent = (self.modalities.len() > 1 && self.modalities.contains(&Modality::Depth))
            .then_some(Modality::Depth);
        let conditions = Condition::standard(absent);
        let pairs = MultimodalPairs::new(
            &data,
            &self.modalities,
            conditions,
            self.pairs,
            self.seed,
            true,
        )?;
        let loader = face_data::Loader::new(
            train,
            face_augment::Pipeline::insightface_minimal(),
            face_data::LoaderConfig {
                batch_size: self.batch_size,
                seed: self.seed,
                modalities: self.modalities.clone(),
                modality_dropout: self.modality_dropout,
                dropout_modalities: self.dropout_modalities.clone(),
                ..Default::default()
            },
        )?;
        let head = arcface_loss::MarginFcConfig {
            num_classes: self.data.identities,
            embedding_dim: self.embedding_dim,
            margin: arcface_loss::CosFace {
                scale: 32.0,
                margin: 0.3,
            }
            .into(),
            ..Default::default()
        }
        .init::<B>(device)?;
        let settings = self.settings();
        let report = match self.model {
            FusionModel::Early => {
                let backbone = self
                    .iresnet(total_planes(&self.modalities))
                    .init::<B>(device)?;
                fit(
                    backbone, head, settings, pairs, &loader, out, device, resume, progress,
                )?
            }
            FusionModel::Late | FusionModel::LateWeighted => {
                let backbone = self.late_config().init::<B>(device)?;
                fit(
                    backbone, head, settings, pairs, &loader, out, device, resume, progress,
                )?
            }
        };
        Ok(FusionReport {
            run: self.clone(),
            accuracy: report.evals.clone(),
            train: report,
        })
    }

    /// The main command's loop settings with this row's length and rate, evaluated at the end.
    fn settings(&self) -> crate::FitSettings {
        let mut s = crate::TrainConfig::default().fit_settings();
        s.seed = self.seed;
        s.epochs = self.epochs;
        s.time_limit_secs = 0;
        s.eval_every_steps = 0;
        s.early_stopping.metric = crate::StopMetric::Off;
        s.schedule = crate::ScheduleConfig::ThreeStage {
            base_lr: self.base_lr,
            warmup_epochs: 0.3 * self.epochs / 2.2,
            final_fraction: 0.15,
            final_lr: self.base_lr / 100.0,
        };
        s
    }
}

/// One run of the [`crate::Learner`] with the conditions as its evaluation.
#[allow(clippy::too_many_arguments)]
fn fit<B, M>(
    backbone: M,
    head: arcface_loss::MarginFc<B>,
    settings: crate::FitSettings,
    pairs: MultimodalPairs,
    loader: &face_data::Loader<SyntheticFaces>,
    out: &std::path::Path,
    device: &B::Device,
    resume: bool,
    progress: impl FnMut(&crate::StepInfo),
) -> Result<crate::TrainReport, TrainError>
where
    B: iresnet::ConvAutodiffBackend,
    M: Backbone<B> + burn::module::AutodiffModule<B> + burn::module::ModuleDisplay + 'static,
    M::InnerModule: Backbone<B::InnerBackend> + burn::module::ModuleDisplay,
{
    let mut learner = crate::Learner::new(backbone, head, settings, std::slice::from_ref(device))
        .with_evaluation(pairs);
    if resume {
        learner = learner.resuming();
    }
    Ok(learner.fit(loader, out, progress)?.report)
}
