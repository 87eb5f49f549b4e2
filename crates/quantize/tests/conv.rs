//! The quantized convolution against a float64 convolution of the same dequantised operands, on
//! every kernel, with padding, stride, bias and PReLU; quantisation error of the weights bounded;
//! bad inputs refused.

use quantize::{quantize_per_channel, Activation, ConvError, Kernel, Output, QConv2d, QTensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// `x` real NHWC, `w` real [cout, cin, kh, kw]; zero padding.
#[allow(clippy::too_many_arguments)]
fn reference(
    x: &[f64],
    [n, h, w, c]: [usize; 4],
    wt: &[f32],
    [cout, kh, kw]: [usize; 3],
    bias: &[f32],
    alpha: &[f32],
    stride: usize,
    pad: usize,
) -> Vec<f64> {
    let oh = (h + 2 * pad - kh) / stride + 1;
    let ow = (w + 2 * pad - kw) / stride + 1;
    let mut out = vec![0f64; n * oh * ow * cout];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..cout {
                    let mut s = bias[o] as f64;
                    for ci in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xv = x[((b * h + iy as usize) * w + ix as usize) * c + ci];
                                s += xv * wt[((o * c + ci) * kh + ky) * kw + kx] as f64;
                            }
                        }
                    }
                    if s < 0.0 {
                        s *= alpha[o] as f64;
                    }
                    out[((b * oh + oy) * ow + ox) * cout + o] = s;
                }
            }
        }
    }
    out
}

#[test]
fn matches_a_float64_convolution_of_the_dequantised_operands() {
    let mut rng = StdRng::seed_from_u64(3);
    for (n, h, w, cin, cout, k, stride, pad) in [
        (1, 7, 7, 3, 8, 3, 1, 1),
        (2, 9, 6, 5, 17, 3, 2, 1),
        (1, 8, 8, 16, 32, 1, 1, 0),
        (1, 5, 5, 64, 64, 3, 1, 1),
        (3, 4, 4, 1, 3, 3, 2, 0),
    ] {
        let x = QTensor {
            data: (0..n * h * w * cin).map(|_| rng.random()).collect(),
            shape: [n, h, w, cin],
            scale: 0.02,
            zero: 117,
        };
        let weights: Vec<f32> = (0..cout * cin * k * k)
            .map(|_| rng.random_range(-0.5..0.5))
            .collect();
        let bias: Vec<f32> = (0..cout).map(|_| rng.random_range(-1.0..1.0)).collect();
        let alpha: Vec<f32> = (0..cout).map(|_| rng.random_range(0.0..0.5)).collect();
        let conv = QConv2d::new(
            &weights,
            [cout, cin, k, k],
            Some(&bias),
            Some(&alpha),
            stride,
            pad,
        )
        .unwrap();
        // Per-channel symmetric quantisation (what QConv2d::new applies): every weight within
        // half a step of the original.
        let (q, scales) = quantize_per_channel(&weights, cout);
        let deq: Vec<f32> = q
            .iter()
            .enumerate()
            .map(|(i, &v)| v as f32 * scales[i / (cin * k * k)])
            .collect();
        for o in 0..cout {
            let row = &weights[o * cin * k * k..(o + 1) * cin * k * k];
            let step = row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            for (a, b) in row.iter().zip(&deq[o * cin * k * k..]) {
                assert!((a - b).abs() <= 0.5 * step * 1.0001, "{a} vs {b}");
            }
        }
        let xr: Vec<f64> = x
            .data
            .iter()
            .map(|&q| 0.02f64 * (q as f64 - 117.0))
            .collect();
        let expected = reference(&xr, x.shape, &deq, [cout, k, k], &bias, &alpha, stride, pad);
        let scale = expected.iter().fold(0f64, |m, v| m.max(v.abs()));
        let mut first: Option<Vec<f32>> = None;
        for kernel in [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512Vnni] {
            if !kernel.available() {
                continue;
            }
            let real = match conv.forward(&x, Output::F32, kernel).unwrap() {
                Activation::F32 { data, .. } => data,
                other => panic!("asked for f32, got {other:?}"),
            };
            let out = Output::U8 {
                scale: 0.05,
                zero: 128,
            };
            let Activation::U8(q) = conv.forward(&x, out, kernel).unwrap() else {
                panic!("asked for u8")
            };
            for (a, b) in real.iter().zip(&expected) {
                assert!(
                    (*a as f64 - b).abs() <= 1e-5 * scale,
                    "{kernel:?}: {a} vs {b}"
                );
            }
            for (qa, b) in q.data.iter().zip(&expected) {
                let ideal = (b / 0.05).round() + 128.0;
                assert!(
                    (*qa as f64 - ideal.clamp(0.0, 255.0)).abs() <= 1.0,
                    "{qa} vs {ideal}"
                );
            }
            // The kernels agree bit for bit.
            match &first {
                None => first = Some(real),
                Some(f) => assert_eq!(&real, f, "{kernel:?}"),
            }
        }
    }
}

#[test]
fn bad_weights_and_inputs_are_refused() {
    let w = vec![0.1f32; 2 * 3 * 3 * 3];
    assert!(matches!(
        QConv2d::new(&w[1..], [2, 3, 3, 3], None, None, 1, 1),
        Err(ConvError::Weights { .. })
    ));
    assert!(matches!(
        QConv2d::new(&w, [2, 3, 3, 3], Some(&[0.0]), None, 1, 1),
        Err(ConvError::PerChannel { what: "bias", .. })
    ));
    let mut nan = w.clone();
    nan[5] = f32::NAN;
    assert_eq!(
        QConv2d::new(&nan, [2, 3, 3, 3], None, None, 1, 1).unwrap_err(),
        ConvError::NonFinite
    );
    let conv = QConv2d::new(&w, [2, 3, 3, 3], None, None, 1, 1).unwrap();
    let x = QTensor {
        data: vec![0; 4 * 4 * 2],
        shape: [1, 4, 4, 2],
        scale: 1.0,
        zero: 0,
    };
    assert!(matches!(
        conv.forward(&x, Output::F32, Kernel::Scalar),
        Err(ConvError::Channels {
            got: 2,
            expected: 3
        })
    ));
    let short = QTensor {
        data: vec![0; 10],
        shape: [1, 4, 4, 3],
        scale: 1.0,
        zero: 0,
    };
    assert!(matches!(
        conv.forward(&short, Output::F32, Kernel::Scalar),
        Err(ConvError::Shape { .. })
    ));
}

/// A grouped or depthwise convolution is a dense one whose weights are zero outside each
/// group's block: the direct loops must give the same integers, hence the same bits, as the
/// GEMM path on the block-diagonal expansion (zeros do not change a channel's scale).
#[test]
fn grouped_equals_dense_on_block_diagonal_weights() {
    let mut rng = StdRng::seed_from_u64(7);
    // (in, out channels, groups, kernel, stride, padding): depthwise, two per group, uneven
    // split; channel counts past the 32-channel register blocks, with and without a remainder;
    // more outputs than inputs per group; groups too wide for exact f32 sums (run as dense).
    for (cin, c, groups, k, stride, pad) in [
        (16, 16, 16, 3, 1, 1),
        (16, 16, 16, 3, 2, 1),
        (12, 12, 6, 3, 1, 1),
        (12, 12, 3, 3, 2, 0),
        (8, 8, 8, 7, 1, 0),
        (96, 96, 48, 3, 1, 1),
        (40, 40, 40, 3, 2, 1),
        (8, 16, 8, 3, 1, 1),
        (128, 128, 2, 3, 1, 1),
    ] {
        let (n, h, w) = (2, 9, 7);
        let cpg = cin / groups;
        let x = QTensor {
            data: (0..n * h * w * cin).map(|_| rng.random()).collect(),
            shape: [n, h, w, cin],
            scale: 0.03,
            zero: 100,
        };
        let grouped_w: Vec<f32> = (0..c * cpg * k * k)
            .map(|_| rng.random_range(-0.5..0.5))
            .collect();
        let mut dense_w = vec![0f32; c * cin * k * k];
        for o in 0..c {
            let g = o / (c / groups);
            for ci in 0..cpg {
                for t in 0..k * k {
                    dense_w[(o * cin + g * cpg + ci) * k * k + t] =
                        grouped_w[(o * cpg + ci) * k * k + t];
                }
            }
        }
        let bias: Vec<f32> = (0..c).map(|_| rng.random_range(-1.0..1.0)).collect();
        let alpha: Vec<f32> = (0..c).map(|_| rng.random_range(0.0..0.5)).collect();
        let grouped = QConv2d::new_grouped(
            &grouped_w,
            [c, cpg, k, k],
            groups,
            Some(&bias),
            Some(&alpha),
            stride,
            pad,
        )
        .unwrap();
        let dense = QConv2d::new(
            &dense_w,
            [c, cin, k, k],
            Some(&bias),
            Some(&alpha),
            stride,
            pad,
        )
        .unwrap();
        for output in [
            Output::F32,
            Output::U8 {
                scale: 0.05,
                zero: 90,
            },
        ] {
            let a = grouped.forward(&x, output, Kernel::Scalar).unwrap();
            let b = dense.forward(&x, output, Kernel::detect()).unwrap();
            assert_eq!(
                a, b,
                "{cin} -> {c} channels, {groups} groups, k {k}, stride {stride}"
            );
        }
    }
}
