//! int8 inference on the CPU with real integer arithmetic (Burn 0.21's own int8 dequantises
//! before computing, so it only shrinks files).
//!
//! Built so far: the integer GEMM at the heart of every quantised convolution and linear layer
//! (`gemm`: `u8` activations times `i8` weights accumulated in `i32`, with AVX-512 VNNI, AVX2 and
//! scalar kernels chosen at run time and bit-exact with each other), the quantised convolution
//! with its fused epilogue (`conv`), requantised residual addition and PReLU (`elementwise`),
//! BatchNorm folding (`fold`) and calibration observers (`calibrate`). The quantised IResNet/MobileFaceNet graphs and the model file come next.

pub mod calibrate;
pub mod conv;
pub mod elementwise;
pub mod engine;
mod epilogue;
pub mod fold;
pub mod gemm;
pub mod graph;
pub mod model;
mod grouped;

pub use calibrate::{Method, Observer, QuantParams};
pub use conv::{quantise_per_channel, Activation, ConvError, Output, QConv2d, QTensor};
pub use engine::{Engine, EngineError, Weights, IMAGE_PARAMS};
pub use graph::{ConvLayer, Graph, GraphError, Node};
pub use model::{quantize, ModelError, QuantizeOptions, QuantizedModel, FORMAT_VERSION};
pub use elementwise::{add, prelu, ElementwiseError};
pub use fold::{fold_batch_norm, BatchNormStats, FoldError};
pub use gemm::{gemm_u8i8, Kernel, PackedWeights};
