//! Depthwise convolutions (one 2-D filter per channel) as direct loops over planes: a matrix
//! product with one row per channel wastes the matrix kernels, and Burn's generic weight gradient
//! runs one convolution per channel. Each kernel tap is a vectorised `y += a * x` over a row
//! (stride 1) or a strided one.

use rayon::prelude::*;

use crate::geom::Conv2dGeom;
use crate::isa::{axpy, axpy_strided, dispatch, dot, scatter_axpy, Isa};

/// Planes handed to one rayon task at a time: small planes (7x7) would otherwise cost more in
/// scheduling than in arithmetic.
fn min_planes(plane: usize) -> usize {
    (4096 / plane.max(1)).max(1)
}

/// The forward pass.
pub(crate) fn forward(g: &Conv2dGeom, x: &[f32], w: &[f32], isa: Isa) -> Vec<f32> {
    let [n, c, h, wd] = g.input;
    let taps = g.weight[2] * g.weight[3];
    let p = g.out_hw[0] * g.out_hw[1];
    let mut out = vec![0f32; n * c * p];
    out.par_chunks_mut(p)
        .with_min_len(min_planes(p))
        .enumerate()
        .for_each(|(plane, y)| {
            let ch = plane % c;
            forward_plane(
                isa,
                g,
                &x[plane * h * wd..][..h * wd],
                &w[ch * taps..][..taps],
                y,
            );
        });
    out
}

/// The input gradient.
pub(crate) fn backward_x(g: &Conv2dGeom, w: &[f32], grad: &[f32], isa: Isa) -> Vec<f32> {
    let [n, c, h, wd] = g.input;
    let taps = g.weight[2] * g.weight[3];
    let p = g.out_hw[0] * g.out_hw[1];
    let mut gx = vec![0f32; n * c * h * wd];
    gx.par_chunks_mut(h * wd)
        .with_min_len(min_planes(h * wd))
        .enumerate()
        .for_each(|(plane, gx)| {
            let ch = plane % c;
            backward_x_plane(isa, g, &grad[plane * p..][..p], &w[ch * taps..][..taps], gx);
        });
    gx
}

/// The weight gradient: channels spread over the threads, each summing over the batch.
pub(crate) fn backward_w(g: &Conv2dGeom, x: &[f32], grad: &[f32], isa: Isa) -> Vec<f32> {
    let c = g.input[1];
    let taps = g.weight[2] * g.weight[3];
    let mut gw = vec![0f32; c * taps];
    gw.par_chunks_mut(taps)
        .enumerate()
        .for_each(|(ch, gw)| backward_w_channel(isa, g, x, grad, ch, gw));
    gw
}

dispatch! {
    /// `y = sum over taps of w[tap] * shifted x` for one plane.
    fn forward_plane => forward_plane_body(g: &Conv2dGeom, x: &[f32], w: &[f32], y: &mut [f32])
}

#[inline(always)]
fn forward_plane_body<const FMA: bool>(g: &Conv2dGeom, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (wd, ow) = (g.input[3], g.out_hw[1]);
    for tap in g.taps().filter(|t| !t.is_empty()) {
        let (rows, cols, a) = (tap.rows, tap.cols, w[tap.index]);
        let start = cols.input(cols.lo);
        for r in rows.lo..rows.hi {
            let src = &x[rows.input(r) * wd..][..wd];
            let dst = &mut y[r * ow + cols.lo..r * ow + cols.hi];
            if cols.stride == 1 {
                axpy::<FMA>(dst, a, &src[start..start + dst.len()]);
            } else {
                axpy_strided::<FMA>(dst, a, &src[start..], cols.stride);
            }
        }
    }
}

dispatch! {
    /// Adds `w[tap] * y'` back onto the input positions each tap read, for one plane.
    fn backward_x_plane => backward_x_plane_body(g: &Conv2dGeom, gy: &[f32], w: &[f32], gx: &mut [f32])
}

#[inline(always)]
fn backward_x_plane_body<const FMA: bool>(g: &Conv2dGeom, gy: &[f32], w: &[f32], gx: &mut [f32]) {
    let (wd, ow) = (g.input[3], g.out_hw[1]);
    for tap in g.taps().filter(|t| !t.is_empty()) {
        let (rows, cols, a) = (tap.rows, tap.cols, w[tap.index]);
        let start = cols.input(cols.lo);
        for r in rows.lo..rows.hi {
            let src = &gy[r * ow + cols.lo..r * ow + cols.hi];
            let dst = &mut gx[rows.input(r) * wd..][..wd];
            if cols.stride == 1 {
                axpy::<FMA>(&mut dst[start..start + src.len()], a, src);
            } else {
                scatter_axpy::<FMA>(&mut dst[start..], a, src, cols.stride);
            }
        }
    }
}

dispatch! {
    /// `w'[tap] = sum over images and pixels of y' * shifted x`, for one channel.
    fn backward_w_channel => backward_w_channel_body(g: &Conv2dGeom, x: &[f32], grad: &[f32], ch: usize, gw: &mut [f32])
}

#[inline(always)]
fn backward_w_channel_body<const FMA: bool>(
    g: &Conv2dGeom,
    x: &[f32],
    grad: &[f32],
    ch: usize,
    gw: &mut [f32],
) {
    let [n, c, h, wd] = g.input;
    let [oh, ow] = g.out_hw;
    for i in 0..n {
        let xp = &x[(i * c + ch) * h * wd..][..h * wd];
        let gp = &grad[(i * c + ch) * oh * ow..][..oh * ow];
        for tap in g.taps().filter(|t| !t.is_empty()) {
            let (rows, cols) = (tap.rows, tap.cols);
            let start = cols.input(cols.lo);
            let mut sum = 0f32;
            for r in rows.lo..rows.hi {
                let src = &xp[rows.input(r) * wd + start..rows.input(r) * wd + wd];
                sum += dot::<FMA>(&gp[r * ow + cols.lo..r * ow + cols.hi], src, cols.stride);
            }
            gw[tap.index] += sum;
        }
    }
}
