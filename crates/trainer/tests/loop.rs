//! The training loop end to end on a tiny model, and config errors.

use face_data::SyntheticConfig;
use trainer::{resume, train, Algorithm, EarlyStopping, StepInfo, StopMetric, TrainConfig};

type Ad = burn::backend::Autodiff<burn::backend::Flex>;

use test_support::tiny_training;

fn tiny() -> TrainConfig {
    tiny_training::tiny_training()
}

#[test]
fn a_tiny_run_writes_config_metrics_model_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let mut steps = Vec::new();
    let report = train::<Ad>(&tiny(), tmp.path(), &[Default::default()], |s| {
        steps.push(s.clone())
    })
    .unwrap();
    // 24 images / batch 8 = 3 steps per epoch, 2 epochs.
    assert_eq!(report.steps, 6);
    assert_eq!(steps.len(), 6);
    assert!(steps.iter().all(|s| s.loss.is_finite() && s.lr >= 0.0));
    assert!(steps.iter().filter(|s| s.accuracy.is_some()).count() >= 3);
    assert!((0.0..=1.0).contains(&report.final_accuracy.unwrap()));
    let share = report.collapse_share.unwrap();
    assert!(share > 0.0 && share <= 1.0, "{share}");
    // Checkpoints at every evaluation (steps 2, 4, 6), the last two kept plus the best.
    let kept = trainer::Checkpointer::new(tmp.path(), 2)
        .unwrap()
        .steps()
        .unwrap();
    assert!(kept.ends_with(&[4, 6]), "{kept:?}");
    // Plots of loss, lr and accuracy, as PNG images.
    assert_eq!(report.plots.len(), 3);
    for plot in &report.plots {
        assert!(
            image::open(plot).unwrap().width() >= 200,
            "{}",
            plot.display()
        );
    }
    // A second run into the same directory is refused rather than mixing two runs.
    let again = train::<Ad>(&tiny(), tmp.path(), &[Default::default()], |_| {}).unwrap_err();
    assert!(again.to_string().contains("--resume"), "{again}");
    let metrics = std::fs::read_to_string(tmp.path().join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 6);
    let (model, header) = iresnet::record::load_model::<burn::backend::Flex>(
        report.model.as_ref().unwrap(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(iresnet::Backbone::embedding_dim(&model), 16);
    assert_eq!(header.source, "arcface train");
    let saved =
        TrainConfig::from_toml(&std::fs::read_to_string(tmp.path().join("config.toml")).unwrap())
            .unwrap();
    assert_eq!(saved, tiny());
}

#[test]
fn bad_configs_name_the_problem() {
    let unknown = format!(
        "{}\nlearning_rate = 0.1\n",
        TrainConfig::default().to_toml()
    );
    assert!(TrainConfig::from_toml(&unknown)
        .unwrap_err()
        .to_string()
        .contains("learning_rate"));
    let cases = [
        ("epochs = 2.2", "epochs = -1.0", "epochs"),
        ("accumulation = 1", "accumulation = 0", "accumulation"),
        ("clip_norm = 5.0", "clip_norm = -5.0", "clip_norm"),
        ("base_lr = 0.1", "base_lr = 0.0", "schedule"),
    ];
    for (from, to, field) in cases {
        let text = TrainConfig::default().to_toml().replacen(from, to, 1);
        assert_ne!(text, TrainConfig::default().to_toml(), "{from} not found");
        let err = TrainConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains(field), "{to}: {err}");
    }
    let mut pfc = TrainConfig::default();
    pfc.head.sample_rate = 0.5;
    pfc.accumulation = 2;
    assert!(pfc
        .validate()
        .unwrap_err()
        .to_string()
        .contains("Partial FC"));
    assert!(TrainConfig::default().validate().is_ok());
}

fn losses(steps: &[StepInfo]) -> Vec<(u64, f64, Option<f64>)> {
    steps.iter().map(|s| (s.step, s.loss, s.accuracy)).collect()
}

fn metrics_of(dir: &std::path::Path) -> Vec<StepInfo> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn resuming_from_a_checkpoint_continues_the_same_curve() {
    let mut config = tiny();
    config.epochs = 3.0;
    config.checkpoint.every_steps = 1;
    config.checkpoint.keep_last = 20;
    config.head.margin = arcface_loss::ArcFace::default().into();
    let whole = tempfile::tempdir().unwrap();
    train::<Ad>(&config, whole.path(), &[Default::default()], |_| {}).unwrap();

    // The same run stopped after step 5 (its later checkpoints deleted as if never written,
    // and metrics lines past them left behind as a crash leaves them), then resumed.
    let cut = tempfile::tempdir().unwrap();
    train::<Ad>(&config, cut.path(), &[Default::default()], |_| {}).unwrap();
    let dir = cut.path().join("checkpoints");
    for step in 6..=9 {
        let _ = std::fs::remove_dir_all(dir.join(format!("step-{step:06}")));
    }
    let _ = std::fs::remove_file(dir.join("best.json"));
    let report = resume::<Ad>(cut.path(), &[Default::default()], |_| {}).unwrap();
    assert_eq!(report.resumed_from_step, Some(5));
    assert_eq!(report.steps, 9);
    let (a, b) = (metrics_of(whole.path()), metrics_of(cut.path()));
    assert_eq!(a.len(), 9);
    assert_eq!(
        losses(&a),
        losses(&b),
        "bit-identical loss and accuracy per step"
    );
}

#[test]
fn adamw_with_its_own_head_group_trains() {
    let mut config = tiny();
    config.optimizer.algorithm = Algorithm::AdamW;
    config.optimizer.weight_decay = 0.05;
    config.optimizer.head.lr_scale = 10.0;
    config.optimizer.head.weight_decay = Some(0.0);
    config.schedule = trainer::ScheduleConfig::ThreeStage {
        base_lr: 1e-3,
        warmup_epochs: 0.5,
        final_fraction: 0.2,
        final_lr: 1e-5,
    };
    config.epochs = 4.0;
    config.checkpoint.every_steps = 1;
    config.checkpoint.keep_last = 20;
    let tmp = tempfile::tempdir().unwrap();
    let mut steps = Vec::new();
    train::<Ad>(&config, tmp.path(), &[Default::default()], |s| {
        steps.push(s.clone())
    })
    .unwrap();
    let first = steps[..3].iter().map(|s| s.loss).sum::<f64>();
    let last = steps[steps.len() - 3..].iter().map(|s| s.loss).sum::<f64>();
    assert!(
        last < first,
        "AdamW did not lower the loss: {first} -> {last}"
    );
    // Resuming AdamW restores its moments (a fresh AdamW would take a different step). Both
    // curves are read from the file: serde_json's float parsing is not bit-exact.
    let before = losses(&metrics_of(tmp.path()));
    let dir = tmp.path().join("checkpoints");
    let kept = trainer::Checkpointer::new(tmp.path(), 20)
        .unwrap()
        .steps()
        .unwrap();
    assert_eq!(kept.len(), 12);
    for &step in kept.iter().filter(|&&s| s > 8) {
        std::fs::remove_dir_all(dir.join(format!("step-{step:06}"))).unwrap();
    }
    let _ = std::fs::remove_file(dir.join("best.json"));
    resume::<Ad>(tmp.path(), &[Default::default()], |_| {}).unwrap();
    assert_eq!(losses(&metrics_of(tmp.path())), before);
}

#[test]
fn early_stopping_ends_a_run_that_stopped_improving() {
    let mut config = tiny();
    config.epochs = 40.0;
    config.eval.every_steps = 1;
    // No change can beat the first evaluation by more than min_delta.
    config.early_stopping = EarlyStopping {
        metric: StopMetric::ValidationLoss,
        patience: 3,
        min_delta: 1e9,
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut steps = Vec::new();
    let report = train::<Ad>(&config, tmp.path(), &[Default::default()], |s| {
        steps.push(s.clone())
    })
    .unwrap();
    assert!(report.stopped_early);
    // Evaluation 1 sets the best; 2, 3, 4 do not beat it.
    assert_eq!(report.steps, 4);
    assert!(steps.iter().all(|s| s.validation_loss.is_some()));
    assert!(report.plots.iter().any(|p| p.ends_with("loss.png")));
}

#[test]
fn two_devices_train_data_parallel() {
    let tmp = tempfile::tempdir().unwrap();
    let devices = [Default::default(), Default::default()];
    let mut steps = Vec::new();
    let report = train::<Ad>(&tiny(), tmp.path(), &devices, |s| steps.push(s.clone())).unwrap();
    assert_eq!(report.devices, 2);
    assert_eq!(report.steps, 6);
    assert!(steps
        .iter()
        .all(|s| s.loss.is_finite() && s.grad_norm > 0.0));
    // Partial FC is single-device here: refused with the reason.
    let mut pfc = tiny();
    pfc.head.sample_rate = 0.5;
    let other = tempfile::tempdir().unwrap();
    let err = train::<Ad>(&pfc, other.path(), &devices, |_| {}).unwrap_err();
    assert!(err.to_string().contains("Partial FC"), "{err}");
}

#[test]
fn bf16_mixed_precision_trains_close_to_f32() {
    let (f32_dir, bf16_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut config = tiny();
    config.epochs = 4.0;
    let mut f32_steps = Vec::new();
    train::<Ad>(&config, f32_dir.path(), &[Default::default()], |s| {
        f32_steps.push(s.clone())
    })
    .unwrap();
    config.precision = trainer::Precision::Bf16;
    let mut bf16_steps = Vec::new();
    train::<Ad>(&config, bf16_dir.path(), &[Default::default()], |s| {
        bf16_steps.push(s.clone())
    })
    .unwrap();
    // Same weights and batch at step 1: the loss differs only by bf16 rounding.
    let (a, b) = (f32_steps[0].loss, bf16_steps[0].loss);
    assert!(a != b && (a - b).abs() < 0.05 * a, "f32 {a} vs bf16 {b}");
    let first = bf16_steps[..3].iter().map(|s| s.loss).sum::<f64>();
    let last = bf16_steps[bf16_steps.len() - 3..]
        .iter()
        .map(|s| s.loss)
        .sum::<f64>();
    assert!(
        last < first,
        "bf16 did not lower the loss: {first} -> {last}"
    );
}

#[test]
fn verification_runs_on_a_bin_file_and_on_lfw_style_pairs() {
    use face_data::{FaceDataset, SyntheticFaces, VerificationBin};
    let tmp = tempfile::tempdir().unwrap();
    // Held-out synthetic faces stand in for a real set: 20 pairs, as a .bin and as LFW folders.
    let held = SyntheticFaces::held_out(SyntheticConfig {
        identities: 6,
        per_identity: 4,
        held_out: 10,
        seed: 77,
        ..Default::default()
    })
    .unwrap();
    let pairs = face_data::verification_pair_indices(&held, 10, 1).unwrap();
    let mut bin = VerificationBin {
        images: vec![],
        issame: vec![],
    };
    let lfw = tmp.path().join("lfw");
    let (mut matched, mut mismatched) = (String::new(), String::new());
    for (k, (a, b, same)) in pairs.iter().enumerate() {
        let (fa, fb) = (held.get(*a).unwrap().image, held.get(*b).unwrap().image);
        bin.images.push(face_data::encode_png(&fa).unwrap());
        bin.images.push(face_data::encode_png(&fb).unwrap());
        bin.issame.push(*same);
        // Each LFW "person" is one pair's first face; the second is image 2 of the same name or
        // image 1 of another name.
        let (p, q) = (format!("p{k:02}"), format!("q{k:02}"));
        std::fs::create_dir_all(lfw.join(&p)).unwrap();
        fa.save(lfw.join(&p).join(format!("{p}_0001.jpg"))).unwrap();
        if *same {
            fb.save(lfw.join(&p).join(format!("{p}_0002.jpg"))).unwrap();
            matched += &format!("{p}\t1\t2\n");
        } else {
            std::fs::create_dir_all(lfw.join(&q)).unwrap();
            fb.save(lfw.join(&q).join(format!("{q}_0001.jpg"))).unwrap();
            mismatched += &format!("{p}\t1\t{q}\t1\n");
        }
    }
    let bin_path = tmp.path().join("pairs.bin");
    bin.write(&bin_path).unwrap();
    let pairs_txt = tmp.path().join("pairs.txt");
    std::fs::write(&pairs_txt, format!("1\t10\n{matched}{mismatched}")).unwrap();

    for data in [
        trainer::EvalData::Bin {
            path: bin_path.clone(),
        },
        trainer::EvalData::Lfw {
            pairs: pairs_txt.clone(),
            images: lfw.clone(),
        },
    ] {
        let mut config = tiny();
        config.eval.data = data.clone();
        let out = tmp.path().join(format!(
            "run-{}",
            matches!(data, trainer::EvalData::Bin { .. })
        ));
        let report = train::<Ad>(&config, &out, &[Default::default()], |_| {}).unwrap();
        let acc = report.final_accuracy.expect("verified");
        assert!((0.0..=1.0).contains(&acc), "{data:?}: {acc}");
    }

    // Faces that are not aligned 112x112 crops are refused with the reason.
    let big = image::RgbImage::new(250, 250);
    bin.images[3] = face_data::encode_png(&big).unwrap();
    bin.write(&bin_path).unwrap();
    let mut config = tiny();
    config.eval.data = trainer::EvalData::Bin { path: bin_path };
    let err = train::<Ad>(
        &config,
        &tmp.path().join("bad"),
        &[Default::default()],
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("250x250") && err.contains("aligned"), "{err}");
}
