//! Every kernel path (each instruction set this CPU has, dense, grouped and depthwise) against the
//! float64 definitions in `cpu_conv::reference`, on random shapes: strides 1 and 2, padding 0 and
//! 1, odd sizes, dilation, batches 1 to 33; and each instruction-set path against the portable one.

use cpu_conv::{reference, Conv2dGeom, Isa};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// A random geometry; `kind` 0: dense, 1: grouped (2 groups), 2: depthwise.
fn random_geom(rng: &mut StdRng, kind: usize) -> Conv2dGeom {
    loop {
        let groups_per = [1, 2][rng.random_range(0..2)];
        let c = match kind {
            0 => rng.random_range(1..6),
            1 => 2 * rng.random_range(1..4),
            _ => rng.random_range(1..9),
        };
        let (groups, o) = match kind {
            0 => (1, rng.random_range(1..7)),
            1 => (2, 2 * groups_per * rng.random_range(1..3)),
            _ => (c, c),
        };
        let k = [1, 3, 3, 5][rng.random_range(0..4)];
        let batch = [1, 2, 3, 5, 33][rng.random_range(0..5)];
        let (h, w) = (rng.random_range(3..12), rng.random_range(3..12));
        let stride = [rng.random_range(1..3), rng.random_range(1..3)];
        let padding = [rng.random_range(0..2), rng.random_range(0..2)];
        let dilation = [1, [1, 2][rng.random_range(0..2)]];
        if let Ok(g) = Conv2dGeom::new(
            [batch, c, h, w],
            [o, c / groups, k, k],
            stride,
            padding,
            dilation,
            groups,
        ) {
            return g;
        }
    }
}

fn assert_close(what: &str, g: &Conv2dGeom, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what} {g:?}");
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let err = (a as f64 - b).abs();
        assert!(
            err <= 1e-4 * (1.0 + b.abs()),
            "{what} {g:?}: [{i}] {a} vs {b}"
        );
    }
}

#[test]
fn every_path_matches_the_float64_definition() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut depthwise = 0;
    for case in 0..90 {
        let g = random_geom(&mut rng, case % 3);
        depthwise += g.is_depthwise() as usize;
        let x = random(&mut rng, g.input.iter().product());
        let w = random(&mut rng, g.weight.iter().product());
        let b = random(&mut rng, g.weight[0]);
        let gy = random(&mut rng, g.output().iter().product());
        let want_y = reference::forward(&g, &x, &w, Some(&b));
        let want_gx = reference::backward_x(&g, &w, &gy);
        let want_gw = reference::backward_w(&g, &x, &gy);
        for isa in Isa::available() {
            let y = cpu_conv::forward(&g, &x, &w, Some(&b), isa);
            assert_close(&format!("forward {isa:?}"), &g, &y, &want_y);
            let gx = cpu_conv::backward_input(&g, &w, &gy, isa);
            assert_close(&format!("input gradient {isa:?}"), &g, &gx, &want_gx);
            let gw = cpu_conv::backward_weight(&g, &x, &gy, isa);
            assert_close(&format!("weight gradient {isa:?}"), &g, &gw, &want_gw);
        }
    }
    assert!(depthwise >= 25, "too few depthwise cases: {depthwise}");
}

#[test]
fn instruction_set_paths_agree_with_the_portable_one_on_network_shapes() {
    // MobileFaceNet's depthwise shapes (stride 1 and 2, the 7x7 global one) and IResNet's dense
    // ones, at a small batch.
    let shapes = [
        ([2, 64, 56, 56], [64, 1, 3, 3], 1, 1),
        ([2, 128, 56, 56], [128, 1, 3, 3], 2, 1),
        ([2, 512, 7, 7], [512, 1, 7, 7], 1, 0),
        ([2, 64, 28, 28], [64, 64, 3, 3], 1, 1),
        ([2, 64, 28, 28], [128, 64, 3, 3], 2, 1),
        ([2, 64, 28, 28], [128, 64, 1, 1], 2, 0),
    ];
    let mut rng = StdRng::seed_from_u64(11);
    for (input, weight, s, p) in shapes {
        let g =
            Conv2dGeom::new(input, weight, [s, s], [p, p], [1, 1], input[1] / weight[1]).unwrap();
        let x = random(&mut rng, g.input.iter().product());
        let w = random(&mut rng, g.weight.iter().product());
        let gy = random(&mut rng, g.output().iter().product());
        let base = (
            cpu_conv::forward(&g, &x, &w, None, Isa::Portable),
            cpu_conv::backward_input(&g, &w, &gy, Isa::Portable),
            cpu_conv::backward_weight(&g, &x, &gy, Isa::Portable),
        );
        for isa in Isa::available() {
            let pairs = [
                (cpu_conv::forward(&g, &x, &w, None, isa), &base.0),
                (cpu_conv::backward_input(&g, &w, &gy, isa), &base.1),
                (cpu_conv::backward_weight(&g, &x, &gy, isa), &base.2),
            ];
            for (k, (got, want)) in pairs.iter().enumerate() {
                for (a, b) in got.iter().zip(want.iter()) {
                    assert!(
                        (a - b).abs() <= 1e-3 * (1.0 + b.abs()),
                        "{isa:?} pass {k} {g:?}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    // d(sum(y * r))/dx and /dw by central differences in float64 terms of the f32 forward.
    let mut rng = StdRng::seed_from_u64(3);
    for kind in 0..3 {
        let g = random_geom(&mut rng, kind);
        let x = random(&mut rng, g.input.iter().product());
        let w = random(&mut rng, g.weight.iter().product());
        let r = random(&mut rng, g.output().iter().product());
        let objective = |x: &[f32], w: &[f32]| -> f64 {
            reference::forward(&g, x, w, None)
                .iter()
                .zip(&r)
                .map(|(y, r)| y * *r as f64)
                .sum()
        };
        let gx = cpu_conv::backward_input(&g, &w, &r, Isa::best());
        let gw = cpu_conv::backward_weight(&g, &x, &r, Isa::best());
        let eps = 1e-2f32;
        for _ in 0..8 {
            let i = rng.random_range(0..x.len());
            let (mut hi, mut lo) = (x.clone(), x.clone());
            hi[i] += eps;
            lo[i] -= eps;
            let fd = (objective(&hi, &w) - objective(&lo, &w)) / (2.0 * eps as f64);
            assert!(
                (fd - gx[i] as f64).abs() < 1e-3 * (1.0 + fd.abs()),
                "dx[{i}] {fd} vs {} {g:?}",
                gx[i]
            );
            let j = rng.random_range(0..w.len());
            let (mut hi, mut lo) = (w.clone(), w.clone());
            hi[j] += eps;
            lo[j] -= eps;
            let fd = (objective(&x, &hi) - objective(&x, &lo)) / (2.0 * eps as f64);
            assert!(
                (fd - gw[j] as f64).abs() < 1e-3 * (1.0 + fd.abs()),
                "dw[{j}] {fd} vs {} {g:?}",
                gw[j]
            );
        }
    }
}
