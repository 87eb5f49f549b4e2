//! Direct grouped and depthwise convolution over channels-last tensors (MobileFaceNet's 3x3
//! depthwise layers, its grouped stem, the 7x7 GDC head): too little arithmetic per weight for
//! im2col and a GEMM to pay off.
//!
//! Both engines run it in f32. The input is first copied into a zero-bordered f32 buffer
//! ([`Padded`]), so no tap or channel shift ever reads outside it and the inner loops have no
//! bounds to test. For the int8 engine the copy holds `q - zero_point` (padding is then a real
//! 0, as the zero point stands for) and the weights are the int8 values: every product and
//! partial sum is an integer below 2^24 in magnitude as long as `k * k * cpg * 255 * 127` is
//! (see [`exact_in_f32`]), so the f32 sums are exactly the integer sums, with a quarter
//! of the instructions of widening to i32 and multiplying there (`vpmulld`).

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
    pub fn shifted(&self) -> bool {
        self.cpg == self.opg
    }

    /// Extra zero channels on each side of every padded pixel: the reach of the channel shifts.
    fn channel_margin(&self) -> usize {
        if self.shifted() {
            self.opg - 1
        } else {
            0
        }
    }
}

/// Whether int8 sums of a `k x k` grouped layer with `cpg` input channels per group are exact in
/// f32: the largest possible sum of absolute products, `k * k * cpg * 255 * 127`, stays within
/// f32's 24-bit integers. True for depthwise and narrow grouped layers (up to 57 channels per
/// group at 3x3, 10 at 7x7).
pub(crate) fn exact_in_f32(k: usize, cpg: usize) -> bool {
    k * k * cpg * 255 * 127 < 1 << 24
}

/// Weights `[cout, cpg, k, k]` (PyTorch's layout) re-laid for [`line`]:
/// `[k * k][cpg + opg - 1][cout]` when input and output channels match (depthwise and most
/// grouped layers), else `[k * k][cpg][cout]`.
///
/// The first form writes the layer as `cpg + opg - 1` shifted channel-wise products: output
/// channel `o` reads input channel `o + d`, with `d` from `-(opg - 1)` to `cpg - 1` and a zero
/// weight where `o + d` falls outside `o`'s group, so every inner loop is a contiguous run of
/// channels that vectorises (depthwise is the case `d = 0` alone).
pub(crate) fn relayout(weights: &[f32], [cout, cpg, k, _]: [usize; 4], opg: usize) -> Vec<f32> {
    let taps = k * k;
    if cpg == opg {
        let shifts = cpg + opg - 1;
        let mut out = vec![0.0; taps * shifts * cout];
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
        let mut out = vec![0.0; weights.len()];
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

/// The `k` input rows one output line reads, as f32, with `padding` zero pixels on both sides
/// of each row (and zero rows above or below the image where the kernel overhangs it) and
/// [`Grouped::channel_margin`] zero channels on both sides of each pixel; and small scratch
/// (one pixel's sums, the tap offsets).
/// Made per line in buffers each task reuses, so they stay in cache.
#[derive(Default)]
pub(crate) struct Window {
    data: Vec<f32>,
    /// Padded row width in pixels and pixel width in channels.
    w: usize,
    c: usize,
    sums: Vec<f32>,
    /// The (tap, shift) pairs of the shifted form.
    pairs: Vec<(usize, usize)>,
}

impl Window {
    /// Loads the rows of output line `line = b * oh + oy` from `x` (`[n, g.h, g.w, cin]`).
    #[inline(always)]
    fn load<X: Copy>(&mut self, g: Grouped, x: &[X], line: usize, value: impl Fn(X) -> f32) {
        let cin = g.cin();
        let margin = g.channel_margin();
        let oh = g.out_size(g.h);
        let (b, oy) = (line / oh, line % oh);
        self.w = g.w + 2 * g.padding;
        self.c = cin + 2 * margin;
        let row_len = self.w * self.c;
        self.data.clear();
        self.data.resize(g.kernel * row_len, 0.0);
        for (ky, row) in self.data.chunks_exact_mut(row_len).enumerate() {
            let Some(iy) = (oy * g.stride + ky)
                .checked_sub(g.padding)
                .filter(|&y| y < g.h)
            else {
                continue;
            };
            let src = &x[(b * g.h + iy) * g.w * cin..][..g.w * cin];
            for (pixel, dst) in src
                .chunks_exact(cin)
                .zip(row[g.padding * self.c..].chunks_exact_mut(self.c))
            {
                for (d, &v) in dst[margin..margin + cin].iter_mut().zip(pixel) {
                    *d = value(v);
                }
            }
        }
    }
}

/// What a line's sums are written as: f32 for the f32 engine, i32 for the int8 one (whose sums
/// are exact integers, see [`exact_in_f32`]).
pub(crate) trait Sum: Copy + Default + Send {
    fn from_f32(v: f32) -> Self;
}

impl Sum for f32 {
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Sum for i32 {
    /// Truncates, saturating at i32's range (NaN gives i32::MIN); written so it vectorises
    /// (`as i32` checks value by value).
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        // 2147483520 is the largest f32 below 2^31; `max` returns the number for a NaN `v`.
        #[allow(clippy::manual_clamp)]
        let v = v.max(i32::MIN as f32).min(2_147_483_520.0);
        // SAFETY: `v` is finite and within i32's range.
        unsafe { v.to_int_unchecked() }
    }
}

/// Output line `line = b * oh + oy` of the layer over `x` (`[n, g.h, g.w, cin]`, `value` turns
/// an element into the real number it stands for, for u8 minus its zero point) into `out`
/// (`ow * cout` values), on the calling thread; `window` is scratch space.
pub(crate) fn line<X: Copy, S: Sum>(
    g: Grouped,
    window: &mut Window,
    x: &[X],
    value: impl Fn(X) -> f32,
    weights: &[f32],
    line: usize,
    out: &mut [S],
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        return unsafe { line_avx2(g, window, x, value, weights, line, out) };
    }
    window.load(g, x, line, value);
    line_body::<S, false>(g, window, weights, out)
}

/// [`line`] compiled with AVX2: the window's conversion, the products and the stores vectorise.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn line_avx2<X: Copy, S: Sum>(
    g: Grouped,
    window: &mut Window,
    x: &[X],
    value: impl Fn(X) -> f32,
    weights: &[f32],
    line: usize,
    out: &mut [S],
) {
    window.load(g, x, line, value);
    line_body::<S, true>(g, window, weights, out)
}

/// Output channels per register block: 64 f32 sums, eight of AVX2's sixteen registers.
const LANES: usize = 64;

/// `FMA`: fused multiply-adds in the register blocks (only where the CPU has them: elsewhere
/// `mul_add` is a library call). The int8 engine's sums are exact either way.
#[inline(always)]
fn line_body<S: Sum, const FMA: bool>(g: Grouped, x: &mut Window, weights: &[f32], out: &mut [S]) {
    let (cout, k) = (g.cout, g.kernel);
    let margin = g.channel_margin();
    if g.shifted() {
        // Every (tap, shift) pair as (offset into the window from the kernel's corner, offset
        // of its weight row): output channel o of the pair reads window channel o + shift,
        // that is real input channel o + shift - (opg - 1).
        let shifts = g.cpg + g.opg - 1;
        let (w, c) = (x.w, x.c);
        // Refilled in the window's own buffer: no allocation per line.
        let mut pairs = std::mem::take(&mut x.pairs);
        pairs.clear();
        pairs.extend(taps_of(k).enumerate().flat_map(|(t, (ky, kx))| {
            (0..shifts).map(move |s| ((ky * w + kx) * c + s, (t * shifts + s) * cout))
        }));
        for (ox, pixel_out) in out.chunks_exact_mut(cout).enumerate() {
            let corner = ox * g.stride * x.c;
            // Block by block, the block's sums stay in registers over every tap and shift;
            // the last block may be partial.
            for c0 in (0..cout).step_by(LANES) {
                let mut acc = [0f32; LANES];
                if c0 + LANES <= cout {
                    for &(xo, wo) in &pairs {
                        let xs: &[f32; LANES] = x.data[corner + xo + c0..][..LANES]
                            .try_into()
                            .expect("LANES values");
                        let ws: &[f32; LANES] = weights[wo + c0..][..LANES]
                            .try_into()
                            .expect("LANES values");
                        for j in 0..LANES {
                            acc[j] = if FMA {
                                xs[j].mul_add(ws[j], acc[j])
                            } else {
                                acc[j] + xs[j] * ws[j]
                            };
                        }
                    }
                } else {
                    let rest = &mut acc[..cout - c0];
                    for &(xo, wo) in &pairs {
                        let xs = &x.data[corner + xo + c0..];
                        for ((a, &xv), &wv) in rest.iter_mut().zip(xs).zip(&weights[wo + c0..]) {
                            *a += xv * wv;
                        }
                    }
                }
                for (o, &a) in pixel_out[c0..].iter_mut().zip(&acc) {
                    *o = S::from_f32(a);
                }
            }
        }
        x.pairs = pairs;
        return;
    }
    let mut sums = std::mem::take(&mut x.sums);
    sums.resize(cout, 0.0);
    for (ox, pixel_out) in out.chunks_exact_mut(cout).enumerate() {
        sums.fill(0.0);
        for (t, (ky, kx)) in taps_of(k).enumerate() {
            let pixel = &x.data[(ky * x.w + ox * g.stride + kx) * x.c + margin..];
            let taps = &weights[t * g.cpg * cout..][..g.cpg * cout];
            for group in 0..cout / g.opg {
                let outs = group * g.opg..(group + 1) * g.opg;
                for ci in 0..g.cpg {
                    let xv = pixel[group * g.cpg + ci];
                    let row = &taps[ci * cout..][outs.clone()];
                    for (a, &wv) in sums[outs.clone()].iter_mut().zip(row) {
                        *a += xv * wv;
                    }
                }
            }
        }
        for (o, &a) in pixel_out.iter_mut().zip(&sums) {
            *o = S::from_f32(a);
        }
    }
    x.sums = sums;
}

/// `(ky, kx)` of a `k x k` kernel in row-major order (without a division per tap).
#[inline(always)]
fn taps_of(k: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..k).flat_map(move |ky| (0..k).map(move |kx| (ky, kx)))
}
