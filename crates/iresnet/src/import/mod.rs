//! Bringing insightface's published weights into our modules.
//!
//! Both importers produce the same thing, one [`LayerWeights`] per weighted layer of the
//! backbone's [`Plan`](crate::plan::Plan), and share one loader that checks every shape, folds
//! biases into the following BatchNorm (our convolutions have none, exported graphs often do)
//! and writes the tensors into the module.

mod load;
pub mod onnx;
pub mod torch;

pub use load::{load_layers, Array, LayerWeights, SourcedWeights};

use cpu_conv::ConvBackend;
use std::path::Path;

use crate::backbone::{AnyBackbone, BackboneConfig};
use crate::error::{BackboneError, Result};

/// Weight files `import_file` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// An ONNX model (`.onnx`).
    Onnx,
    /// A PyTorch state dict (`.pth`, `.pt`, `.bin`).
    Torch,
}

impl WeightFormat {
    /// The format a file's extension names.
    pub fn from_path(path: &Path) -> Result<Self> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("onnx") => Ok(Self::Onnx),
            Some("pth" | "pt" | "bin") => Ok(Self::Torch),
            _ => Err(BackboneError::InvalidConfig(format!(
                "{}: expected a .onnx model or a .pth/.pt PyTorch state dict",
                path.display()
            ))),
        }
    }
}

/// Reads the architecture a weight file holds (ONNX graph structure or state-dict keys).
pub fn infer_arch(path: &Path) -> Result<BackboneConfig> {
    match WeightFormat::from_path(path)? {
        WeightFormat::Onnx => onnx::OnnxModel::open(path)?.infer_arch(),
        WeightFormat::Torch => torch::infer_arch_pth(path),
    }
}

/// Any backbone file: insightface weights (`.onnx`, `.pth`, `.pt`, `.bin`; the architecture read
/// off the file) or an arcface-rs model file from `arcface train` / `arcface import`.
pub fn load_any<B: ConvBackend>(path: &Path, device: &B::Device) -> Result<AnyBackbone<B>> {
    match WeightFormat::from_path(path) {
        Ok(_) => import_auto(path, device),
        Err(_) => Ok(crate::record::load_model(path, device)?.0),
    }
}

/// [`import_file`] with the architecture read off the file itself.
pub fn import_auto<B: ConvBackend>(path: &Path, device: &B::Device) -> Result<AnyBackbone<B>> {
    let arch = infer_arch(path)?;
    tracing::info!(file = %path.display(), arch = %arch.describe(), "architecture read off the file");
    import_file(path, &arch, device)
}

/// Builds `arch` and fills it from an insightface weight file (format by extension).
///
/// For MobileFaceNet ONNX files the head is read off the graph, so `--arch mbf` imports both
/// the current GDC-head models and the released `w600k_mbf` (conv-fc head).
pub fn import_file<B: ConvBackend>(
    path: &Path,
    arch: &BackboneConfig,
    device: &B::Device,
) -> Result<AnyBackbone<B>> {
    match WeightFormat::from_path(path)? {
        WeightFormat::Onnx => {
            let graph = onnx::OnnxModel::open(path)?;
            tracing::info!(file = %path.display(), graph = %graph.summary(), "importing ONNX weights");
            let arch = match arch {
                BackboneConfig::MobileFaceNet(c) => {
                    BackboneConfig::MobileFaceNet(c.clone().with_head(graph.mbf_head()?))
                }
                other => other.clone(),
            };
            let mut model = arch.init::<B>(device)?;
            onnx::load_onnx(&mut model, &graph)?;
            Ok(model)
        }
        WeightFormat::Torch => {
            let mut model = arch.init::<B>(device)?;
            torch::load_pth(&mut model, path)?;
            Ok(model)
        }
    }
}
