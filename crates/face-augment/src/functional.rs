//! The deterministic cores, with torchvision's semantics on uint8 tensors
//! (`torchvision.transforms.functional` 0.29): float32 arithmetic, the same rounding (truncation
//! for the colour blends, round-half-even after `rotate`), the same greyscale weights.

use image::{imageops, RgbImage};

use crate::sample::Chw;

/// torchvision's `rgb_to_grayscale` weights.
const GREY: [f32; 3] = [0.2989, 0.587, 0.114];

/// Round half to even for `0 <= v < 2^22`, as `torch.round`, without a libm call: adding and
/// subtracting 2^23 leaves the integer f32 rounding picks (ties to even).
#[inline]
fn round_half_even(v: f32) -> f32 {
    const MAGIC: f32 = 8_388_608.0;
    (v + MAGIC) - MAGIC
}

/// `_blend(img1, img2, ratio)`: `(ratio * img1 + (1 - ratio) * img2).clamp(0, 255).to(uint8)`,
/// with `ratio` and `1 - ratio` computed in f64 (Python floats) and used as f32.
#[derive(Clone, Copy)]
struct Blend {
    ratio: f32,
    rest: f32,
}

impl Blend {
    fn new(ratio: f64) -> Self {
        Self {
            ratio: ratio as f32,
            rest: (1.0 - ratio) as f32,
        }
    }

    /// `ratio * x` for every byte value: the same f32 products, looked up instead of recomputed.
    fn table(self) -> [f32; 256] {
        std::array::from_fn(|x| self.ratio * x as f32)
    }
}

/// Greyscale weights times every byte value, so `grey_u8` is three lookups and two adds in
/// torchvision's order.
fn grey_tables() -> [[f32; 256]; 3] {
    std::array::from_fn(|c| std::array::from_fn(|x| GREY[c] * x as f32))
}

#[inline]
fn grey_lookup(t: &[[f32; 256]; 3], p: &[u8]) -> f32 {
    (t[0][p[0] as usize] + t[1][p[1] as usize] + t[2][p[2] as usize]) as u8 as f32
}

/// `F.hflip`.
pub fn hflip(img: &RgbImage) -> RgbImage {
    imageops::flip_horizontal(img)
}

/// `F.adjust_brightness`: blend with black.
pub fn adjust_brightness(img: &RgbImage, factor: f64) -> RgbImage {
    // Depends on the byte alone: one 256-entry table of the exact result.
    let blend = Blend::new(factor);
    let scaled = blend.table();
    let lut: [u8; 256] =
        std::array::from_fn(|x| (scaled[x] + blend.rest * 0.0).clamp(0.0, 255.0) as u8);
    let mut out = img.clone();
    out.iter_mut().for_each(|v| *v = lut[*v as usize]);
    out
}

/// `F.adjust_contrast`: blend with the mean of the (truncated) greyscale image.
pub fn adjust_contrast(img: &RgbImage, factor: f64) -> RgbImage {
    let blend = Blend::new(factor);
    let grey = grey_tables();
    let sum: f64 = img
        .as_raw()
        .chunks_exact(3)
        .map(|p| grey_lookup(&grey, p) as f64)
        .sum();
    let mean = (sum / (img.width() as f64 * img.height() as f64)) as f32;
    // With the mean fixed, the result depends on the byte alone.
    let scaled = blend.table();
    let lut: [u8; 256] =
        std::array::from_fn(|x| (scaled[x] + blend.rest * mean).clamp(0.0, 255.0) as u8);
    let mut out = img.clone();
    out.iter_mut().for_each(|v| *v = lut[*v as usize]);
    out
}

/// `F.adjust_saturation`: blend each pixel with its own (truncated) grey value.
pub fn adjust_saturation(img: &RgbImage, factor: f64) -> RgbImage {
    let blend = Blend::new(factor);
    let (grey, scaled) = (grey_tables(), blend.table());
    let mut out = img.clone();
    for p in out.chunks_exact_mut(3) {
        let g = blend.rest * grey_lookup(&grey, p);
        for v in p.iter_mut() {
            *v = (scaled[*v as usize] + g).clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// `F.rgb_to_grayscale(img, 3)`: the truncated grey value in all three channels.
pub fn greyscale(img: &RgbImage) -> RgbImage {
    let grey = grey_tables();
    let mut out = img.clone();
    for p in out.chunks_exact_mut(3) {
        let g = grey_lookup(&grey, p) as u8;
        p.fill(g);
    }
    out
}

/// torchvision's `_rgb2hsv` on one pixel in [0, 1].
fn rgb_to_hsv([r, g, b]: [f32; 3]) -> [f32; 3] {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let div = if eqc { 1.0 } else { cr };
    let (rc, gc, bc) = ((maxc - r) / div, (maxc - g) / div, (maxc - b) / div);
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    [(h / 6.0 + 1.0) % 1.0, s, maxc]
}

/// torchvision's `_hsv2rgb` on one pixel.
fn hsv_to_rgb([h, s, v]: [f32; 3]) -> [f32; 3] {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match (i as i32).rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// Applies `f` to every pixel in HSV, as torchvision converts uint8 (x / 255 in, then
/// `x * 255.999` truncated out, `convert_image_dtype`'s rule).
fn map_hsv(img: &RgbImage, f: impl Fn([f32; 3]) -> [f32; 3]) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let rgb = p.0.map(|v| v as f32 / 255.0);
        let back = hsv_to_rgb(f(rgb_to_hsv(rgb)));
        p.0 = back.map(|v| (v * (255.0 + 1.0 - 1e-3)) as u8);
    }
    out
}

/// `F.adjust_hue`: rotate the hue by `factor` turns (`factor` in [-0.5, 0.5]).
pub fn adjust_hue(img: &RgbImage, factor: f32) -> RgbImage {
    map_hsv(img, |[h, s, v]| [(h + factor).rem_euclid(1.0), s, v])
}

/// insightface-style HSV shift: hue turned by `dh`, saturation and value scaled by `1 + ds`,
/// `1 + dv` (clamped to [0, 1]).
pub fn hsv_shift(img: &RgbImage, dh: f32, ds: f32, dv: f32) -> RgbImage {
    map_hsv(img, |[h, s, v]| {
        [
            (h + dh).rem_euclid(1.0),
            (s * (1.0 + ds)).clamp(0.0, 1.0),
            (v * (1.0 + dv)).clamp(0.0, 1.0),
        ]
    })
}

/// `F.rotate(img, angle, InterpolationMode.BILINEAR, fill=0)` on a uint8 tensor: rotation by
/// `angle` degrees counter-clockwise about the image centre, `grid_sample` (bilinear, zeros
/// padding, `align_corners=False`) of the image and of a ones mask, `img * mask`, rounded half
/// to even. (torchvision multiplies by the mask, so border pixels are darkened twice.)
pub fn rotate(img: &RgbImage, angle: f64) -> RgbImage {
    let geo = Rotation::new(img, angle);
    let src = img.as_raw();
    let mut out = RgbImage::new(img.width(), img.height());
    for (y, row) in out.chunks_exact_mut(geo.stride).enumerate() {
        let yc = y as f32 - geo.cy;
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: AVX2 is present (checked at run time).
            unsafe { rotate_row_avx2(src, &geo, row, yc) };
            continue;
        }
        rotate_pixels(src, &geo, row, 0, yc);
    }
    out
}

/// A rotation's constants: the matrix is built in f64 (Python) and used in f32 (the grid), as
/// torchvision does.
struct Rotation {
    cos: f32,
    sin: f32,
    cx: f32,
    cy: f32,
    w: usize,
    h: usize,
    stride: usize,
}

impl Rotation {
    fn new(img: &RgbImage, angle: f64) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let rad = angle.to_radians();
        Self {
            cos: rad.cos() as f32,
            sin: rad.sin() as f32,
            cx: (w as f32 - 1.0) * 0.5,
            cy: (h as f32 - 1.0) * 0.5,
            w,
            h,
            stride: w * 3,
        }
    }
}

/// [`rotate`] one pixel at a time (SSE2 for the taps where all four are inside), for the
/// pixels of `row` from `first` on.
fn rotate_pixels(src: &[u8], geo: &Rotation, row: &mut [u8], first: usize, yc: f32) {
    let &Rotation {
        cos,
        sin,
        cx,
        cy,
        w,
        h,
        stride,
    } = geo;
    for (x, px) in row.chunks_exact_mut(3).enumerate().skip(first) {
        let xc = x as f32 - cx;
        let sx = cos * xc - sin * yc + cx;
        let sy = sin * xc + cos * yc + cy;
        // floor without libm: truncation, minus one for negative non-integers.
        let (tx, ty) = (sx as i64, sy as i64);
        let (x0, y0) = (
            tx - ((tx as f32) > sx) as i64,
            ty - ((ty as f32) > sy) as i64,
        );
        let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
        let weights = [
            (1.0 - fx) * (1.0 - fy),
            fx * (1.0 - fy),
            (1.0 - fx) * fy,
            fx * fy,
        ];
        let (mut acc, mut mask) = ([0.0f32; 3], 0.0f32);
        if x0 >= 0 && y0 >= 0 && ((x0 + 1) as usize) < w && ((y0 + 1) as usize) < h {
            let i = y0 as usize * stride + x0 as usize * 3;
            #[cfg(target_arch = "x86_64")]
            if i + stride + 7 <= src.len() {
                // SAFETY: SSE2 is baseline on x86-64; the loads end at i + stride + 7 <= len.
                let v = unsafe { rotate_tap_sse2(&src[i..], stride, weights) };
                px.copy_from_slice(&v[..3]);
                continue;
            }
            let taps = [i, i + 3, i + stride, i + stride + 3];
            for (t, wt) in taps.into_iter().zip(weights) {
                for c in 0..3 {
                    acc[c] += wt * src[t + c] as f32;
                }
                mask += wt;
            }
        } else {
            let corners = [(x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)];
            for ((tx, ty), wt) in corners.into_iter().zip(weights) {
                if tx >= 0 && ty >= 0 && (tx as usize) < w && (ty as usize) < h {
                    let i = ty as usize * stride + tx as usize * 3;
                    for c in 0..3 {
                        acc[c] += wt * src[i + c] as f32;
                    }
                    mask += wt;
                }
            }
        }
        for c in 0..3 {
            px[c] = round_half_even((acc[c] * mask).clamp(0.0, 255.0)) as u8;
        }
    }
}
/// Whether this CPU has AVX2 (checked once).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX2.get_or_init(|| std::arch::is_x86_feature_detected!("avx2"))
}

/// [`rotate`]'s row, eight pixels per step in the scalar loop's f32 operations and order
/// (positions, floors, weights; taps summed nw, ne, sw, se; the mask the sum of the weights;
/// rounded half to even), the taps fetched by 32-bit gathers; steps with a pixel near or past the
/// border, and the row's last pixels, go to [`rotate_pixels`]. Byte-identical (tested).
///
/// # Safety
/// AVX2 must be present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn rotate_row_avx2(src: &[u8], geo: &Rotation, row: &mut [u8], yc: f32) {
    use std::arch::x86_64::*;
    let &Rotation {
        cos,
        sin,
        cx,
        cy,
        w,
        h,
        ..
    } = geo;
    let Some(source) = face_align::taps::RgbSource::new(src, w, h) else {
        return rotate_pixels(src, geo, row, 0, yc);
    };
    let one = _mm256_set1_ps(1.0);
    let (vcos, vsin, vcx, vcy, vyc) = (
        _mm256_set1_ps(cos),
        _mm256_set1_ps(sin),
        _mm256_set1_ps(cx),
        _mm256_set1_ps(cy),
        _mm256_set1_ps(yc),
    );
    let pixels = row.len() / 3;
    let mut first = 0;
    while first + 8 <= pixels {
        // x as f32, exactly as the scalar loop converts it.
        let xs = _mm256_cvtepi32_ps(_mm256_add_epi32(
            _mm256_set1_epi32(first as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        ));
        let xc = _mm256_sub_ps(xs, vcx);
        let sx = _mm256_add_ps(
            _mm256_sub_ps(_mm256_mul_ps(vcos, xc), _mm256_mul_ps(vsin, vyc)),
            vcx,
        );
        let sy = _mm256_add_ps(
            _mm256_add_ps(_mm256_mul_ps(vsin, xc), _mm256_mul_ps(vcos, vyc)),
            vcy,
        );
        // All four taps inside (as the scalar path's SSE2 test), or the pixel path.
        // SAFETY: AVX2 is present (this function's contract).
        let Some(taps) = (unsafe { face_align::taps::bilinear_taps8(source, sx, sy) }) else {
            rotate_pixels(src, geo, &mut row[..(first + 8) * 3], first, yc);
            first += 8;
            continue;
        };
        let wt = &taps.weights;
        // The mask: each tap's weight times 1, summed in the taps' order.
        let mut mask = _mm256_mul_ps(wt[0], one);
        for t in &wt[1..] {
            mask = _mm256_add_ps(mask, _mm256_mul_ps(*t, one));
        }
        let mut ints = [_mm256_setzero_si256(); 3];
        for (c, out) in ints.iter_mut().enumerate() {
            // SAFETY: AVX2 is present.
            let ch = unsafe { taps.channel(c as i32) };
            let mut acc = _mm256_mul_ps(wt[0], ch[0]);
            for (t, tap) in wt[1..].iter().zip(&ch[1..]) {
                acc = _mm256_add_ps(acc, _mm256_mul_ps(*t, *tap));
            }
            let v = _mm256_min_ps(
                _mm256_max_ps(_mm256_mul_ps(acc, mask), _mm256_setzero_ps()),
                _mm256_set1_ps(255.0),
            );
            // Round half to even: the conversion's default rounding mode.
            *out = _mm256_cvtps_epi32(v);
        }
        // SAFETY: AVX2 is present.
        unsafe { face_align::taps::store_rgb8(ints, &mut row[first * 3..(first + 8) * 3]) };
        first += 8;
    }
    rotate_pixels(src, geo, row, first, yc);
}

/// The fast path of [`rotate`] for one pixel with all four taps inside: lanes R, G, B and the
/// mask (each tap's fourth lane set to 1), summed in grid_sample's order (nw, ne, sw, se),
/// multiplied by the mask, rounded half to even (SSE2's default rounding). Byte-identical to the
/// scalar path (tested).
///
/// # Safety
/// `p` must hold at least `stride + 7` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
unsafe fn rotate_tap_sse2(p: &[u8], stride: usize, w: [f32; 4]) -> [u8; 4] {
    use std::arch::x86_64::*;
    let rgb = _mm_castsi128_ps(_mm_set_epi32(0, -1, -1, -1));
    let one = _mm_set_ps(1.0, 0.0, 0.0, 0.0);
    let load = |offset: usize| {
        let word = std::ptr::read_unaligned(p.as_ptr().add(offset) as *const i32);
        let zero = _mm_setzero_si128();
        let v = _mm_cvtepi32_ps(_mm_unpacklo_epi16(
            _mm_unpacklo_epi8(_mm_cvtsi32_si128(word), zero),
            zero,
        ));
        _mm_or_ps(_mm_and_ps(v, rgb), one)
    };
    let mut acc = _mm_mul_ps(_mm_set1_ps(w[0]), load(0));
    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(w[1]), load(3)));
    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(w[2]), load(stride)));
    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(w[3]), load(stride + 3)));
    let mask = _mm_shuffle_ps(acc, acc, 0xFF);
    let v = _mm_min_ps(
        _mm_max_ps(_mm_mul_ps(acc, mask), _mm_setzero_ps()),
        _mm_set1_ps(255.0),
    );
    let ints = _mm_cvtps_epi32(v);
    let packed = _mm_packus_epi16(_mm_packs_epi32(ints, ints), _mm_setzero_si128());
    _mm_cvtsi128_si32(packed).to_le_bytes()
}

/// Down to `size` x `size` and back up (bilinear both ways): insightface's low-resolution
/// augmentation.
pub fn down_up(img: &RgbImage, size: u32) -> RgbImage {
    let small = imageops::resize(img, size, size, imageops::FilterType::Triangle);
    imageops::resize(
        &small,
        img.width(),
        img.height(),
        imageops::FilterType::Triangle,
    )
}

/// Gaussian blur with standard deviation `sigma` pixels.
pub fn gaussian_blur(img: &RgbImage, sigma: f32) -> RgbImage {
    imageops::blur(img, sigma)
}

/// `F.to_tensor`: CHW f32 in [0, 1] (`x / 255`).
pub fn to_tensor(img: &RgbImage) -> Chw {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let n = w * h;
    let mut data = vec![0.0f32; 3 * n];
    for (i, p) in img.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            data[c * n + i] = p[c] as f32 / 255.0;
        }
    }
    Chw {
        height: h,
        width: w,
        data,
    }
}

/// `F.normalize`: `(x - mean[c]) / std[c]` per channel.
pub fn normalize(t: &mut Chw, mean: [f32; 3], std: [f32; 3]) {
    let n = t.height * t.width;
    for c in 0..3 {
        for v in &mut t.data[c * n..(c + 1) * n] {
            *v = (*v - mean[c]) / std[c];
        }
    }
}

/// `F.erase`: the box at row `i`, column `j`, of `h` x `w`, set to `value(c, y, x)`.
pub fn erase(t: &mut Chw, i: usize, j: usize, h: usize, w: usize, mut value: impl FnMut() -> f32) {
    let n = t.height * t.width;
    for c in 0..3 {
        for y in i..(i + h).min(t.height) {
            for x in j..(j + w).min(t.width) {
                t.data[c * n + y * t.width + x] = value();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rotate` (AVX2 where present) equals the pixel-by-pixel path byte for byte, over angles,
    /// image sizes (odd ones, rows shorter than a step) and the border.
    #[test]
    fn rotation_rows_equal_the_pixel_path() {
        for (w, h) in [(112u32, 112u32), (37, 29), (7, 5), (113, 64)] {
            let img = RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([
                    (x * 7 + y) as u8,
                    (x * y + 5) as u8,
                    (x * 3 + 250 * y) as u8,
                ])
            });
            for k in 0..60 {
                let angle = -180.0 + k as f64 * 6.1;
                let geo = Rotation::new(&img, angle);
                let mut expected = RgbImage::new(w, h);
                for (y, row) in expected.chunks_exact_mut(geo.stride).enumerate() {
                    rotate_pixels(img.as_raw(), &geo, row, 0, y as f32 - geo.cy);
                }
                assert_eq!(rotate(&img, angle), expected, "{w}x{h} angle {angle}");
            }
        }
    }

    /// The SSE2 fast path of `rotate` gives the same bytes as the scalar arithmetic it replaces.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn sse2_rotation_tap_equals_scalar() {
        let img = RgbImage::from_fn(37, 29, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (x * y) as u8, (255 - x - y) as u8])
        });
        let src = img.as_raw();
        let stride = 37 * 3;
        let mut seed = 11u64;
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let (fx, fy) = (
                (seed >> 40) as f32 / (1u64 << 24) as f32,
                (seed >> 16 & 0xFFFFFF) as f32 / (1u64 << 24) as f32,
            );
            let (x0, y0) = ((seed % 35) as usize, ((seed >> 8) % 27) as usize);
            let w = [
                (1.0 - fx) * (1.0 - fy),
                fx * (1.0 - fy),
                (1.0 - fx) * fy,
                fx * fy,
            ];
            let i = y0 * stride + x0 * 3;
            let taps = [i, i + 3, i + stride, i + stride + 3];
            let (mut acc, mut mask) = ([0.0f32; 3], 0.0f32);
            for (t, wt) in taps.into_iter().zip(w) {
                for c in 0..3 {
                    acc[c] += wt * src[t + c] as f32;
                }
                mask += wt;
            }
            let scalar: [u8; 3] =
                std::array::from_fn(|c| round_half_even((acc[c] * mask).clamp(0.0, 255.0)) as u8);
            if i + stride + 7 <= src.len() {
                let simd = unsafe { rotate_tap_sse2(&src[i..], stride, w) };
                assert_eq!(&simd[..3], &scalar, "fx {fx} fy {fy} at ({x0}, {y0})");
            }
        }
    }
}
