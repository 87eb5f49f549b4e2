//! The deterministic cores, with torchvision's semantics on uint8 tensors
//! (`torchvision.transforms.functional` 0.29): float32 arithmetic, the same rounding (truncation
//! for the colour blends, round-half-even after `rotate`), the same greyscale weights.

use image::{imageops, Rgb, RgbImage};

use crate::sample::Chw;

/// torchvision's `rgb_to_grayscale` weights.
const GREY: [f32; 3] = [0.2989, 0.587, 0.114];

#[inline]
fn grey_u8(p: &Rgb<u8>) -> f32 {
    // (0.2989 r + 0.587 g + 0.114 b).to(uint8): truncated.
    (GREY[0] * p[0] as f32 + GREY[1] * p[1] as f32 + GREY[2] * p[2] as f32).trunc()
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

    #[inline]
    fn apply(self, x: u8, other: f32) -> u8 {
        (self.ratio * x as f32 + self.rest * other).clamp(0.0, 255.0) as u8
    }
}

/// `F.hflip`.
pub fn hflip(img: &RgbImage) -> RgbImage {
    imageops::flip_horizontal(img)
}

/// `F.adjust_brightness`: blend with black.
pub fn adjust_brightness(img: &RgbImage, factor: f64) -> RgbImage {
    let blend = Blend::new(factor);
    let mut out = img.clone();
    out.iter_mut().for_each(|v| *v = blend.apply(*v, 0.0));
    out
}

/// `F.adjust_contrast`: blend with the mean of the (truncated) greyscale image.
pub fn adjust_contrast(img: &RgbImage, factor: f64) -> RgbImage {
    let blend = Blend::new(factor);
    let sum: f64 = img.pixels().map(|p| grey_u8(p) as f64).sum();
    let mean = (sum / (img.width() as f64 * img.height() as f64)) as f32;
    let mut out = img.clone();
    out.iter_mut().for_each(|v| *v = blend.apply(*v, mean));
    out
}

/// `F.adjust_saturation`: blend each pixel with its own (truncated) grey value.
pub fn adjust_saturation(img: &RgbImage, factor: f64) -> RgbImage {
    let blend = Blend::new(factor);
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let g = grey_u8(p);
        for v in p.0.iter_mut() {
            *v = blend.apply(*v, g);
        }
    }
    out
}

/// `F.rgb_to_grayscale(img, 3)`: the truncated grey value in all three channels.
pub fn greyscale(img: &RgbImage) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let g = grey_u8(p) as u8;
        p.0 = [g; 3];
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
    let (w, h) = (img.width() as usize, img.height() as usize);
    // The matrix is built in f64 (Python) and used in f32 (the grid), as torchvision does.
    let rad = angle.to_radians();
    let (cos, sin) = (rad.cos() as f32, rad.sin() as f32);
    let (cx, cy) = ((w as f32 - 1.0) * 0.5, (h as f32 - 1.0) * 0.5);
    let src = img.as_raw();
    let mut out = RgbImage::new(w as u32, h as u32);
    let stride = w * 3;
    for (y, row) in out.chunks_exact_mut(stride).enumerate() {
        let yc = y as f32 - cy;
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let xc = x as f32 - cx;
            let sx = cos * xc - sin * yc + cx;
            let sy = sin * xc + cos * yc + cy;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let taps = [
                (x0, y0, (1.0 - fx) * (1.0 - fy)),
                (x0 + 1, y0, fx * (1.0 - fy)),
                (x0, y0 + 1, (1.0 - fx) * fy),
                (x0 + 1, y0 + 1, fx * fy),
            ];
            let (mut acc, mut mask) = ([0.0f32; 3], 0.0f32);
            for (tx, ty, wt) in taps {
                if tx >= 0 && ty >= 0 && (tx as usize) < w && (ty as usize) < h {
                    let i = ty as usize * stride + tx as usize * 3;
                    for c in 0..3 {
                        acc[c] += wt * src[i + c] as f32;
                    }
                    mask += wt;
                }
            }
            for c in 0..3 {
                px[c] = (acc[c] * mask).round_ties_even().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
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
