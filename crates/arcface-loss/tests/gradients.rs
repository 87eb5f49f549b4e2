//! Gradients in f64 on `Autodiff<Flex>`: central finite differences for the heads that are
//! differentiated through, and the straight-through ArcFace's defining property.

mod common;

use arcface_loss::{
    ArcFace, ArcFaceForm, CombinedMargin, CosFace, Margin, MarginConfig, MarginFcConfig, MarginHead,
};
use burn::tensor::{backend::Backend, DType, Int, Tensor, TensorData};
use common::{matrix, values, Ad, Cpu, Lcg};

const N: usize = 6;
const K: usize = 5;
const D: usize = 8;

fn classic() -> MarginConfig {
    ArcFace {
        form: ArcFaceForm::Classic { easy_margin: false },
        ..ArcFace::default()
    }
    .into()
}

/// Random inputs whose target cosines stay clear of the kinks (the classic fallback at
/// cos(pi - m), SphereFace's branch points), where a finite difference would straddle two branches.
fn inputs(seed: u64) -> (Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<usize>) {
    let mut rng = Lcg(seed);
    let labels: Vec<usize> = (0..N).map(|i| (i * 3) % K).collect();
    let centres = rng.matrix(K, D);
    let mut embeddings = rng.matrix(N, D);
    // Samples 0 and 1 sit at target angles 0.2 and pi - 0.2 (the classic fallback branch, and
    // SphereFace's second branch for the combined margin); the others are random.
    for (i, theta) in [(0, 0.2), (1, std::f64::consts::PI - 0.2)] {
        let w = &centres[labels[i]];
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let unit_w: Vec<f64> = w.iter().map(|x| x / norm(w)).collect();
        let mut u = rng.matrix(1, D).remove(0);
        let along: f64 = u.iter().zip(&unit_w).map(|(a, b)| a * b).sum();
        u.iter_mut().zip(&unit_w).for_each(|(a, b)| *a -= along * b);
        let nu = norm(&u);
        embeddings[i] = (0..D)
            .map(|k| 3.0 * (theta.cos() * unit_w[k] + theta.sin() * u[k] / nu))
            .collect();
    }
    (embeddings, centres, labels)
}

fn loss_at(config: &MarginFcConfig, e: &[Vec<f64>], w: &[Vec<f64>], labels: &[usize]) -> f64 {
    let head = config.init_with(matrix::<Cpu>(w, DType::F64)).unwrap();
    let out = head
        .forward(matrix::<Cpu>(e, DType::F64), labels, 0)
        .unwrap();
    values(out.loss)[0]
}

fn check_finite_differences(name: &str, config: MarginFcConfig) {
    let (e, w, labels) = inputs(7);
    let head = config.init_with(matrix::<Ad>(&w, DType::F64)).unwrap();
    let e_ad = matrix::<Ad>(&e, DType::F64).require_grad();
    let out = head.forward(e_ad.clone(), &labels, 0).unwrap();
    let grads = out.loss.backward();
    let grad_e = values(e_ad.grad(&grads).unwrap());
    let grad_w = values(head.centres.val().grad(&grads).unwrap());

    let h = 1e-6;
    let mut worst: f64 = 0.0;
    for (which, base, analytic) in [("embedding", &e, &grad_e), ("centre", &w, &grad_w)] {
        for r in 0..base.len() {
            for c in 0..D {
                let bump = |delta: f64| {
                    let mut moved = base.clone();
                    moved[r][c] += delta;
                    match which {
                        "embedding" => loss_at(&config, &moved, &w, &labels),
                        _ => loss_at(&config, &e, &moved, &labels),
                    }
                };
                let numeric = (bump(h) - bump(-h)) / (2.0 * h);
                let exact = analytic[r * D + c];
                let err = (numeric - exact).abs() / (1.0 + exact.abs());
                worst = worst.max(err);
                assert!(
                    err < 1e-5,
                    "{name}: d loss / d {which}[{r}][{c}] autodiff {exact}, finite difference {numeric}"
                );
            }
        }
    }
    // The gradient is not trivially zero (so the comparison means something).
    assert!(
        grad_e.iter().any(|g| g.abs() > 1e-3),
        "{name}: zero gradient"
    );
    eprintln!("{name}: worst relative error {worst:e}");
}

#[test]
fn classic_arcface_matches_finite_differences() {
    check_finite_differences(
        "arcface classic",
        MarginFcConfig::new(K, D).with_margin(classic()),
    );
}

#[test]
fn easy_margin_arcface_matches_finite_differences() {
    let easy = ArcFace {
        form: ArcFaceForm::Classic { easy_margin: true },
        ..ArcFace::default()
    };
    check_finite_differences("arcface easy", MarginFcConfig::new(K, D).with_margin(easy));
}

#[test]
fn cosface_matches_finite_differences() {
    check_finite_differences(
        "cosface",
        MarginFcConfig::new(K, D).with_margin(CosFace::default()),
    );
}

#[test]
fn label_smoothed_loss_matches_finite_differences() {
    check_finite_differences(
        "arcface classic + label smoothing 0.1",
        MarginFcConfig::new(K, D)
            .with_margin(classic())
            .with_label_smoothing(0.1),
    );
}

#[test]
fn combined_margin_matches_finite_differences() {
    let combined = CombinedMargin {
        scale: 32.0,
        m1: 1.35,
        m2: 0.25,
        m3: 0.15,
    };
    check_finite_differences("combined", MarginFcConfig::new(K, D).with_margin(combined));
}

fn target_column<B: Backend>(labels: &[usize]) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::<B, 1, Int>::from_data(TensorData::new(data, [labels.len()]), &Default::default())
        .unsqueeze_dim(1)
}

/// The gradient w.r.t. the embeddings of the summed target logits (`through_margin`) or of the
/// summed target cosines times `s`.
fn target_gradient(config: &MarginFcConfig, through_margin: bool) -> Vec<f64> {
    let (e, w, labels) = inputs(11);
    let head = config.init_with(matrix::<Ad>(&w, DType::F64)).unwrap();
    let e_ad = matrix::<Ad>(&e, DType::F64).require_grad();
    let out = head.forward(e_ad.clone(), &labels, 0).unwrap();
    let targets = target_column::<Ad>(&labels);
    let objective = if through_margin {
        out.logits.gather(1, targets).sum()
    } else {
        out.cosine
            .gather(1, targets)
            .sum()
            .mul_scalar(config.margin.scale())
    };
    values(e_ad.grad(&objective.backward()).unwrap())
}

fn target_gradients(config: &MarginFcConfig) -> (Vec<f64>, Vec<f64>) {
    (
        target_gradient(config, true),
        target_gradient(config, false),
    )
}

#[test]
fn straight_through_gradient_is_scale_times_cosine_gradient() {
    let (margin, cosine) = target_gradients(&MarginFcConfig::new(K, D));
    for (a, b) in margin.iter().zip(&cosine) {
        assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{a} vs {b}");
    }
    // The classic form differentiates through cos(theta + m), so there the two differ: the check
    // above is not vacuous.
    let (margin, cosine) = target_gradients(&MarginFcConfig::new(K, D).with_margin(classic()));
    let differs = margin
        .iter()
        .zip(&cosine)
        .any(|(a, b)| (a - b).abs() > 1e-3 * (1.0 + b.abs()));
    assert!(
        differs,
        "classic ArcFace's gradient should not be straight-through"
    );
}
