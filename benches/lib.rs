//! Inputs shared by the benchmarks.

use iresnet::burn::tensor::{backend::Backend, Distribution, Tensor};

/// A batch of face-sized inputs in insightface's normalised range [-1, 1].
pub fn face_batch<B: Backend>(n: usize, device: &B::Device) -> Tensor<B, 4> {
    Tensor::random([n, 3, 112, 112], Distribution::Uniform(-1.0, 1.0), device)
}
