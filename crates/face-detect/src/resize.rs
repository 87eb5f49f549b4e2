//! OpenCV's bilinear resize (`cv2.resize`, `INTER_LINEAR`) for 8-bit RGB: the resize
//! insightface's detectors are fed with, so detections match theirs.
//!
//! Half-pixel centres, edge pixels repeated, 11-bit fixed-point weights per axis, and the
//! vertical pass's rounding as OpenCV's SIMD path does it (`VResizeLinearVec_32s8u`). Unlike
//! `image`'s `Triangle` filter it does not widen its kernel when shrinking (no antialiasing),
//! which is what the reference does.

use image::RgbImage;

/// `INTER_RESIZE_COEF_BITS`: weights are integers summing to 2048.
const COEF_SCALE: f32 = 2048.0;

/// Source index and the two fixed-point weights for each destination coordinate.
fn taps(src: u32, dst: u32) -> Vec<(usize, usize, i32, i32)> {
    // OpenCV divides by the inverse ratio, which can differ in the last bit from src/dst.
    let scale = 1.0 / (dst as f64 / src as f64);
    (0..dst)
        .map(|d| {
            let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            f -= s as f32;
            if s < 0 {
                f = 0.0;
                s = 0;
            }
            if s >= src as i64 - 1 {
                f = 0.0;
                s = src as i64 - 1;
            }
            let w0 = ((1.0 - f) * COEF_SCALE).round_ties_even() as i32;
            let s = s as usize;
            (s, (s + 1).min(src as usize - 1), w0, 2048 - w0)
        })
        .collect()
}

/// `image` resized to `width` x `height` as `cv2.resize(image, (width, height))` does it.
pub fn resize_linear(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (sw, sh) = image.dimensions();
    if (sw, sh) == (width, height) {
        return image.clone();
    }
    let xs = taps(sw, width);
    let ys = taps(sh, height);
    let src = image.as_raw();
    let row = |y: usize| -> Vec<i32> {
        let line = &src[y * sw as usize * 3..(y + 1) * sw as usize * 3];
        xs.iter()
            .flat_map(|&(a, b, wa, wb)| {
                (0..3)
                    .map(move |c| i32::from(line[a * 3 + c]) * wa + i32::from(line[b * 3 + c]) * wb)
            })
            .collect()
    };
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    let mut cache: Option<(usize, Vec<i32>, usize, Vec<i32>)> = None;
    for &(y0, y1, b0, b1) in &ys {
        let (r0, r1) = match cache.take() {
            Some((c0, r0, c1, r1)) if (c0, c1) == (y0, y1) => (r0, r1),
            _ => (row(y0), row(y1)),
        };
        // OpenCV's SIMD rounding: ((r0 >> 4) * b0 >> 16) + ((r1 >> 4) * b1 >> 16) + 2 >> 2.
        out.extend(r0.iter().zip(&r1).map(|(&a, &b)| {
            let v = (((a >> 4) * b0) >> 16) + (((b >> 4) * b1) >> 16) + 2;
            (v >> 2).clamp(0, 255) as u8
        }));
        cache = Some((y0, r0, y1, r1));
    }
    RgbImage::from_raw(width, height, out).expect("the buffer has width*height*3 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_a_copy_and_constant_images_stay_constant() {
        let img = RgbImage::from_pixel(7, 5, image::Rgb([200, 10, 99]));
        assert_eq!(resize_linear(&img, 7, 5), img);
        let up = resize_linear(&img, 19, 3);
        assert!(
            up.pixels().all(|p| p.0 == [200, 10, 99]),
            "{:?}",
            up.get_pixel(3, 1)
        );
    }

    #[test]
    fn halving_averages_neighbours_without_antialiasing() {
        // 4 -> 2 columns: each output sits between two inputs with weights 1/2, 1/2.
        let img = RgbImage::from_fn(4, 1, |x, _| image::Rgb([[0, 100, 200, 255][x as usize]; 3]));
        let out = resize_linear(&img, 2, 1);
        assert_eq!(out.get_pixel(0, 0).0[0], 50);
        assert_eq!(out.get_pixel(1, 0).0[0], 228);
    }
}
