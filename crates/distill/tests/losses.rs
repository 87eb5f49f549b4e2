//! The distillation losses against PyTorch 2.15 (float64; tools/make_distill_fixtures.py): values
//! and gradients with respect to the student's embeddings, and hand-computed cases.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use distill::{embedding_loss, logit_loss, relational_loss, DistillConfig, EmbeddingDistance};
use test_support::read_json;

type B = Autodiff<Flex>;

fn matrix(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f64) -> Tensor<B, 2> {
    let data: Vec<f32> = (0..rows * cols)
        .map(|k| f(k / cols, k % cols) as f32)
        .collect();
    Tensor::from_data(TensorData::new(data, [rows, cols]), &Default::default())
}

/// The fixture's inputs (the same formulas as the script).
fn inputs(n: usize, d: usize, c: usize) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) {
    let s = |i: usize, j: usize| (0.7 * i as f64 + 0.31 * j as f64 + 0.2).sin();
    let student = matrix(n, d, s);
    let teacher = matrix(n, d, |i, j| {
        (0.45 * i as f64 - 0.27 * j as f64 + 0.1).cos() + 0.3 * s(i, j)
    });
    let centres = matrix(c, d, |k, j| {
        (1.3 * k as f64 + 0.17 * j as f64 * (k + 1) as f64).sin()
    });
    (student, teacher, centres)
}

fn scalar(t: Tensor<B, 1>) -> f32 {
    t.into_data().to_vec::<f32>().unwrap()[0]
}

#[test]
fn losses_and_gradients_match_pytorch() {
    let fx = read_json("distill/losses.json");
    let dims = |k: &str| fx[k].as_u64().unwrap() as usize;
    let (n, d, c) = (dims("n"), dims("d"), dims("c"));
    for (name, case) in fx["losses"].as_object().unwrap() {
        let (student, teacher, centres) = inputs(n, d, c);
        let student = student.require_grad();
        let loss = match name.as_str() {
            "embedding_cosine" => {
                embedding_loss(student.clone(), teacher, EmbeddingDistance::Cosine)
            }
            "embedding_l2" => embedding_loss(student.clone(), teacher, EmbeddingDistance::L2),
            "logit_s64_t4" => logit_loss(student.clone(), teacher, centres, 64.0, 4.0),
            "logit_s10_t2" => logit_loss(student.clone(), teacher, centres, 10.0, 2.0),
            "relational" => relational_loss(student.clone(), teacher),
            other => panic!("a fixture case without a test: {other}"),
        };
        let want = case["value"].as_f64().unwrap() as f32;
        let got = scalar(loss.clone());
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{name}: {got} vs PyTorch {want}"
        );
        let grads = loss.backward();
        let grad: Vec<f32> = student.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let want: Vec<f32> = case["grad_student"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let worst = grad
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-4 * scale,
            "{name}: gradient off by {worst} (scale {scale})"
        );
    }
}

#[test]
fn hand_computed_cases() {
    // A student equal to its teacher (up to scale) has nothing left to learn.
    let (s, _, w) = inputs(4, 8, 3);
    let t = s.clone().mul_scalar(3.0);
    for loss in [
        embedding_loss(s.clone(), t.clone(), EmbeddingDistance::Cosine),
        embedding_loss(s.clone(), t.clone(), EmbeddingDistance::L2),
        logit_loss(s.clone(), t.clone(), w, 64.0, 4.0),
        relational_loss(s.clone(), t),
    ] {
        assert!(scalar(loss).abs() < 1e-5);
    }
    // Orthogonal unit vectors: cos = 0, so 1 - cos = 1 and |s - t|^2 = 2.
    let s = matrix(2, 2, |i, j| (i == j) as u8 as f64);
    let t = matrix(2, 2, |i, j| (i != j) as u8 as f64);
    let cosine = scalar(embedding_loss(
        s.clone(),
        t.clone(),
        EmbeddingDistance::Cosine,
    ));
    let l2 = scalar(embedding_loss(s.clone(), t.clone(), EmbeddingDistance::L2));
    assert!((cosine - 1.0).abs() < 1e-6 && (l2 - 2.0).abs() < 1e-6);
    // Two faces, student sees them orthogonal, teacher as one direction: G_s = I, G_t = all 1/sqrt2
    // after row normalisation: ((1 - 0.7071)^2 * 2 + 0.7071^2 * 2) / 4.
    let t = matrix(2, 2, |_, _| 1.0);
    let want = ((1.0 - 0.5f32.sqrt()).powi(2) * 2.0 + 0.5 * 2.0) / 4.0;
    let got = scalar(relational_loss(s, t));
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
}

#[test]
fn configs_that_cannot_train_are_refused() {
    let ok = DistillConfig {
        teacher: "runs/teacher".into(),
        ..Default::default()
    };
    assert!(ok.validate().is_ok());
    assert!(DistillConfig::default().validate().is_err(), "no teacher");
    for bad in [
        DistillConfig {
            embedding: -1.0,
            ..Default::default()
        },
        DistillConfig {
            temperature: 0.0,
            ..Default::default()
        },
        DistillConfig {
            scale: f32::NAN,
            ..Default::default()
        },
        DistillConfig {
            embedding: 0.0,
            logit: 0.0,
            relational: 0.0,
            ..Default::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    let parsed: DistillConfig =
        serde_json::from_str(r#"{"logit": 0.5, "distance": "l2"}"#).unwrap();
    assert_eq!(parsed.distance, EmbeddingDistance::L2);
    assert_eq!(parsed.embedding, 1.0);
    assert!(serde_json::from_str::<DistillConfig>(r#"{"temprature": 2}"#).is_err());
}
