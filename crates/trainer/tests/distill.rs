//! `[distill]` end to end at toy size: a teacher run, then a student run that distils it (online,
//! all three terms), its term logged; the section round-trips through `config.toml` (so
//! `--resume` keeps it); and what cannot work is refused with the reason.

use distill::DistillConfig;
use test_support::tiny_training::tiny_training;
use trainer::{train, TrainConfig, TrainError};

type Ad = burn::backend::Autodiff<burn::backend::Flex>;

fn teacher_run(dir: &std::path::Path) {
    let mut teacher = tiny_training();
    teacher.epochs = 3.0;
    train::<Ad>(&teacher, dir, &[Default::default()], |_| {}).unwrap();
}

fn student(teacher: &std::path::Path, logit: f32) -> TrainConfig {
    let mut config = tiny_training();
    config.epochs = 4.0;
    config.distill = Some(DistillConfig {
        teacher: teacher.to_path_buf(),
        embedding: 1.0,
        logit,
        temperature: 2.0,
        scale: 16.0,
        relational: 1.0,
        ..Default::default()
    });
    config
}

#[test]
fn a_student_distils_a_teacher_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (teacher_dir, student_dir) = (tmp.path().join("teacher"), tmp.path().join("student"));
    teacher_run(&teacher_dir);
    let config = student(&teacher_dir, 0.5);
    // The section survives the run folder's config.toml, which --resume reads.
    assert_eq!(TrainConfig::from_toml(&config.to_toml()).unwrap(), config);
    let mut steps = Vec::new();
    let report = train::<Ad>(&config, &student_dir, &[Default::default()], |s| {
        steps.push(s.clone())
    })
    .unwrap();
    assert_eq!(report.steps, 12);
    let terms: Vec<f64> = steps.iter().map(|s| s.terms["distill"]).collect();
    assert!(terms.iter().all(|t| t.is_finite() && *t > 0.0), "{terms:?}");
    let (first, last) = (
        terms[..3].iter().sum::<f64>(),
        terms[9..].iter().sum::<f64>(),
    );
    assert!(
        last < first,
        "the distillation term did not fall: {terms:?}"
    );
    let metrics = trainer::read_metrics(&student_dir.join("metrics.jsonl")).unwrap();
    assert!(metrics.iter().all(|m| m.terms.contains_key("distill")));
}

#[test]
fn impossible_distillation_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher_dir = tmp.path().join("teacher");
    teacher_run(&teacher_dir);
    let run = |config: &TrainConfig| {
        train::<Ad>(config, &tmp.path().join("s"), &[Default::default()], |_| {})
    };
    // A model file has no head, so no class centres for the logit term.
    let err = run(&student(&teacher_dir.join("model.arcface"), 0.5)).unwrap_err();
    assert!(err.to_string().contains("class centres"), "{err}");
    // Embeddings of different sizes cannot be compared directly.
    let mut wide = student(&teacher_dir, 0.0);
    wide.backbone = iresnet::BackboneConfig::IResNet(
        iresnet::IResNetConfig::new([1, 1, 1, 1])
            .with_widths([4, 8, 8, 16])
            .with_embedding_dim(32),
    );
    let err = run(&wide).unwrap_err();
    assert!(err.to_string().contains("16 values"), "{err}");
    // A teacher that is not there says so.
    let err = run(&student(&tmp.path().join("nowhere"), 0.0)).unwrap_err();
    assert!(
        matches!(err, TrainError::Backbone(_) | TrainError::Io { .. }),
        "{err}"
    );
    // Zero weights distil nothing: a config error before anything runs.
    let mut none = student(&teacher_dir, 0.0);
    if let Some(d) = &mut none.distill {
        d.embedding = 0.0;
        d.relational = 0.0;
    }
    assert!(matches!(run(&none), Err(TrainError::Config(_))));
}
