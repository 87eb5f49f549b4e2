//! int8 inference on the CPU with real integer arithmetic (Burn 0.21's own int8 dequantises
//! before computing, so it only shrinks files).
//!
//! - `Graph::from_backbone` (feature `burn`, default) reads an IResNet or MobileFaceNet out of
//!   Burn with BatchNorm folded; without the feature the crate runs `.aq8` files with no Burn.
//! - [`Engine`] runs a graph on the CPU, f32 ([`Engine::float`]) or int8 ([`QuantizedModel`]):
//!   the same layers, so f32 and int8 compare on one engine. int8 layers use the integer GEMM
//!   (`gemm`: u8 x i8 -> i32; AVX-512 VNNI, AVX2 and scalar kernels, bit-exact with each other)
//!   or direct loops for grouped/depthwise layers (`grouped`), with fused epilogues.
//! - [`quantize`] calibrates each value's u8 grid on aligned faces (min-max, percentile,
//!   entropy; `calibrate`) and quantises weights per output channel; [`QuantizedModel`] is the
//!   checksummed `.aq8` file. The engine implements `face_embed::Embedder`.
//!
//! - [`FusionEngine`] runs a late-fusion model (one backbone per modality: RGB, near-infrared,
//!   depth): each branch an engine of its own, the fusion in f32.
//!
//! Measured against Burn and ONNX Runtime in docs/performance.md.

pub mod calibrate;
pub mod conv;
pub mod elementwise;
pub mod engine;
mod epilogue;
pub mod fold;
#[cfg(feature = "burn")]
mod from_burn;
pub mod fusion;
pub mod gemm;
pub mod graph;
mod grouped;
pub mod model;

pub use calibrate::{Method, Observer, QuantParams};
pub use conv::{quantize_per_channel, Activation, ConvError, Output, QConv2d, QTensor};
pub use elementwise::{add, ElementwiseError};
pub use engine::{Engine, EngineError, Weights, IMAGE_PARAMS};
pub use fold::{fold_batch_norm, BatchNormStats, FoldError};
pub use fusion::{FuseLayer, FusionEngine};
pub use gemm::{gemm_u8i8, Kernel, PackedWeights};
pub use graph::{ConvLayer, Graph, GraphError, Node};
pub use model::{quantize, ModelError, QuantizeOptions, QuantizedModel, FORMAT_VERSION, MAGIC};
