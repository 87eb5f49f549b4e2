//! Dense and grouped convolutions as matrix products over an im2col matrix, one image at a time:
//! forward `Y = W * col(X)`, input gradient `X' = col2im(W^T * Y')`, weight gradient
//! `W' = sum over images of Y' * col(X)^T`. The transposes are strided views, never copies, and a
//! 1x1 stride-1 layer uses the input (or the gradient) itself as the matrix.

use rayon::prelude::*;

use crate::geom::Conv2dGeom;
use crate::isa::{dispatch, scatter_axpy, Isa};
use crate::matmul::{matmul, View};

/// Sizes the three passes share.
struct Dims {
    /// Output pixels per image.
    p: usize,
    /// Rows of one group's im2col matrix (`c / groups * kh * kw`).
    k: usize,
    /// Output channels per group.
    opg: usize,
    /// Input elements per image.
    x_len: usize,
    /// im2col elements per image (0 for pointwise layers, which need none).
    col_len: usize,
}

fn dims(g: &Conv2dGeom) -> Dims {
    let [_, c, h, w] = g.input;
    let [o, cpg, kh, kw] = g.weight;
    let p = g.out_hw[0] * g.out_hw[1];
    Dims {
        p,
        k: cpg * kh * kw,
        opg: o / g.groups,
        x_len: c * h * w,
        col_len: if g.is_pointwise() { 0 } else { c * kh * kw * p },
    }
}

/// Runs `f(image, out, scratch, parallel_products)` for every image's `per`-long chunk of `out`:
/// images spread over rayon's threads when there are enough of them to keep every thread busy,
/// otherwise one after the other with the matrix products themselves spread over the threads.
fn per_image<F>(out: &mut [f32], per: usize, scratch: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut Vec<f32>, bool) + Sync,
{
    let images = out.len() / per.max(1);
    if images >= rayon::current_num_threads() && images > 1 {
        out.par_chunks_mut(per).enumerate().for_each_init(
            || vec![0f32; scratch],
            |buf, (i, chunk)| f(i, chunk, buf, false),
        );
    } else {
        let mut buf = vec![0f32; scratch];
        for (i, chunk) in out.chunks_mut(per).enumerate() {
            f(i, chunk, &mut buf, true);
        }
    }
}

/// `Y = W * col(X) (+ bias)` for every image.
pub(crate) fn forward(g: &Conv2dGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    let d = dims(g);
    let [n, o, ..] = g.output();
    let mut out = vec![0f32; n * o * d.p];
    per_image(&mut out, o * d.p, d.col_len, |i, y, col, par| {
        let xi = &x[i * d.x_len..][..d.x_len];
        let col: &[f32] = if d.col_len == 0 {
            xi
        } else {
            im2col(g, xi, col);
            col
        };
        for gr in 0..g.groups {
            matmul(
                &mut y[gr * d.opg * d.p..][..d.opg * d.p],
                false,
                View::rows(&w[gr * d.opg * d.k..], d.opg, d.k),
                View::rows(&col[gr * d.k * d.p..], d.k, d.p),
                par,
            );
        }
    });
    out
}

/// `X' = col2im(W^T * Y')` for every image.
pub(crate) fn backward_x(g: &Conv2dGeom, w: &[f32], grad: &[f32], isa: Isa) -> Vec<f32> {
    let d = dims(g);
    let [n, o, ..] = g.output();
    let mut gx = vec![0f32; n * d.x_len];
    per_image(&mut gx, d.x_len, d.col_len, |i, gxi, col, par| {
        let gi = &grad[i * o * d.p..][..o * d.p];
        let target: &mut [f32] = if d.col_len == 0 { gxi } else { col };
        for gr in 0..g.groups {
            matmul(
                &mut target[gr * d.k * d.p..][..d.k * d.p],
                false,
                View::transposed(&w[gr * d.opg * d.k..][..d.opg * d.k], d.opg, d.k),
                View::rows(&gi[gr * d.opg * d.p..], d.opg, d.p),
                par,
            );
        }
        if d.col_len != 0 {
            gxi.fill(0.0);
            col2im(isa, g, col, gxi);
        }
    });
    gx
}

/// `W' = sum_i Y'_i * col(X_i)^T`: each thread sums its share of the images into its own buffer,
/// and the buffers are added at the end.
pub(crate) fn backward_w(g: &Conv2dGeom, x: &[f32], grad: &[f32]) -> Vec<f32> {
    let d = dims(g);
    let [n, o, ..] = g.output();
    let w_len = o * d.k;
    let threads = rayon::current_num_threads().max(1);
    let add_images = |range: std::ops::Range<usize>, par: bool| {
        let mut gw = vec![0f32; w_len];
        let mut buf = vec![0f32; d.col_len];
        for i in range {
            let xi = &x[i * d.x_len..][..d.x_len];
            let gi = &grad[i * o * d.p..][..o * d.p];
            let col: &[f32] = if d.col_len == 0 {
                xi
            } else {
                im2col(g, xi, &mut buf);
                &buf
            };
            for gr in 0..g.groups {
                matmul(
                    &mut gw[gr * d.opg * d.k..][..d.opg * d.k],
                    true,
                    View::rows(&gi[gr * d.opg * d.p..], d.opg, d.p),
                    View::transposed(&col[gr * d.k * d.p..][..d.k * d.p], d.k, d.p),
                    par,
                );
            }
        }
        gw
    };
    if n < threads || threads == 1 {
        return add_images(0..n, true);
    }
    let parts = threads.min(n);
    (0..parts)
        .into_par_iter()
        .map(|t| add_images(t * n / parts..(t + 1) * n / parts, false))
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        })
        .unwrap_or_else(|| vec![0f32; w_len])
}

/// Writes one image's im2col matrix: row `(c, ki, kj)` holds, for every output pixel, the input
/// value tap `(ki, kj)` of channel `c` reads there (0 in the padding).
pub(crate) fn im2col(g: &Conv2dGeom, x: &[f32], col: &mut [f32]) {
    let [_, c, h, w] = g.input;
    let taps = g.weight[2] * g.weight[3];
    let [oh, ow] = g.out_hw;
    let p = oh * ow;
    for tap in g.taps() {
        let (rows, cols) = (tap.rows, tap.cols);
        for ch in 0..c {
            let row = &mut col[(ch * taps + tap.index) * p..][..p];
            let plane = &x[ch * h * w..][..h * w];
            for (r, dst) in row.chunks_exact_mut(ow).enumerate() {
                if tap.is_empty() || r < rows.lo || r >= rows.hi {
                    dst.fill(0.0);
                    continue;
                }
                let src = &plane[rows.input(r) * w..][..w];
                dst[..cols.lo].fill(0.0);
                dst[cols.hi..].fill(0.0);
                let start = cols.input(cols.lo);
                let dst = &mut dst[cols.lo..cols.hi];
                if cols.stride == 1 {
                    dst.copy_from_slice(&src[start..start + dst.len()]);
                } else {
                    for (d, s) in dst.iter_mut().zip(src[start..].iter().step_by(cols.stride)) {
                        *d = *s;
                    }
                }
            }
        }
    }
}

dispatch! {
    /// Adds an im2col-shaped gradient back onto the input positions each entry was read from.
    fn col2im => col2im_body(g: &Conv2dGeom, col: &[f32], x: &mut [f32])
}

#[inline(always)]
fn col2im_body<const FMA: bool>(g: &Conv2dGeom, col: &[f32], x: &mut [f32]) {
    let [_, c, h, w] = g.input;
    let taps = g.weight[2] * g.weight[3];
    let [oh, ow] = g.out_hw;
    let p = oh * ow;
    for ch in 0..c {
        let plane = &mut x[ch * h * w..][..h * w];
        for tap in g.taps().filter(|t| !t.is_empty()) {
            let (rows, cols) = (tap.rows, tap.cols);
            let row = &col[(ch * taps + tap.index) * p..][..p];
            let start = cols.input(cols.lo);
            for r in rows.lo..rows.hi {
                let src = &row[r * ow + cols.lo..r * ow + cols.hi];
                let dst = &mut plane[rows.input(r) * w..][..w];
                scatter_axpy::<FMA>(&mut dst[start..], 1.0, src, cols.stride);
            }
        }
    }
}
