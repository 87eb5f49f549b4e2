//! Schedules and global-norm clipping against hand-computed values.

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use trainer::{clip_global_norm, global_norm, LrSchedule, ScheduleConfig};

type Ad = burn::backend::Autodiff<burn::backend::Flex>;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn three_stage_schedule() {
    // 10 epochs of 100 steps: warm-up over 2 epochs (200 steps), cosine to step 800, then 0.001.
    let s = ScheduleConfig::default().build(100, 10.0);
    assert!(close(s.lr(0), 0.0));
    assert!(close(s.lr(100), 0.05));
    assert!(close(s.lr(199), 0.1 * 199.0 / 200.0));
    assert!(close(s.lr(200), 0.1));
    // Half-way through the cosine (step 500 of 200..800): the midpoint of 0.1 and 0.001.
    assert!(close(s.lr(500), 0.001 + 0.099 * 0.5));
    // A quarter: 0.001 + 0.099 * (1 + cos(pi/4)) / 2.
    assert!(close(
        s.lr(350),
        0.001 + 0.099 * 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2)
    ));
    assert!(close(s.lr(800), 0.001));
    assert!(close(s.lr(999), 0.001));
    // Monotonic after the warm-up.
    assert!((200..999).all(|k| s.lr(k + 1) <= s.lr(k) + 1e-15));
}

#[test]
fn poly_schedule_as_insightface() {
    let config = ScheduleConfig::Poly {
        base_lr: 0.2,
        warmup_epochs: 1.0,
        power: 1.0,
    };
    let s = config.build(50, 5.0); // 250 steps, 50 warm-up
    assert!(close(s.lr(25), 0.1));
    assert!(close(s.lr(50), 0.2));
    assert!(close(s.lr(150), 0.1)); // half of the 200 post-warm-up steps
    assert!(close(s.lr(250), 0.0));
    let squared = ScheduleConfig::Poly {
        base_lr: 0.2,
        warmup_epochs: 1.0,
        power: 2.0,
    }
    .build(50, 5.0);
    assert!(close(squared.lr(150), 0.05));
}

#[test]
fn step_schedule() {
    let config = ScheduleConfig::Step {
        base_lr: 0.1,
        warmup_epochs: 0.0,
        milestones: vec![3.0, 6.0],
        gamma: 0.1,
    };
    let s = config.build(10, 9.0);
    assert!(close(s.lr(0), 0.1));
    assert!(close(s.lr(29), 0.1));
    assert!(close(s.lr(30), 0.01));
    assert!(close(s.lr(65), 0.001));
}

#[test]
fn bad_schedules_are_rejected() {
    for bad in [
        ScheduleConfig::ThreeStage {
            base_lr: 0.0,
            warmup_epochs: 2.0,
            final_fraction: 0.2,
            final_lr: 0.001,
        },
        ScheduleConfig::ThreeStage {
            base_lr: 0.1,
            warmup_epochs: 2.0,
            final_fraction: 1.0,
            final_lr: 0.001,
        },
        ScheduleConfig::ThreeStage {
            base_lr: 0.1,
            warmup_epochs: -1.0,
            final_fraction: 0.2,
            final_lr: 0.001,
        },
        ScheduleConfig::Poly {
            base_lr: 0.1,
            warmup_epochs: 0.0,
            power: 0.0,
        },
        ScheduleConfig::Step {
            base_lr: 0.1,
            warmup_epochs: 0.0,
            milestones: vec![5.0, 2.0],
            gamma: 0.1,
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[derive(Module, Debug)]
struct Two<B: Backend> {
    a: Param<Tensor<B, 1>>,
    b: Param<Tensor<B, 2>>,
}

/// A module whose gradients are exactly `ga` and `gb` (loss = sum(a * ga) + sum(b * gb)).
fn grads_of(ga: [f64; 3], gb: [[f64; 2]; 2]) -> (Two<Ad>, GradientsParams) {
    let device = Default::default();
    let m = Two::<Ad> {
        a: Param::from_tensor(Tensor::zeros([3], &device)),
        b: Param::from_tensor(Tensor::zeros([2, 2], &device)),
    };
    let ca = Tensor::<Ad, 1>::from_data(TensorData::from(ga.map(|v| v as f32)), &device);
    let cb = Tensor::<Ad, 2>::from_data(TensorData::from(gb.map(|r| r.map(|v| v as f32))), &device);
    let loss = (m.a.val() * ca).sum() + (m.b.val() * cb).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &m);
    (m, grads)
}

fn grad_values(m: &Two<Ad>, grads: &GradientsParams) -> Vec<f64> {
    let a = grads.get::<burn::backend::Flex, 1>(m.a.id).unwrap();
    let b = grads.get::<burn::backend::Flex, 2>(m.b.id).unwrap();
    a.into_data()
        .iter::<f64>()
        .chain(b.into_data().iter::<f64>())
        .collect()
}

#[test]
fn global_norm_clipping_matches_clip_grad_norm() {
    // Norm sqrt(3^2 + 4^2 + 12^2 + 0 + 84^2) = sqrt(9+16+144+7056) = 85.
    let (m, mut grads) = grads_of([3.0, 4.0, 12.0], [[0.0, 84.0], [0.0, 0.0]]);
    assert!(close(global_norm::<Ad, _>(&m, &grads), 85.0));
    let before = clip_global_norm::<Ad, _>(&m, &mut grads, 5.0);
    assert!(close(before, 85.0));
    let coef = 5.0 / (85.0 + 1e-6);
    let expected: Vec<f64> = [3.0, 4.0, 12.0, 0.0, 84.0, 0.0, 0.0]
        .iter()
        .map(|v| v * coef)
        .collect();
    for (got, want) in grad_values(&m, &grads).iter().zip(&expected) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
    assert!((global_norm::<Ad, _>(&m, &grads) - 5.0).abs() < 1e-5);
    // Below the limit nothing changes; one tensor alone is not what is clipped (Burn's per-tensor
    // clipping would act on b alone).
    let (m, mut grads) = grads_of([1.0, 2.0, 2.0], [[0.0, 0.0], [0.0, 3.0]]);
    assert!((clip_global_norm::<Ad, _>(&m, &mut grads, 5.0) - 18f64.sqrt()).abs() < 1e-6);
    assert_eq!(
        grad_values(&m, &grads),
        vec![1.0, 2.0, 2.0, 0.0, 0.0, 0.0, 3.0]
    );
    // At exactly the limit PyTorch still multiplies by max_norm / (norm + 1e-6): so do we.
    let (m, mut grads) = grads_of([1.0, 2.0, 2.0], [[0.0, 0.0], [0.0, 4.0]]);
    clip_global_norm::<Ad, _>(&m, &mut grads, 5.0);
    assert!((grad_values(&m, &grads)[6] - 4.0 * 5.0 / (5.0 + 1e-6)).abs() < 1e-6);
    // A non-finite gradient is reported and left alone for the NaN guard.
    let (m, mut grads) = grads_of([f64::NAN, 0.0, 0.0], [[0.0; 2]; 2]);
    assert!(clip_global_norm::<Ad, _>(&m, &mut grads, 5.0).is_nan());
}
