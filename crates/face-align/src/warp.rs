//! `cv2.warpAffine` for 8-bit RGB images, reproduced, border 0.
//!
//! As OpenCV 5.0 computes it: the inverse map in f64, source coordinates in f32, f32 kernel
//! weights and sums, rounded half up. Nearest rounds the coordinates. On real photos this matches
//! `cv2.warpAffine` in all but about one pixel channel in 10^4, by 1 grey level
//! (crates/face-align/tests/parity.rs). OpenCV 4.x used 1/32-pixel fixed point instead, which
//! differs from 5.0 by up to 2 levels.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::{error::AlignError, geometry::Affine};

/// Pixel interpolation of a warp (OpenCV's `INTER_NEAREST`, `INTER_LINEAR`, `INTER_CUBIC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Nearest neighbour (OpenCV's `INTER_NEAREST`).
    Nearest,
    /// Bilinear (`INTER_LINEAR`), what insightface aligns with.
    #[default]
    Bilinear,
    /// Bicubic (`INTER_CUBIC`).
    Bicubic,
}

/// Warps `src` with the forward map `forward` (source -> crop, as given to `cv2.warpAffine`)
/// into a `width` x `height` crop. Pixels whose source lies outside the image are 0; partly
/// outside ones blend with 0, as OpenCV's `BORDER_CONSTANT` does.
pub fn warp_affine(
    src: &RgbImage,
    forward: &Affine,
    width: u32,
    height: u32,
    interpolation: Interpolation,
) -> Result<RgbImage, AlignError> {
    if width == 0 || height == 0 {
        return Err(AlignError::OutputSize(width, height));
    }
    let inv = forward.inverse()?.m;
    let mut out = RgbImage::new(width, height);
    let sampler = Sampler {
        data: src.as_raw(),
        width: src.width() as i64,
        height: src.height() as i64,
    };
    let row_len = width as usize * 3;
    for (y, row) in out.chunks_exact_mut(row_len).enumerate() {
        let yf = y as f64;
        // Source position of pixel (x, y) is (x0 + dx * x, y0 + dy * x), in f64 then f32.
        let (x0, dx) = (inv[0][1] * yf + inv[0][2], inv[0][0]);
        let (y0, dy) = (inv[1][1] * yf + inv[1][2], inv[1][0]);
        if interpolation == Interpolation::Bilinear {
            sampler.bilinear_row(row, x0, dx, y0, dy);
            continue;
        }
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let xf = x as f64;
            let (sx, sy) = ((x0 + dx * xf) as f32, (y0 + dy * xf) as f32);
            if !(sx.is_finite() && sy.is_finite()) {
                continue;
            }
            px.copy_from_slice(&match interpolation {
                Interpolation::Nearest => sampler.pixel(floor(sx + 0.5), floor(sy + 0.5)),
                _ => sampler.kernel::<4>(sx, sy, cubic_weights),
            });
        }
    }
    Ok(out)
}

/// Reads source pixels with OpenCV's constant-0 border.
struct Sampler<'a> {
    data: &'a [u8],
    width: i64,
    height: i64,
}

impl Sampler<'_> {
    #[inline]
    fn pixel(&self, x: i64, y: i64) -> [u8; 3] {
        if x < 0 || y < 0 || x >= self.width || y >= self.height {
            return [0; 3];
        }
        let i = ((y * self.width + x) * 3) as usize;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// One output row of bilinear samples, the hot loop of face alignment: SSE2 on x86-64
    /// (always present there), scalar elsewhere; both give identical bytes (unit-tested).
    fn bilinear_row(&self, row: &mut [u8], x0: f64, dx: f64, y0: f64, dy: f64) {
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx2() {
                // SAFETY: AVX2 is present (checked at run time).
                return unsafe { self.bilinear_row_avx2(row, x0, dx, y0, dy) };
            }
            // SAFETY: SSE2 is part of the x86-64 baseline.
            unsafe { self.bilinear_row_sse2(row, 0, x0, dx, y0, dy) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.bilinear_row_scalar(row, x0, dx, y0, dy)
    }

    /// Eight output pixels per step: positions, floors, fractions and weights in f32x8 with the
    /// scalar loop's operations in its order, the four taps of all eight pixels fetched by
    /// 32-bit gathers, the three channels blended lane-wise. A step with any pixel near or
    /// past the border (or any non-finite position), and the last few pixels, go through the
    /// SSE2 path, so every byte equals the scalar loop's (unit-tested).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn bilinear_row_avx2(&self, row: &mut [u8], x0: f64, dx: f64, y0: f64, dy: f64) {
        use std::arch::x86_64::*;
        // Byte offsets are i32 lanes: images the gathers cannot serve take the SSE2 path.
        let Some(source) =
            crate::taps::RgbSource::new(self.data, self.width as usize, self.height as usize)
        else {
            // SAFETY: SSE2 is part of the x86-64 baseline.
            return unsafe { self.bilinear_row_sse2(row, 0, x0, dx, y0, dy) };
        };
        let pixels = row.len() / 3;
        let (zero, top) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
        let mut first = 0;
        while first + 8 <= pixels {
            let index = |k: i32| {
                _mm256_setr_pd(
                    (first as i32 + k) as f64,
                    (first as i32 + k + 1) as f64,
                    (first as i32 + k + 2) as f64,
                    (first as i32 + k + 3) as f64,
                )
            };
            let coords = |base: f64, step: f64| {
                let (b, s) = (_mm256_set1_pd(base), _mm256_set1_pd(step));
                let lo = _mm256_cvtpd_ps(_mm256_add_pd(b, _mm256_mul_pd(s, index(0))));
                let hi = _mm256_cvtpd_ps(_mm256_add_pd(b, _mm256_mul_pd(s, index(4))));
                _mm256_set_m128(hi, lo)
            };
            // SAFETY: AVX2 is present (this function's contract).
            let taps =
                unsafe { crate::taps::bilinear_taps8(source, coords(x0, dx), coords(y0, dy)) };
            let Some(taps) = taps else {
                // SAFETY: SSE2 is part of the x86-64 baseline.
                unsafe {
                    self.bilinear_row_sse2(
                        &mut row[first * 3..(first + 8) * 3],
                        first,
                        x0,
                        dx,
                        y0,
                        dy,
                    )
                };
                first += 8;
                continue;
            };
            let mut ints = [_mm256_setzero_si256(); 3];
            for (c, out) in ints.iter_mut().enumerate() {
                // SAFETY: AVX2 is present.
                let ch = unsafe { taps.channel(c as i32) };
                let w = &taps.weights;
                let mut acc = _mm256_mul_ps(w[0], ch[0]);
                acc = _mm256_add_ps(acc, _mm256_mul_ps(w[1], ch[1]));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(w[2], ch[2]));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(w[3], ch[3]));
                let clamped = _mm256_min_ps(_mm256_max_ps(acc, zero), top);
                *out = _mm256_cvttps_epi32(_mm256_add_ps(clamped, _mm256_set1_ps(0.5)));
            }
            // SAFETY: AVX2 is present.
            unsafe { crate::taps::store_rgb8(ints, &mut row[first * 3..(first + 8) * 3]) };
            first += 8;
        }
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { self.bilinear_row_sse2(&mut row[first * 3..], first, x0, dx, y0, dy) };
    }

    /// Weights of the four taps for fractions (a, b), in the order OpenCV sums them.
    #[inline(always)]
    fn tap_weights(a: f32, b: f32) -> [f32; 4] {
        [(1.0 - a) * (1.0 - b), a * (1.0 - b), (1.0 - a) * b, a * b]
    }

    /// Whether the 2x2 block at (ix, iy) is inside the image, and its first byte.
    #[inline(always)]
    fn block_start(&self, ix: i64, iy: i64) -> Option<usize> {
        (ix >= 0 && iy >= 0 && ix + 1 < self.width && iy + 1 < self.height)
            .then(|| (iy * self.width * 3 + ix * 3) as usize)
    }

    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    fn bilinear_row_scalar(&self, row: &mut [u8], x0: f64, dx: f64, y0: f64, dy: f64) {
        let stride = (self.width * 3) as usize;
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let xf = x as f64;
            let (sx, sy) = ((x0 + dx * xf) as f32, (y0 + dy * xf) as f32);
            if !(sx.is_finite() && sy.is_finite()) {
                continue;
            }
            let (ix, iy) = (floor(sx), floor(sy));
            let [w00, w01, w10, w11] = Self::tap_weights(sx - ix as f32, sy - iy as f32);
            match self.block_start(ix, iy) {
                Some(i) => {
                    let (top, bottom) =
                        (&self.data[i..i + 6], &self.data[i + stride..i + stride + 6]);
                    for c in 0..3 {
                        let v = w00 * top[c] as f32
                            + w01 * top[c + 3] as f32
                            + w10 * bottom[c] as f32
                            + w11 * bottom[c + 3] as f32;
                        px[c] = (v.clamp(0.0, 255.0) + 0.5) as u8;
                    }
                }
                None => px.copy_from_slice(&self.kernel::<2>(sx, sy, |t| [1.0 - t, t])),
            }
        }
    }

    /// The scalar loop's arithmetic in SSE2: the (x, y) source position as one f64 pair,
    /// converted to f32 and floored together, the three channels blended in one f32x4.
    /// `row` holds the pixels from `first` on.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse2")]
    unsafe fn bilinear_row_sse2(
        &self,
        row: &mut [u8],
        first: usize,
        x0: f64,
        dx: f64,
        y0: f64,
        dy: f64,
    ) {
        use std::arch::x86_64::*;
        let stride = (self.width * 3) as usize;
        let (base, step) = (_mm_set_pd(y0, x0), _mm_set_pd(dy, dx));
        let one = _mm_set1_ps(1.0);
        for (x, px) in (first..).zip(row.chunks_exact_mut(3)) {
            let pos = _mm_cvtpd_ps(_mm_add_pd(base, _mm_mul_pd(step, _mm_set1_pd(x as f64))));
            let trunc = _mm_cvtepi32_ps(_mm_cvttps_epi32(pos));
            let floor = _mm_sub_ps(trunc, _mm_and_ps(_mm_cmpgt_ps(trunc, pos), one));
            let frac = _mm_sub_ps(pos, floor);
            let cells = _mm_cvttps_epi32(floor);
            let (ix, iy) = (
                _mm_cvtsi128_si32(cells) as i64,
                _mm_cvtsi128_si32(_mm_shuffle_epi32(cells, 0b01)) as i64,
            );
            match self.block_start(ix, iy) {
                // Non-finite or out-of-range positions convert to i32::MIN and land below.
                Some(i) if i + stride + 7 <= self.data.len() => {
                    let (a, b) = (
                        _mm_cvtss_f32(frac),
                        _mm_cvtss_f32(_mm_shuffle_ps(frac, frac, 0b01)),
                    );
                    let v = blend4_sse2(&self.data[i..], stride, Self::tap_weights(a, b));
                    px.copy_from_slice(&v[..3]);
                }
                _ => {
                    let (sx, sy) = (
                        _mm_cvtss_f32(pos),
                        _mm_cvtss_f32(_mm_shuffle_ps(pos, pos, 0b01)),
                    );
                    if sx.is_finite() && sy.is_finite() {
                        px.copy_from_slice(&self.kernel::<2>(sx, sy, |t| [1.0 - t, t]));
                    }
                }
            }
        }
    }

    /// A separable K x K kernel at a float position, in f32 as OpenCV 5.0 computes it;
    /// out-of-image taps count as 0. `weights(t)` gives the K taps for fraction `t`.
    #[inline]
    fn kernel<const K: usize>(
        &self,
        sx: f32,
        sy: f32,
        weights: impl Fn(f32) -> [f32; K],
    ) -> [u8; 3] {
        let (ix, iy) = (floor(sx), floor(sy));
        let offset = (K / 2 - 1) as i64;
        let (x0, y0) = (ix - offset, iy - offset);
        let k = K as i64;
        if x0 >= self.width || y0 >= self.height || x0 + k <= 0 || y0 + k <= 0 {
            return [0; 3];
        }
        let (wx, wy) = (weights(sx - ix as f32), weights(sy - iy as f32));
        let inside = x0 >= 0 && y0 >= 0 && x0 + k <= self.width && y0 + k <= self.height;
        let mut acc = [0.0f32; 3];
        for (r, wr) in wy.iter().enumerate() {
            for (c, wc) in wx.iter().enumerate() {
                let (x, y) = (x0 + c as i64, y0 + r as i64);
                let p = if inside {
                    let i = ((y * self.width + x) * 3) as usize;
                    [self.data[i], self.data[i + 1], self.data[i + 2]]
                } else {
                    self.pixel(x, y)
                };
                let w = wr * wc;
                for ch in 0..3 {
                    acc[ch] += w * p[ch] as f32;
                }
            }
        }
        // Round half up and saturate; `as` truncates, which is floor for the clamped (>= 0) value
        // and avoids a libm call per channel (no SSE4.1 `roundss` on the baseline target).
        acc.map(|v| (v.clamp(0.0, 255.0) + 0.5) as u8)
    }
}

/// The three channels of a bilinear sample at once: lanes are (R, G, B, next R), the four
/// taps are 4-byte loads at `p`, `p + 3`, `p + stride`, `p + stride + 3`, summed in the same
/// order as the scalar path (so results are identical), rounded half up and saturated.
///
/// # Safety
/// `p` must hold at least `stride + 7` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
unsafe fn blend4_sse2(p: &[u8], stride: usize, w: [f32; 4]) -> [u8; 4] {
    use std::arch::x86_64::*;
    let load = |offset: usize| {
        let word = std::ptr::read_unaligned(p.as_ptr().add(offset) as *const i32);
        let zero = _mm_setzero_si128();
        let bytes = _mm_cvtsi32_si128(word);
        _mm_cvtepi32_ps(_mm_unpacklo_epi16(_mm_unpacklo_epi8(bytes, zero), zero))
    };
    let mut acc = _mm_mul_ps(_mm_set1_ps(w[0]), load(0));
    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(w[1]), load(3)));
    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(w[2]), load(stride)));
    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(w[3]), load(stride + 3)));
    let clamped = _mm_min_ps(_mm_max_ps(acc, _mm_setzero_ps()), _mm_set1_ps(255.0));
    let ints = _mm_cvttps_epi32(_mm_add_ps(clamped, _mm_set1_ps(0.5)));
    let packed = _mm_packus_epi16(_mm_packs_epi32(ints, ints), _mm_setzero_si128());
    _mm_cvtsi128_si32(packed).to_le_bytes()
}

/// Whether this CPU has AVX2 (checked once).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX2.get_or_init(|| std::arch::is_x86_feature_detected!("avx2"))
}

/// `floor` for coordinates, without a libm call.
#[inline]
fn floor(v: f32) -> i64 {
    let t = v as i64;
    t - ((t as f32) > v) as i64
}

/// OpenCV's cubic convolution kernel (A = -0.75) for fraction `x`.
fn cubic_weights(x: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let c0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let c1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    [c0, c1, c2, 1.0 - c0 - c1 - c2]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SSE2 and AVX2 rows equal the scalar row byte for byte, over rotations, scales,
    /// sub-pixel shifts and positions partly or wholly outside the image (odd sizes included).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn sse2_bilinear_equals_scalar() {
        let img = RgbImage::from_fn(97, 61, |x, y| {
            image::Rgb([
                (x * 31 + y * 7) as u8,
                (x * y + 3) as u8,
                (x ^ (y * 5)) as u8,
            ])
        });
        let sampler = Sampler {
            data: img.as_raw(),
            width: 97,
            height: 61,
        };
        let mut seed = 7u64;
        let mut rand = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for _ in 0..300 {
            let (angle, scale) = (rand() * 6.3, 0.2 + rand() * 3.0);
            let (dx, dy) = (scale * angle.cos(), scale * angle.sin());
            let (x0, y0) = (rand() * 160.0 - 40.0, rand() * 120.0 - 30.0);
            let (mut a, mut b) = (vec![0u8; 3 * 53], vec![0u8; 3 * 53]);
            sampler.bilinear_row_scalar(&mut a, x0, dx, y0, dy);
            unsafe { sampler.bilinear_row_sse2(&mut b, 0, x0, dx, y0, dy) };
            assert_eq!(a, b, "x0 {x0} dx {dx} y0 {y0} dy {dy}");
            if has_avx2() {
                let mut c = vec![0u8; 3 * 53];
                unsafe { sampler.bilinear_row_avx2(&mut c, x0, dx, y0, dy) };
                assert_eq!(a, c, "AVX2: x0 {x0} dx {dx} y0 {y0} dy {dy}");
            }
        }
        for x0 in [f64::NAN, 3.0] {
            let (mut a, mut b, mut c) = (vec![0u8; 27], vec![0u8; 27], vec![0u8; 27]);
            sampler.bilinear_row_scalar(&mut a, x0, 1.0, f64::NAN, 0.0);
            unsafe { sampler.bilinear_row_sse2(&mut b, 0, x0, 1.0, f64::NAN, 0.0) };
            if has_avx2() {
                unsafe { sampler.bilinear_row_avx2(&mut c, x0, 1.0, f64::NAN, 0.0) };
            }
            assert_eq!((&a, &b, &c), (&vec![0; 27], &vec![0; 27], &vec![0; 27]));
        }
    }
}
