//! Multimodal fusion end to end at toy size: early and late fusion train on RGB, near-infrared
//! and depth with modality dropout, checkpoint, resume, and verify under day, night and
//! missing-depth conditions; late fusion leaves a missing modality out of the fusion.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use face_data::{Modality, SyntheticConfig};
use iresnet::Backbone;
use trainer::multimodal::{FusionModel, FusionRun};

type Ad = Autodiff<Flex>;

fn toy(model: FusionModel) -> FusionRun {
    FusionRun {
        model,
        modalities: vec![Modality::Rgb, Modality::Nir, Modality::Depth],
        modality_dropout: 0.3,
        data: SyntheticConfig {
            identities: 6,
            per_identity: 4,
            held_out: 6,
            night: 0.5,
            ..SyntheticConfig::default()
        },
        widths: [4, 4, 8, 8],
        embedding_dim: 16,
        epochs: 2.0,
        batch_size: 8,
        pairs: 20,
        ..FusionRun::default()
    }
}

#[test]
fn early_and_late_fusion_train_checkpoint_and_verify_under_every_condition() {
    for model in [
        FusionModel::Early,
        FusionModel::Late,
        FusionModel::LateWeighted,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut losses = Vec::new();
        let run = toy(model);
        let report = run
            .run::<Ad>(tmp.path(), &Default::default(), false, |s| {
                losses.push(s.loss)
            })
            .unwrap();
        // 24 images / 8 = 3 steps an epoch, 2 epochs.
        assert_eq!(report.train.steps, 6, "{model:?}");
        assert!(
            losses.iter().all(|l| l.is_finite()),
            "{model:?}: {losses:?}"
        );
        let names: Vec<&str> = report.accuracy.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["day", "day_no_depth", "night", "night_no_depth"],
            "{model:?}"
        );
        assert!(report.accuracy.values().all(|a| (0.0..=1.0).contains(a)));
        assert!(
            tmp.path().join("checkpoints").read_dir().unwrap().count() > 0,
            "{model:?} wrote no checkpoint"
        );
        // Resuming a finished run trains no further and reports the same model's accuracy.
        let again = run
            .run::<Ad>(tmp.path(), &Default::default(), true, |_| {})
            .unwrap();
        assert_eq!(again.train.steps, 6);
        assert_eq!(again.accuracy, report.accuracy, "{model:?}");
    }
}

#[test]
fn a_model_over_one_modality_reads_its_planes_only() {
    let run = FusionRun {
        modalities: vec![Modality::Nir],
        modality_dropout: 0.0,
        ..toy(FusionModel::Early)
    };
    let tmp = tempfile::tempdir().unwrap();
    let report = run
        .run::<Ad>(tmp.path(), &Default::default(), false, |_| {})
        .unwrap();
    let names: Vec<&str> = report.accuracy.keys().map(String::as_str).collect();
    assert_eq!(names, ["day", "night"]);
    // Night does not touch the infrared image: the same pairs score the same.
    assert_eq!(report.accuracy["day"], report.accuracy["night"]);
}

#[test]
fn late_fusion_leaves_a_missing_modality_out() {
    let device = Default::default();
    for model in [FusionModel::Late, FusionModel::LateWeighted] {
        let net = toy(model).late_config().init::<Flex>(&device).unwrap();
        assert_eq!(net.input_channels(), 5);
        let x: Tensor<Flex, 4> = Tensor::random([2, 5, 112, 112], Distribution::Default, &device);
        // Depth (plane 4) missing from sample 0 only.
        let mut mask = Tensor::<Flex, 4>::ones([2, 5, 112, 112], &device);
        mask = mask.slice_assign(
            [0..1, 4..5, 0..112, 0..112],
            Tensor::zeros([1, 1, 112, 112], &device),
        );
        let without = net.embed(x.clone() * mask);
        let full = net.embed(x.clone());
        let row = |t: &Tensor<Flex, 2>, i: usize| -> Vec<f32> {
            t.clone().narrow(0, i, 1).into_data().to_vec().unwrap()
        };
        // Sample 1 still has everything; sample 0 changes.
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(p, q)| (p - q).abs() < 1e-4);
        assert!(close(&row(&without, 1), &row(&full, 1)), "{model:?}");
        assert!(!close(&row(&without, 0), &row(&full, 0)), "{model:?}");
        if model == FusionModel::LateWeighted {
            // With equal weights and depth missing, the fusion is the mean of the unit RGB
            // and NIR embeddings.
            let unit = |v: Vec<f32>| {
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / n).collect::<Vec<_>>()
            };
            let branch = |k: usize, first: usize, planes: usize| {
                let b = &net.branches[k];
                row(&b.embed(x.clone().narrow(1, first, planes)), 0)
            };
            let (r, n) = (unit(branch(0, 0, 3)), unit(branch(1, 3, 1)));
            let mean: Vec<f32> = r.iter().zip(&n).map(|(a, b)| (a + b) / 2.0).collect();
            assert!(close(&row(&without, 0), &mean));
        }
    }
}

#[test]
fn arcface_train_refuses_multimodal_settings_and_says_where_they_go() {
    let mut config = trainer::TrainConfig::default();
    config.loader.modalities = vec![Modality::Rgb, Modality::Nir];
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("arcface multimodal"), "{err}");
    let config = trainer::TrainConfig {
        backbone: iresnet::BackboneConfig::IResNet(
            iresnet::IResNetConfig::new([1, 1, 1, 1]).with_in_channels(5),
        ),
        ..Default::default()
    };
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("in_channels"), "{err}");
}
