//! The public training API with a backbone, a head and a dataset defined here, not in
//! `iresnet`, `arcface-loss` or `face-data`: what a user plugging in their own parts does.

use std::path::PathBuf;

use arcface_loss::{ClassSample, HeadOutput, LossError, MarginHead};
use burn::backend::{Autodiff, Flex};
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{activation, backend::Backend, Int, Tensor, TensorData};
use face_augment::Pipeline;
use face_data::{DataError, FaceDataset, FaceSample, Loader, LoaderConfig};
use iresnet::Backbone;
use trainer::{FitSettings, LossTerm, ParamGroup, StepView, TrainError};

type Ad = Autodiff<Flex>;

/// A user's backbone: one strided convolution, global pooling, a linear embedding.
#[derive(Module, Debug)]
struct TinyNet<B: Backend> {
    conv: Conv2d<B>,
    pool: AdaptiveAvgPool2d,
    fc: Linear<B>,
}

impl<B: Backend> TinyNet<B> {
    fn new(device: &B::Device) -> Self {
        Self {
            conv: Conv2dConfig::new([3, 8], [4, 4])
                .with_stride([4, 4])
                .init(device),
            pool: AdaptiveAvgPool2dConfig::new([2, 2]).init(),
            fc: LinearConfig::new(32, 8).init(device),
        }
    }
}

impl<B: Backend> Backbone<B> for TinyNet<B> {
    fn embed(&self, faces: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = activation::relu(self.conv.forward(faces));
        self.fc.forward(self.pool.forward(x).flatten(1, 3))
    }
    fn embedding_dim(&self) -> usize {
        8
    }
}

/// A user's head: normalized softmax (cosine logits times a scale), no margin.
#[derive(Module, Debug)]
struct CosineHead<B: Backend> {
    centres: Param<Tensor<B, 2>>,
}

impl<B: Backend> MarginHead<B> for CosineHead<B> {
    fn num_classes(&self) -> usize {
        self.centres.dims()[0]
    }
    fn embedding_dim(&self) -> usize {
        self.centres.dims()[1]
    }
    fn forward(
        &self,
        embeddings: Tensor<B, 2>,
        labels: &[usize],
        _step: u64,
    ) -> Result<HeadOutput<B>, LossError> {
        let unit = |t: Tensor<B, 2>| t.clone() / (t.powi_scalar(2).sum_dim(1).sqrt() + 1e-6);
        let centres = self.centres.val();
        let cosine = unit(embeddings).matmul(unit(centres.clone()).transpose());
        let logits = cosine.clone() * 16.0;
        let device = logits.device();
        let targets: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        let targets =
            Tensor::<B, 1, Int>::from_data(TensorData::new(targets, [labels.len()]), &device);
        let log_p = activation::log_softmax(logits.clone(), 1);
        let loss = -log_p
            .gather(1, targets.unsqueeze_dim(1))
            .mean()
            .reshape([1]);
        Ok(HeadOutput {
            loss,
            logits,
            cosine,
            centres,
            sample: ClassSample::all(labels),
        })
    }
}

/// A user's dataset: identity `k` is a face-sized image whose colour and stripe period are the
/// identity's, with per-sample brightness noise.
struct Stripes {
    identities: usize,
    per_identity: usize,
}

impl FaceDataset for Stripes {
    fn len(&self) -> usize {
        self.identities * self.per_identity
    }
    fn num_identities(&self) -> usize {
        self.identities
    }
    fn label(&self, index: usize) -> Result<usize, DataError> {
        self.check_index(index)?;
        Ok(index / self.per_identity)
    }
    fn get(&self, index: usize) -> Result<FaceSample, DataError> {
        let label = self.label(index)?;
        let period = 4 + 3 * label as u32;
        let shade = (index % self.per_identity) as u32 * 7;
        let image = image::RgbImage::from_fn(112, 112, |x, y| {
            let on = (x / period + y / 11).is_multiple_of(2);
            let base = [40 + 50 * label as u32, 200 - 40 * label as u32, 90];
            let v = |c: u32| (if on { c } else { c / 3 } + shade).min(255) as u8;
            image::Rgb([v(base[0]), v(base[1]), v(base[2])])
        });
        Ok(FaceSample::new(image, label))
    }
    fn source(&self) -> PathBuf {
        PathBuf::from("stripes")
    }
}

/// An extra loss term: keeps the embeddings' mean squared norm near 1 (weighted 0.1).
struct NormPenalty;

impl LossTerm<Ad, TinyNet<Ad>> for NormPenalty {
    fn name(&self) -> &str {
        "norm"
    }
    fn loss(&self, view: &StepView<'_, Ad, TinyNet<Ad>>) -> Result<Tensor<Ad, 1>, TrainError> {
        let squared = view.embeddings.clone().powi_scalar(2).sum_dim(1);
        Ok(((squared - 1.0).powi_scalar(2).mean() * 0.1).reshape([1]))
    }
}

fn settings() -> FitSettings {
    let mut s = FitSettings {
        epochs: 6.0,
        time_limit_secs: 0,
        eval_every_steps: 0,
        early_stopping: trainer::EarlyStopping {
            metric: trainer::StopMetric::Off,
            ..Default::default()
        },
        log_every: 1,
        ..FitSettings::default()
    };
    s.optimizer.weight_decay = 0.0;
    s.schedule = trainer::ScheduleConfig::ThreeStage {
        base_lr: 0.1,
        warmup_epochs: 0.0,
        final_fraction: 0.0,
        final_lr: 0.1,
    };
    s
}

fn loader() -> Loader<Stripes> {
    let data = Stripes {
        identities: 4,
        per_identity: 8,
    };
    let config = LoaderConfig {
        batch_size: 8,
        workers: 1,
        ..LoaderConfig::default()
    };
    Loader::new(data, Pipeline::insightface_minimal(), config).unwrap()
}

fn weights<B: Backend, const D: usize>(p: &Param<Tensor<B, D>>) -> Vec<f32> {
    p.val().into_data().convert::<f32>().to_vec().unwrap()
}

/// Burn's random initialisation draws from one generator per backend, shared by the tests' threads:
/// a test that seeds it holds this lock, and so does every other test that draws from it, so the
/// seeded run's weights do not depend on what ran beside it.
static BURN_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_backbone_head_and_dataset_of_our_own_train_with_groups_and_a_loss_term() {
    let _rng = BURN_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    <Ad as Backend>::seed(&device, 7);
    let backbone = TinyNet::<Ad>::new(&device);
    let head = CosineHead::<Ad> {
        centres: Param::from_tensor(Tensor::random(
            [4, 8],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        )),
    };
    let conv_before = weights(&backbone.conv.weight);
    let fc_before = weights(&backbone.fc.weight);
    let groups = vec![
        ParamGroup::new("stem", &["backbone.conv"], 0.0).frozen(),
        ParamGroup::new("rest", &["backbone", "head"], 0.0),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let mut steps = Vec::new();
    let trained = trainer::Learner::new(backbone, head, settings(), &[device])
        .with_groups(groups)
        .with_loss_term(NormPenalty)
        .fit(&loader(), tmp.path(), |s| steps.push(s.clone()))
        .unwrap();

    // 32 images / batch 8 = 4 steps per epoch, 6 epochs.
    assert_eq!(trained.report.steps, 24);
    assert!(trained.report.model.is_none(), "no exporter was given");
    let first: f64 = steps[..4].iter().map(|s| s.loss).sum::<f64>() / 4.0;
    let last: f64 = steps[20..].iter().map(|s| s.loss).sum::<f64>() / 4.0;
    assert!(last < 0.5 * first, "loss {first:.3} -> {last:.3}");
    // The term is logged under its name in the progress and the metrics file.
    assert!(steps.iter().all(|s| s.terms["norm"].is_finite()));
    let metrics = trainer::read_metrics(&tmp.path().join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.len(), 24);
    assert!(metrics[0].terms.contains_key("norm"));
    // The frozen stem did not move; the rest trained.
    let model = &trained.model.backbone;
    assert_eq!(weights(&model.conv.weight), conv_before);
    assert_ne!(weights(&model.fc.weight), fc_before);
    // The trained model separates the identities: each image is nearest its own centre.
    let loader = loader();
    let batch = loader.epoch_from(0, 0).next().unwrap().unwrap();
    let (x, _) = batch.to_tensors::<Flex>(&device);
    let out = trained
        .model
        .head
        .forward(model.embed(x), &batch.labels, 0)
        .unwrap();
    let predicted = out
        .cosine
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .unwrap();
    let right = (predicted.iter().zip(&batch.labels))
        .filter(|(p, l)| **p as usize == **l)
        .count();
    assert!(
        right >= 7,
        "{right} of 8 right: {predicted:?} vs {:?}",
        batch.labels
    );
}

#[test]
fn a_parameter_in_no_group_is_named() {
    let _rng = BURN_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let backbone = TinyNet::<Ad>::new(&device);
    let head = CosineHead::<Ad> {
        centres: Param::from_tensor(Tensor::zeros([4, 8], &device)),
    };
    let tmp = tempfile::tempdir().unwrap();
    let err = trainer::Learner::new(backbone, head, settings(), &[device])
        .with_groups(vec![ParamGroup::new("backbone", &["backbone"], 0.0)])
        .fit(&loader(), tmp.path(), |_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("head.centres"), "{err}");
}
