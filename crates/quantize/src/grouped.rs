//! Direct grouped and depthwise convolution over channels-last tensors (MobileFaceNet's 3x3
//! depthwise layers, its grouped stem, the 7x7 GDC head): too little arithmetic per weight for
//! im2col and a GEMM to pay off. One loop nest serves the int8 engine (u8 minus zero point times
//! i16 weights into i32) and the f32 one; on AVX2 machines it is compiled a second time with
//! AVX2 enabled, where the depthwise inner loop vectorises across channels.

use rayon::prelude::*;

/// Geometry of a grouped convolution on one `[n, h, w, c]` input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grouped {
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    /// Input channels per group.
    pub cpg: usize,
    /// Output channels per group.
    pub opg: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Grouped {
    /// The geometry of a layer with weights `[cout, cpg, k, k]` on an `h x w` input.
    pub fn of(
        [cout, cpg, k, _]: [usize; 4],
        groups: usize,
        stride: usize,
        padding: usize,
        [h, w]: [usize; 2],
    ) -> Self {
        Self {
            h,
            w,
            cout,
            cpg,
            opg: cout / groups,
            kernel: k,
            stride,
            padding,
        }
    }

    pub fn out_size(&self, size: usize) -> usize {
        crate::graph::out_size(size, self.kernel, self.stride, self.padding)
    }
    fn cin(&self) -> usize {
        self.cpg * self.cout / self.opg
    }
    /// Input and output channels per group match (see [`relayout`]).
    fn shifted(&self) -> bool {
        self.cpg == self.opg
    }
}

/// Weights `[cout, cpg, k, k]` (PyTorch's layout) re-laid for [`accumulate`]:
/// `[k * k][cpg + opg - 1][cout]` when input and output channels match (depthwise and most
/// grouped layers), else `[k * k][cpg][cout]`.
///
/// The first form writes the layer as `cpg + opg - 1` shifted channel-wise products: output
/// channel `o` reads input channel `o + d`, with `d` from `-(opg - 1)` to `cpg - 1` and a zero
/// weight where `o + d` falls outside `o`'s group, so every inner loop is a contiguous run of
/// channels that vectorises (depthwise is the case `d = 0` alone).
pub(crate) fn relayout<W: Copy + Default>(
    weights: &[W],
    [cout, cpg, k, _]: [usize; 4],
    opg: usize,
) -> Vec<W> {
    let taps = k * k;
    if cpg == opg {
        let shifts = cpg + opg - 1;
        let mut out = vec![W::default(); taps * shifts * cout];
        for o in 0..cout {
            for ci in 0..cpg {
                // o reads input channel (o / opg) * cpg + ci = o + d.
                let d = ci as isize - (o % opg) as isize;
                let index = (d + opg as isize - 1) as usize;
                for t in 0..taps {
                    out[(t * shifts + index) * cout + o] = weights[(o * cpg + ci) * taps + t];
                }
            }
        }
        out
    } else {
        let mut out = vec![W::default(); weights.len()];
        for o in 0..cout {
            for ci in 0..cpg {
                for t in 0..taps {
                    out[(t * cpg + ci) * cout + o] = weights[(o * cpg + ci) * taps + t];
                }
            }
        }
        out
    }
}

/// Accumulates `acc[(b, oy, ox), o] = sum mac(x, w)` over the valid taps (padding contributes
/// nothing, which for the int8 engine is "input equal to its zero point").
pub(crate) fn accumulate<X, W, A>(
    g: Grouped,
    x: &[X],
    weights: &[W],
    acc: &mut [A],
    mac: impl Fn(A, X, W) -> A + Sync + Copy,
) where
    X: Copy + Sync,
    W: Copy + Sync,
    A: Copy + Default + Send,
{
    let (oh, ow) = (g.out_size(g.h), g.out_size(g.w));
    acc.par_chunks_mut(ow * g.cout)
        .enumerate()
        .for_each(|(line, out)| {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 is present (checked just above).
                unsafe { line_avx2(g, x, weights, out, line, oh, mac) };
                return;
            }
            line_body(g, x, weights, out, line, oh, mac);
        });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn line_avx2<X: Copy, W: Copy, A: Copy + Default>(
    g: Grouped,
    x: &[X],
    weights: &[W],
    out: &mut [A],
    line: usize,
    oh: usize,
    mac: impl Fn(A, X, W) -> A + Copy,
) {
    line_body(g, x, weights, out, line, oh, mac)
}

#[inline(always)]
fn line_body<X: Copy, W: Copy, A: Copy + Default>(
    g: Grouped,
    x: &[X],
    weights: &[W],
    out: &mut [A],
    line: usize,
    oh: usize,
    mac: impl Fn(A, X, W) -> A + Copy,
) {
    let (b, oy) = (line / oh, line % oh);
    let (cin, cout, k) = (g.cin(), g.cout, g.kernel);
    let ow = out.len() / cout;
    out.fill(A::default());
    for (ox, acc) in out.chunks_exact_mut(cout).enumerate().take(ow) {
        for ky in 0..k {
            let iy = (oy * g.stride + ky) as isize - g.padding as isize;
            if iy < 0 || iy >= g.h as isize {
                continue;
            }
            for kx in 0..k {
                let ix = (ox * g.stride + kx) as isize - g.padding as isize;
                if ix < 0 || ix >= g.w as isize {
                    continue;
                }
                let pixel = &x[((b * g.h + iy as usize) * g.w + ix as usize) * cin..][..cin];
                if g.shifted() {
                    let shifts = g.cpg + g.opg - 1;
                    let taps = &weights[(ky * k + kx) * shifts * cout..][..shifts * cout];
                    for (index, row) in taps.chunks_exact(cout).enumerate() {
                        let d = index as isize - (g.opg as isize - 1);
                        let lo = (-d).max(0) as usize;
                        let hi = (cin as isize - d).min(cout as isize) as usize;
                        let xs = &pixel[(lo as isize + d) as usize..][..hi - lo];
                        for ((a, &xv), &wv) in acc[lo..hi].iter_mut().zip(xs).zip(&row[lo..hi]) {
                            *a = mac(*a, xv, wv);
                        }
                    }
                } else {
                    let taps = &weights[(ky * k + kx) * g.cpg * cout..][..g.cpg * cout];
                    for group in 0..cout / g.opg {
                        for ci in 0..g.cpg {
                            let xv = pixel[group * g.cpg + ci];
                            let outs = group * g.opg..(group + 1) * g.opg;
                            let row = &taps[ci * cout..][outs.clone()];
                            for (a, &wv) in acc[outs].iter_mut().zip(row) {
                                *a = mac(*a, xv, wv);
                            }
                        }
                    }
                }
            }
        }
    }
}
