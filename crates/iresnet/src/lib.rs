//! Face-recognition backbones in Burn: insightface's IResNet-18/34/50/100/200 and
//! MobileFaceNet, generic over any `B: Backend`, with weight import from insightface's
//! PyTorch checkpoints and ONNX model packs, and self-describing model files.
//!
//! ```no_run
//! use iresnet::{Backbone, BackboneConfig};
//! type B = burn::backend::Flex;
//! let device = Default::default();
//! let model = BackboneConfig::from_name("r50").unwrap().init::<B>(&device).unwrap();
//! let faces = burn::tensor::Tensor::<B, 4>::zeros([1, 3, 112, 112], &device);
//! let embedding = model.embed(faces); // [1, 512]
//! ```

pub mod backbone;
pub mod error;
pub mod import;
pub mod iresnet;
mod layers;
pub mod mobilefacenet;
mod norm;
pub mod plan;
pub mod preprocess;
pub mod record;

pub use backbone::{AnyBackbone, Backbone, BackboneConfig, BackboneStats, ARCH_NAMES};
pub use burn;
pub use error::{BackboneError, Result};
pub use iresnet::{IResNet, IResNetConfig, INPUT_SIZE};
pub use layers::ConvBnAct;
pub use mobilefacenet::{MbfHead, MobileFaceNet, MobileFaceNetConfig};

/// The default CPU backend (Burn's `flex`, SIMD and threads on).
pub type CpuBackend = burn::backend::Flex;
