//! Edge inputs give finite logits, losses and gradients (or a clear error), for every head.

mod common;

use arcface_loss::{
    ArcFace, ArcFaceForm, CombinedMargin, CosFace, LossError, MarginConfig, MarginFcConfig,
    MarginHead,
};
use burn::tensor::{DType, Tensor};
use common::{matrix, rows, values, Ad, Cpu, Lcg};

const K: usize = 4;
const D: usize = 6;

fn margins(scale: f64) -> Vec<MarginConfig> {
    vec![
        ArcFace {
            scale,
            ..ArcFace::default()
        }
        .into(),
        ArcFace {
            scale,
            margin: 0.5,
            form: ArcFaceForm::Classic { easy_margin: false },
        }
        .into(),
        ArcFace {
            scale,
            margin: 0.5,
            form: ArcFaceForm::Classic { easy_margin: true },
        }
        .into(),
        CosFace { scale, margin: 0.4 }.into(),
        CombinedMargin {
            scale,
            m1: 1.0,
            m2: 0.3,
            m3: 0.2,
        }
        .into(),
        CombinedMargin {
            scale,
            m1: 4.0,
            m2: 0.0,
            m3: 0.0,
        }
        .into(),
    ]
}

/// Rows: identical to its centre, opposite to it, a zero embedding, a row whose centre is zero,
/// a small embedding (norm ~1e-3) and a vanishing one (norm ~1e-30, below the 1e-6 floor).
fn edge_batch() -> (Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<usize>) {
    let mut centres = Lcg(3).matrix(K, D);
    centres[3] = vec![0.0; D];
    let embeddings = vec![
        centres[0].clone(),
        centres[1].iter().map(|x| -x).collect(),
        vec![0.0; D],
        Lcg(9).matrix(1, D).remove(0),
        centres[2].iter().map(|x| x * 1e-3).collect(),
        centres[2].iter().map(|x| x * 1e-30).collect(),
    ];
    (embeddings, centres, vec![0, 1, 2, 3, 2, 2])
}

fn all_finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

fn check_finite(dtype: DType, scale: f64) {
    let (e, w, labels) = edge_batch();
    for margin in margins(scale) {
        for smoothing in [0.0, 0.1] {
            let config = MarginFcConfig::new(K, D)
                .with_margin(margin)
                .with_label_smoothing(smoothing)
                .with_interclass_filter(Some(0.5));
            let head = config.init_with(matrix::<Ad>(&w, dtype)).unwrap();
            let e_ad = matrix::<Ad>(&e, dtype).require_grad();
            let out = head.forward(e_ad.clone(), &labels, 0).unwrap();
            let what = format!("{margin:?} eps {smoothing} {dtype:?} s={scale}");
            assert!(all_finite(&values(out.logits.clone())), "logits: {what}");
            let loss = values(out.loss.clone())[0];
            assert!(loss.is_finite(), "loss {loss}: {what}");
            let grads = out.loss.backward();
            assert!(
                all_finite(&values(e_ad.grad(&grads).unwrap())),
                "d/de: {what}"
            );
            let grad_w = head.centres.val().grad(&grads).unwrap();
            assert!(all_finite(&values(grad_w)), "d/dw: {what}");
        }
    }
}

#[test]
fn edge_inputs_stay_finite_in_f32() {
    check_finite(DType::F32, 64.0);
}

#[test]
fn edge_inputs_stay_finite_in_f64() {
    check_finite(DType::F64, 64.0);
}

#[test]
fn huge_scale_stays_finite() {
    check_finite(DType::F32, 1e6);
}

#[test]
fn zero_vectors_have_zero_cosine() {
    let (e, w, labels) = edge_batch();
    let head = MarginFcConfig::new(K, D)
        .init_with(matrix::<Cpu>(&w, DType::F32))
        .unwrap();
    let out = head
        .forward(matrix::<Cpu>(&e, DType::F32), &labels, 0)
        .unwrap();
    let cos = rows(out.cosine);
    assert!(
        cos[2].iter().all(|&c| c == 0.0),
        "zero embedding: {:?}",
        cos[2]
    );
    assert!(cos.iter().all(|r| r[3] == 0.0), "zero centre column");
    // Identical and opposite vectors reach the ends of [-1, 1] and no further.
    assert!((cos[0][0] - 1.0).abs() < 1e-6 && cos[0][0] <= 1.0);
    assert!((cos[1][1] + 1.0).abs() < 1e-6 && cos[1][1] >= -1.0);
    // A small embedding is a direction like any other; one below the norm floor counts as zero.
    assert!((cos[4][2] - 1.0).abs() < 1e-6, "{:?}", cos[4]);
    assert!(cos[5].iter().all(|c| c.abs() < 1e-12), "{:?}", cos[5]);
}

#[test]
fn bad_batches_are_typed_errors() {
    let head = MarginFcConfig::new(K, D)
        .init::<Cpu>(&Default::default())
        .unwrap();
    let e = Tensor::<Cpu, 2>::ones([2, D], &Default::default());
    assert!(matches!(
        head.forward(e.clone(), &[0, K], 0),
        Err(LossError::LabelOutOfRange {
            label: K,
            index: 1,
            ..
        })
    ));
    assert!(matches!(
        head.forward(e.clone(), &[0], 0),
        Err(LossError::Shape(_))
    ));
    let wrong_width = Tensor::<Cpu, 2>::ones([2, D + 1], &Default::default());
    assert!(matches!(
        head.forward(wrong_width, &[0, 1], 0),
        Err(LossError::Shape(_))
    ));
    let err = head.forward(e, &[0, 9], 0).unwrap_err().to_string();
    assert!(
        err.contains("label 9") && err.contains("4 classes"),
        "{err}"
    );
}

#[test]
fn impossible_configs_are_rejected_with_the_field_named() {
    let base = MarginFcConfig::new(10, 8);
    let cases: Vec<(MarginFcConfig, &str)> = vec![
        (base.clone().with_sample_rate(0.0), "sample_rate"),
        (base.clone().with_sample_rate(1.5), "sample_rate"),
        (base.clone().with_label_smoothing(1.0), "label_smoothing"),
        (base.clone().with_label_smoothing(-0.1), "label_smoothing"),
        (
            base.clone().with_interclass_filter(Some(1.5)),
            "interclass_filter",
        ),
        (MarginFcConfig::new(1, 8), "num_classes"),
        (MarginFcConfig::new(10, 0), "embedding_dim"),
        (
            base.clone().with_margin(ArcFace {
                margin: 3.2,
                ..ArcFace::default()
            }),
            "margin",
        ),
        (
            base.clone().with_margin(ArcFace {
                scale: f64::NAN,
                ..ArcFace::default()
            }),
            "scale",
        ),
        (
            base.clone().with_margin(CombinedMargin {
                m1: 0.5,
                ..CombinedMargin::default()
            }),
            "m1",
        ),
        (
            base.clone().with_margin(CosFace {
                scale: 64.0,
                margin: -0.1,
            }),
            "margin",
        ),
    ];
    for (config, field) in cases {
        match config.init::<Cpu>(&Default::default()) {
            Err(LossError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!(
                "{config:?}: expected an error on {field}, got {:?}",
                other.map(|_| ())
            ),
        }
    }
}

#[test]
fn config_files_reject_unknown_keys_and_fill_defaults() {
    let config: MarginFcConfig = serde_json::from_str(
        r#"{"num_classes": 93431, "margin": {"kind": "cos_face", "scale": 64, "margin": 0.4}}"#,
    )
    .unwrap();
    assert_eq!(config.num_classes, 93431);
    assert_eq!(config.embedding_dim, 512);
    assert_eq!(config.sample_rate, 1.0);
    let typo = serde_json::from_str::<MarginFcConfig>(r#"{"num_classes": 10, "sample_rat": 0.1}"#);
    assert!(typo.unwrap_err().to_string().contains("sample_rat"));
    let bad_margin = serde_json::from_str::<MarginFcConfig>(
        r#"{"margin": {"kind": "arc_face", "scale": 64, "margin": 0.5, "m": 1}}"#,
    );
    assert!(bad_margin.is_err());
    // The default margin is insightface's straight-through ArcFace, s = 64, m = 0.5.
    assert_eq!(
        MarginFcConfig::default().margin,
        MarginConfig::ArcFace(ArcFace {
            scale: 64.0,
            margin: 0.5,
            form: ArcFaceForm::StraightThrough
        })
    );
}

/// Every head's target logit falls as the angle grows, over all of [0, pi] (no turn back up at
/// pi - m, nor at SphereFace's branch points). `easy_margin` is the exception by design: it
/// drops the margin where cos(theta) <= 0, so the logit jumps up by s * sin(m) at pi / 2.
#[test]
fn target_logits_are_monotonic_in_the_angle() {
    use arcface_loss::Margin;
    let angles: Vec<f64> = (0..=2000)
        .map(|i| std::f64::consts::PI * i as f64 / 2000.0)
        .collect();
    let cosines: Vec<Vec<f64>> = angles.iter().map(|a| vec![a.cos()]).collect();
    let easy = |m: &MarginConfig| {
        matches!(
            m,
            MarginConfig::ArcFace(ArcFace {
                form: ArcFaceForm::Classic { easy_margin: true },
                ..
            })
        )
    };
    for margin in margins(64.0).into_iter().filter(|m| !easy(m)) {
        let t = matrix::<Cpu>(&cosines, DType::F64);
        let logit = values(margin.target_logit(t));
        for (i, pair) in logit.windows(2).enumerate() {
            assert!(
                pair[1] <= pair[0] + 1e-12,
                "{margin:?}: logit rises from {} to {} at angle {:.4}",
                pair[0],
                pair[1],
                angles[i + 1]
            );
        }
    }
}
