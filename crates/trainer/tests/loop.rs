//! The training loop end to end on a tiny model, and config errors.

use face_data::SyntheticConfig;
use iresnet::{BackboneConfig, IResNetConfig};
use trainer::{train, DataSource, EvalSettings, TrainConfig};

type Ad = burn::backend::Autodiff<burn::backend::Flex>;

fn tiny() -> TrainConfig {
    TrainConfig {
        epochs: 2.0,
        time_limit_secs: 0,
        backbone: BackboneConfig::IResNet(
            IResNetConfig::new([1, 1, 1, 1])
                .with_widths([4, 8, 8, 16])
                .with_embedding_dim(16),
        ),
        data: DataSource::Synthetic(SyntheticConfig {
            identities: 6,
            per_identity: 4,
            held_out: 10,
            ..Default::default()
        }),
        loader: face_data::LoaderConfig {
            batch_size: 8,
            ..Default::default()
        },
        eval: EvalSettings {
            every_steps: 2,
            pairs: 10,
            flip_test: true,
        },
        log_every: 1,
        ..TrainConfig::default()
    }
}

#[test]
fn a_tiny_run_writes_config_metrics_model_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let mut steps = Vec::new();
    let report = train::<Ad>(&tiny(), tmp.path(), &Default::default(), |s| {
        steps.push(s.clone())
    })
    .unwrap();
    // 24 images / batch 8 = 3 steps per epoch, 2 epochs.
    assert_eq!(report.steps, 6);
    assert_eq!(steps.len(), 6);
    assert!(steps.iter().all(|s| s.loss.is_finite() && s.lr >= 0.0));
    assert!(steps.iter().filter(|s| s.accuracy.is_some()).count() >= 3);
    assert!((0.0..=1.0).contains(&report.final_accuracy));
    let metrics = std::fs::read_to_string(tmp.path().join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 6);
    let (model, header) =
        iresnet::record::load_model::<burn::backend::Flex>(&report.model, &Default::default())
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
