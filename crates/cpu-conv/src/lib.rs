//! 2-D convolution for training on the CPU, and the Burn extension that puts it under Burn's
//! autodiff.
//!
//! Burn 0.21's `Autodiff<Flex>` computes a convolution's input gradient as a generic transposed
//! convolution and its weight gradient as a convolution over permuted tensors, one per group for
//! depthwise layers (512 convolutions for a 512-channel depthwise layer). This crate computes the
//! three passes directly:
//!
//! - dense and grouped layers as matrix products over an im2col matrix, one
//!   image per thread (products spread over the threads instead when the batch is smaller than
//!   the thread count);
//! - depthwise layers as direct, vectorised loops over planes;
//! - hand-written loops compiled for AVX-512, AVX2 + FMA and portably, chosen at run time ([`Isa`]).
//!
//! [`ConvBackend`] is the Burn seam: a backend extension trait whose methods default to Burn's own
//! convolution (CUDA keeps its kernels), implemented with these kernels for `Flex`, with
//! LibTorch's native backward for `LibTorch` (feature `tch`), and with a backward node of its own
//! for `Autodiff<B>`. Models call [`conv2d`] with their
//! `burn::nn::conv::Conv2d` module and stay generic over the backend.

#[cfg(feature = "burn")]
mod burn_ext;
mod dense;
mod depthwise;
mod geom;
mod isa;
mod matmul;
pub mod reference;
#[cfg(feature = "tch")]
mod tch_ext;

#[cfg(feature = "burn")]
pub use burn_ext::{conv2d, ConvAutodiffBackend, ConvBackend};
pub use geom::{Conv2dGeom, GeomError};
pub use isa::Isa;
pub use matmul::matmul_rows;

fn check(what: &str, got: usize, want: usize) {
    assert_eq!(
        got, want,
        "cpu-conv: {what} holds {got} values, the geometry needs {want}"
    );
}

/// The forward pass: `[n, o, oh, ow]` from `x` (`[n, c, h, w]`), `w` (`[o, c / groups, kh, kw]`)
/// and an optional bias (`[o]`), through the `isa` path (see [`Isa::best`]).
///
/// # Panics
/// When a slice's length does not match the geometry.
pub fn forward(g: &Conv2dGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>, isa: Isa) -> Vec<f32> {
    check("the input", x.len(), g.input.iter().product());
    check("the weights", w.len(), g.weight.iter().product());
    let mut y = if g.is_depthwise() {
        depthwise::forward(g, x, w, isa)
    } else {
        dense::forward(g, x, w)
    };
    if let Some(b) = bias {
        check("the bias", b.len(), g.weight[0]);
        let p = g.out_hw[0] * g.out_hw[1];
        for (k, plane) in y.chunks_mut(p).enumerate() {
            let v = b[k % b.len()];
            plane.iter_mut().for_each(|y| *y += v);
        }
    }
    y
}

/// The gradient with respect to the input (`[n, c, h, w]`), from the output's gradient.
///
/// # Panics
/// When a slice's length does not match the geometry.
pub fn backward_input(g: &Conv2dGeom, w: &[f32], grad: &[f32], isa: Isa) -> Vec<f32> {
    check("the weights", w.len(), g.weight.iter().product());
    check(
        "the output gradient",
        grad.len(),
        g.output().iter().product(),
    );
    if g.is_depthwise() {
        depthwise::backward_x(g, w, grad, isa)
    } else {
        dense::backward_x(g, w, grad, isa)
    }
}

/// The gradient with respect to the weights (`[o, c / groups, kh, kw]`), summed over the batch.
///
/// # Panics
/// When a slice's length does not match the geometry.
pub fn backward_weight(g: &Conv2dGeom, x: &[f32], grad: &[f32], isa: Isa) -> Vec<f32> {
    check("the input", x.len(), g.input.iter().product());
    check(
        "the output gradient",
        grad.len(),
        g.output().iter().product(),
    );
    if g.is_depthwise() {
        depthwise::backward_w(g, x, grad, isa)
    } else {
        dense::backward_w(g, x, grad)
    }
}
