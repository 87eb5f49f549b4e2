//! Inputs shared by the benchmarks.

use iresnet::burn::tensor::{backend::Backend, Distribution, Tensor};

/// A batch of face-sized inputs in insightface's normalized range [-1, 1].
pub fn face_batch<B: Backend>(n: usize, device: &B::Device) -> Tensor<B, 4> {
    Tensor::random([n, 3, 112, 112], Distribution::Uniform(-1.0, 1.0), device)
}

/// A deterministic 640x480 RGB "photo" (warp cost does not depend on content).
pub fn synthetic_photo(width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            ((x * 7 + y * 3) % 256) as u8,
            ((x * 13 + y * 5) % 256) as u8,
            ((x ^ y) % 256) as u8,
        ])
    })
}

/// Five landmarks of a ~100 px frontal face near the middle of a 640x480 image; the same
/// numbers as tools/bench_peers_align.py uses.
pub const FACE_LANDMARKS: [[f32; 2]; 5] = [
    [290.0, 200.0],
    [350.0, 198.0],
    [322.0, 235.0],
    [296.0, 268.0],
    [347.0, 266.0],
];
