//! Float64 definitions of the three passes, written as the sums they are (seven nested loops), for
//! tests: every kernel path is checked against these. Slow by design.

use crate::geom::Conv2dGeom;

/// Calls `f(image, out_channel, oh, ow, in_channel, ih, iw, tap)` for every product term of the
/// convolution, skipping taps that fall in the padding.
fn each_term(g: &Conv2dGeom, mut f: impl FnMut([usize; 8])) {
    let [n, _, h, w] = g.input;
    let [o, cpg, kh, kw] = g.weight;
    let [oh, ow] = g.out_hw;
    let opg = o / g.groups;
    for i in 0..n {
        for oc in 0..o {
            for y in 0..oh {
                for x in 0..ow {
                    for ci in 0..cpg {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let ih = (y * g.stride[0] + ki * g.dilation[0]) as isize
                                    - g.padding[0] as isize;
                                let iw = (x * g.stride[1] + kj * g.dilation[1]) as isize
                                    - g.padding[1] as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                                    continue;
                                }
                                let c = (oc / opg) * cpg + ci;
                                let tap = (ci * kh + ki) * kw + kj;
                                f([i, oc, y, x, c, ih as usize, iw as usize, tap]);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn index(shape: [usize; 4], [a, b, c, d]: [usize; 4]) -> usize {
    ((a * shape[1] + b) * shape[2] + c) * shape[3] + d
}

/// The forward pass, `[n, o, oh, ow]`.
pub fn forward(g: &Conv2dGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f64> {
    let out_shape = g.output();
    let mut y = vec![0f64; out_shape.iter().product()];
    each_term(g, |[i, oc, r, col, c, ih, iw, tap]| {
        y[index(out_shape, [i, oc, r, col])] += x[index(g.input, [i, c, ih, iw])] as f64
            * w[oc * g.weight[1] * g.weight[2] * g.weight[3] + tap] as f64;
    });
    if let Some(b) = bias {
        let p = g.out_hw[0] * g.out_hw[1];
        for (k, v) in y.iter_mut().enumerate() {
            *v += b[(k / p) % out_shape[1]] as f64;
        }
    }
    y
}

/// The input gradient, `[n, c, h, w]`.
pub fn backward_x(g: &Conv2dGeom, w: &[f32], grad: &[f32]) -> Vec<f64> {
    let mut gx = vec![0f64; g.input.iter().product()];
    each_term(g, |[i, oc, r, col, c, ih, iw, tap]| {
        gx[index(g.input, [i, c, ih, iw])] += grad[index(g.output(), [i, oc, r, col])] as f64
            * w[oc * g.weight[1] * g.weight[2] * g.weight[3] + tap] as f64;
    });
    gx
}

/// The weight gradient, `[o, c / groups, kh, kw]`.
pub fn backward_w(g: &Conv2dGeom, x: &[f32], grad: &[f32]) -> Vec<f64> {
    let mut gw = vec![0f64; g.weight.iter().product()];
    each_term(g, |[i, oc, r, col, c, ih, iw, tap]| {
        gw[oc * g.weight[1] * g.weight[2] * g.weight[3] + tap] +=
            grad[index(g.output(), [i, oc, r, col])] as f64
                * x[index(g.input, [i, c, ih, iw])] as f64;
    });
    gw
}
