//! int8 inference on the CPU with real integer arithmetic (Burn 0.21's own int8 dequantises
//! before computing, so it only shrinks files).
//!
//! Built so far: the integer GEMM at the heart of every quantised convolution and linear layer,
//! `u8` activations times `i8` weights accumulated in `i32`, with an AVX-512 VNNI kernel
//! (`vpdpbusd`), an AVX2 kernel and a portable scalar one, chosen at run time and bit-exact with
//! each other. Quantised graphs, calibration and the model file come next (issue 9).

pub mod calibrate;
pub mod conv;
pub mod gemm;

pub use calibrate::{Method, Observer, QuantParams};
pub use conv::{ConvError, Output, QConv2d, QTensor};
pub use gemm::{gemm_u8i8, Kernel, PackedWeights};
