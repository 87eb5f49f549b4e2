//! Continual learning at toy size: a base run on synthetic people 0..6, then rounds on people
//! 4..8 (4 and 5 known, 6 and 7 new). Covers head growth by name, weight imprinting, frozen
//! and last-stage training, the replay buffer, distillation from the old model, resume, and the
//! bad input a user can give.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use eval::{embed_normalized, BurnEmbedder, Embedder};
use face_data::{FaceDataset, RecordDataset, SyntheticConfig, SyntheticFaces};
use iresnet::AnyBackbone;
use test_support::tiny_training::tiny_training;
use trainer::continual::{ContinualConfig, Trainable};
use trainer::{load_run, resume, train, DataSource, TrainConfig};

type Ad = burn::backend::Autodiff<burn::backend::Flex>;
type In = burn::backend::Flex;

fn base(dir: &Path) {
    let mut config = tiny_training();
    config.epochs = 3.0;
    train::<Ad>(&config, dir, &[Default::default()], |_| {}).unwrap();
}

fn people(first: u64, identities: usize) -> SyntheticConfig {
    match tiny_training().data {
        DataSource::Synthetic(s) => SyntheticConfig {
            first_identity: first,
            identities,
            ..s
        },
        _ => unreachable!("the tiny run is synthetic"),
    }
}

fn round(from: &Path, trainable: Trainable, epochs: f64) -> TrainConfig {
    let mut config = tiny_training();
    config.epochs = epochs;
    config.data = DataSource::Synthetic(people(4, 4));
    config.continual = Some(ContinualConfig {
        from: from.to_path_buf(),
        train: trainable,
        replay: 12,
        eval_images: 4,
        ..Default::default()
    });
    config
}

fn centres(dir: &Path) -> (Vec<String>, Vec<Vec<f32>>, AnyBackbone<In>) {
    let run = load_run::<Ad>(dir, &Default::default()).unwrap();
    let model = run.model.valid();
    let c = model.head.centres.val();
    let dim = c.dims()[1];
    let rows = c.to_data().to_vec::<f32>().unwrap();
    let rows = rows.chunks(dim).map(<[f32]>::to_vec).collect();
    (run.names.unwrap(), rows, model.backbone)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    eval::cosine(a, b) / (eval::cosine(a, a).sqrt() * eval::cosine(b, b).sqrt())
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[test]
fn imprinting_alone_grows_the_head_by_name_and_keeps_the_old_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    base(&a);
    let report = train::<Ad>(
        &round(&a, Trainable::Head, 0.0),
        &b,
        &[Default::default()],
        |_| {},
    )
    .unwrap();
    assert_eq!(report.steps, 0);
    for key in [
        "old_identification",
        "new_identification",
        "new_verification",
    ] {
        assert!(report.evals.contains_key(key), "{:?}", report.evals);
    }
    let (old_names, old_rows, backbone) = centres(&a);
    let (names, rows, _) = centres(&b);
    // People 4 and 5 were known: they keep their rows; 6 and 7 are added once each.
    assert_eq!(names.len(), 8);
    assert_eq!(names[..6], old_names[..]);
    assert_eq!(names[6..], ["synthetic-0-6", "synthetic-0-7"]);
    assert_eq!(rows[..6], old_rows[..]);
    // A new row starts from its person's mean normalised embedding, turned away from it
    // (calibrated to the old centres' cosine with their faces), at the old rows' mean length.
    let data = SyntheticFaces::train(people(6, 1)).unwrap();
    let faces: Vec<_> = (0..data.len())
        .map(|i| data.get(i).unwrap().image)
        .collect();
    let embedder = BurnEmbedder::new(backbone, Default::default());
    assert_eq!(embedder.embedding_dim(), 16);
    let e = embed_normalized(&embedder, &faces, false, |_| {}).unwrap();
    let mean: Vec<f32> = (0..16).map(|k| e.iter().map(|v| v[k]).sum()).collect();
    // Turned, not left on the mean: the old centres sit further from their faces than a mean
    // does from its own, so calibration must have moved the imprint (uncalibrated, this is 1).
    let turned = cosine(&rows[6], &mean);
    assert!(turned > 0.1 && turned < 0.99, "{turned}");
    let old_norm = old_rows.iter().map(|r| norm(r)).sum::<f32>() / 6.0;
    assert!((norm(&rows[6]) - old_norm).abs() < 1e-3 * old_norm);
}

#[test]
fn a_head_round_leaves_the_backbone_exactly_and_replays_herded_exemplars() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    base(&a);
    let report = train::<Ad>(
        &round(&a, Trainable::Head, 2.0),
        &b,
        &[Default::default()],
        |_| {},
    )
    .unwrap();
    // 16 new images and 12 exemplars: 3 full batches of 8 an epoch.
    assert_eq!(report.steps, 6);
    let (_, old_rows, old_backbone) = centres(&a);
    let (_, rows, backbone) = centres(&b);
    assert_ne!(rows[..6], old_rows[..], "the head trained");
    // Frozen, in inference mode: weights and BatchNorm statistics as they were.
    let faces: Vec<_> = (0..4)
        .map(|i| {
            SyntheticFaces::train(people(0, 6))
                .unwrap()
                .get(i)
                .unwrap()
                .image
        })
        .collect();
    let embed = |b: AnyBackbone<In>| {
        BurnEmbedder::new(b, Default::default())
            .embed(&faces)
            .unwrap()
    };
    assert_eq!(embed(old_backbone), embed(backbone));
    // The buffer: 2 exemplars of each of the 6 old people, under their names.
    let replay = RecordDataset::open(b.join("replay.rec")).unwrap();
    assert_eq!(replay.len(), 12);
    let mut per = vec![0; replay.num_identities()];
    (0..12).for_each(|i| per[replay.label(i).unwrap()] += 1);
    assert_eq!(per, [2; 6]);
    assert_eq!(replay.identity_name(5).as_deref(), Some("synthetic-0-5"));
    let metrics = trainer::read_metrics(&b.join("metrics.jsonl")).unwrap();
    let last = metrics.last().unwrap();
    assert!(
        last.evals.contains_key("old_verification"),
        "{:?}",
        last.evals
    );
}

#[test]
fn a_last_stage_round_with_distillation_trains_the_last_stage_and_resumes_on_its_curve() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    base(&a);
    let mut config = round(&a, Trainable::LastStage, 2.0);
    config.continual.as_mut().unwrap().distill = Some(distill::DistillConfig::default());
    config.checkpoint.every_steps = 1;
    config.checkpoint.keep_last = 20;
    assert_eq!(TrainConfig::from_toml(&config.to_toml()).unwrap(), config);
    let (whole, cut) = (tmp.path().join("whole"), tmp.path().join("cut"));
    train::<Ad>(&config, &whole, &[Default::default()], |_| {}).unwrap();
    train::<Ad>(&config, &cut, &[Default::default()], |_| {}).unwrap();
    for step in 4..=8 {
        let _ = std::fs::remove_dir_all(cut.join(format!("checkpoints/step-{step:06}")));
    }
    let _ = std::fs::remove_file(cut.join("checkpoints/best.json"));
    let report = resume::<Ad>(&cut, &[Default::default()], |_| {}).unwrap();
    assert_eq!(report.resumed_from_step, Some(3));
    let losses = |dir: &Path| -> Vec<(f64, f64)> {
        (trainer::read_metrics(&dir.join("metrics.jsonl"))
            .unwrap()
            .iter())
        .map(|m| (m.loss, m.terms["distill"]))
        .collect()
    };
    assert_eq!(
        losses(&whole),
        losses(&cut),
        "the resumed round takes the same path"
    );
    assert!(losses(&whole)
        .iter()
        .all(|(_, d)| d.is_finite() && *d >= 0.0));

    let layer = |b: &AnyBackbone<In>, stage: usize| -> Vec<f32> {
        let AnyBackbone::IResNet(net) = b else {
            unreachable!()
        };
        let layers = [&net.layer1, &net.layer2, &net.layer3, &net.layer4];
        let w: Tensor<In, 4> = layers[stage][0].conv1.weight.val();
        w.to_data().to_vec().unwrap()
    };
    let (_, _, old) = centres(&a);
    let (_, _, new) = centres(&whole);
    assert_eq!(layer(&old, 0), layer(&new, 0), "layer1 is frozen");
    assert_eq!(layer(&old, 2), layer(&new, 2), "layer3 is frozen");
    assert_ne!(layer(&old, 3), layer(&new, 3), "layer4 trained");
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    base(&a);
    let error = |config: &TrainConfig, out: &str| -> String {
        let out = tmp.path().join(out);
        let run = train::<Ad>(config, &out, &[Default::default()], |_| {});
        run.expect_err("refused").to_string()
    };
    // A model file has no head.
    let message = error(&round(&a.join("model.arcface"), Trainable::Head, 1.0), "m");
    assert!(message.contains("not a training run folder"), "{message}");

    // New data that gives one name to two people.
    let rec = tmp.path().join("clash.rec");
    let data = SyntheticFaces::train(people(10, 3)).unwrap();
    face_data::pack_dataset(&data, &rec, |_| {}).unwrap();
    let names: Vec<String> = ["x", "y", "x"].map(String::from).to_vec();
    face_data::write_label_map(&names, &face_data::recordio::names_path(&rec)).unwrap();
    let mut config = round(&a, Trainable::Head, 1.0);
    config.data = DataSource::Rec { path: rec };
    config.early_stopping.metric = trainer::StopMetric::Off;
    let message = error(&config, "c");
    assert!(
        message.contains("label clash") && message.contains("\"x\""),
        "{message}"
    );

    // An identity without images.
    let folder = tmp.path().join("folder");
    std::fs::create_dir_all(folder.join("ann")).unwrap();
    std::fs::create_dir_all(folder.join("bob")).unwrap();
    data.get(0)
        .unwrap()
        .image
        .save(folder.join("bob/1.png"))
        .unwrap();
    config.data = DataSource::Folder { path: folder };
    let message = error(&config, "e");
    assert!(
        message.contains("ann") && message.contains("no images"),
        "{message}"
    );

    // Too few new images for one batch (the loader drops short batches).
    let mut config = round(&a, Trainable::Head, 1.0);
    config.data = DataSource::Synthetic(people(10, 1));
    config.continual.as_mut().unwrap().replay = 0;
    let message = error(&config, "s");
    assert!(message.contains("4 images make no batch of 8"), "{message}");

    // Stages out of range.
    let mut config = round(&a, Trainable::LastStage, 1.0);
    config.continual.as_mut().unwrap().stages = 5;
    assert!(error(&config, "g").contains("continual.stages = 5"));

    // Fewer exemplars than old people; a different backbone; distilling into a frozen one.
    let mut config = round(&a, Trainable::Head, 1.0);
    config.continual.as_mut().unwrap().replay = 5;
    assert!(error(&config, "r").contains("fewer exemplars than the 6 old identities"));
    let mut config = round(&a, Trainable::Head, 1.0);
    config.backbone = config.backbone.with_embedding_dim(8);
    assert!(error(&config, "d").contains("a continual round keeps the old backbone"));
    let mut config = round(&a, Trainable::Head, 1.0);
    config.continual.as_mut().unwrap().distill = Some(Default::default());
    assert!(error(&config, "f").contains("nothing to distil into"));
}
