//! Logits and loss of every head against the NumPy (float64) reference written by
//! `tools/make_loss_fixtures.py` (numpy 2.4.6), at target angles near 0, near pi - m on both sides
//! of the classic fallback, near pi, and across SphereFace's branch boundary.

mod common;

use arcface_loss::{Margin, MarginFcConfig, MarginHead};
use burn::tensor::DType;
use common::{fixture, matrix, rows, values, Cpu};

/// f32 resolves an angle near 0 or pi only to about sqrt(2 * 2^-24) = 3.5e-4 rad, and a cosine
/// error `dt` moves the angle by `dt / sin(theta)`: the target logit's tolerance follows that.
fn target_tolerance(dtype: DType, scale: f64, m1: f64, theta: f64) -> f64 {
    match dtype {
        DType::F64 => 1e-9 * scale,
        _ => 2.0 * scale * (1e-5 + m1 * 2.4e-7 / theta.sin().max(3.5e-4)),
    }
}

fn check_all_heads(dtype: DType) {
    let fx = fixture();
    assert!(
        fx.numpy.starts_with("2."),
        "fixture made with numpy {}",
        fx.numpy
    );
    for case in &fx.cases {
        let config: MarginFcConfig =
            serde_json::from_value(case.config.clone()).expect("fixture config is ours");
        let head = config.init_with(matrix::<Cpu>(&fx.centres, dtype)).unwrap();
        let out = head
            .forward(matrix::<Cpu>(&fx.embeddings, dtype), &fx.labels, 0)
            .unwrap();
        assert_eq!(out.logits.dtype(), dtype, "{}", case.name);
        let scale = config.margin.scale();
        let m1 = match config.margin {
            arcface_loss::MarginConfig::Combined(c) => c.m1,
            _ => 1.0,
        };
        let logits = rows(out.logits.clone());
        // s * cos in the head's own dtype, to check non-target logits bit for bit.
        let scaled_cosine = rows(out.cosine.clone().mul_scalar(scale));
        let mut worst_target = 0.0f64;
        for (i, (ours, theirs)) in logits.iter().zip(&case.logits).enumerate() {
            let y = fx.labels[i];
            for j in 0..ours.len() {
                let (a, b) = (ours[j], theirs[j]);
                if j == y {
                    let tol = target_tolerance(dtype, scale, m1, fx.target_angles[i]);
                    worst_target = worst_target.max(tol);
                    assert!(
                        (a - b).abs() <= tol,
                        "{} {dtype:?}: target logit of sample {i} (theta {:.5}) is {a}, numpy {b}, tol {tol:e}",
                        case.name,
                        fx.target_angles[i]
                    );
                } else {
                    let tol = if dtype == DType::F64 {
                        1e-10 * scale
                    } else {
                        2e-6 * scale
                    };
                    assert!(
                        (a - b).abs() <= tol,
                        "{} {dtype:?}: logit [{i}, {j}] is {a}, numpy {b}",
                        case.name
                    );
                    // The margin never touches another class: exactly s * cos, or 0 if filtered.
                    assert!(
                        a == scaled_cosine[i][j] || a == 0.0 && config.interclass_filter.is_some(),
                        "{}: non-target logit [{i}, {j}] = {a} is not s * cos = {}",
                        case.name,
                        scaled_cosine[i][j]
                    );
                }
            }
        }
        let loss = values(out.loss)[0];
        let tol = worst_target.max(1e-9 * case.loss.abs());
        assert!(
            (loss - case.loss).abs() <= tol,
            "{} {dtype:?}: loss {loss}, numpy {}",
            case.name,
            case.loss
        );
    }
}

#[test]
fn every_head_matches_numpy_in_f64() {
    check_all_heads(DType::F64);
}

#[test]
fn every_head_matches_numpy_in_f32() {
    check_all_heads(DType::F32);
}

#[test]
fn cosines_match_numpy() {
    let fx = fixture();
    let cos = arcface_loss::cosine_similarity(
        matrix::<Cpu>(&fx.embeddings, DType::F64),
        matrix::<Cpu>(&fx.centres, DType::F64),
    );
    for (ours, theirs) in rows(cos).iter().flatten().zip(fx.cosine.iter().flatten()) {
        assert!((ours - theirs).abs() < 1e-14, "{ours} vs {theirs}");
    }
}
