//! arcface_torch `backbone.pth` state dicts, read with burn-store's PyTorch reader.
//!
//! Keys are mapped through the backbone's plan, which knows insightface's module names:
//! PyTorch's PReLU `weight` becomes our `alpha`, BatchNorm `weight`/`bias` become
//! `gamma`/`beta`, `num_batches_tracked` is ignored and a DDP `module.` prefix is stripped.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn_store::pytorch::PytorchReader;
use burn_store::{ModuleSnapshot, TensorSnapshot};

use super::load::{load_layers, Array, LayerWeights, SourcedWeights};
use crate::backbone::{Architecture, BackboneConfig};
use crate::error::{BackboneError, Result};
use crate::iresnet::IResNetConfig;
use crate::mobilefacenet::{MbfHead, MobileFaceNetConfig};
use crate::plan::LayerKind;

/// Tensor shapes of a state dict by key (`module.` prefix stripped, `num_batches_tracked` dropped).
fn read_state_dict(path: &Path) -> Result<HashMap<String, TensorSnapshot>> {
    if !path.exists() {
        return Err(BackboneError::io(path, std::io::ErrorKind::NotFound.into()));
    }
    let reader = PytorchReader::new(path).map_err(|e| BackboneError::Torch {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(reader
        .into_tensors()
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(k, v)| {
            (
                k.strip_prefix("module.").map(str::to_string).unwrap_or(k),
                v,
            )
        })
        .collect())
}

/// Reads the architecture off an arcface_torch state dict's keys and shapes.
pub fn infer_arch_pth(path: &Path) -> Result<BackboneConfig> {
    let tensors = read_state_dict(path)?;
    let shape = |k: &str| tensors.get(k).map(|t| t.shape.to_vec());
    let count = |prefix: &str, suffix: &str| {
        (0..)
            .take_while(|i| tensors.contains_key(&format!("{prefix}{i}{suffix}")))
            .count()
    };
    let unknown = || BackboneError::Torch {
        path: path.to_path_buf(),
        message: "cannot tell the architecture from the keys; pass --arch".into(),
    };
    if let Some(stem) = shape("layers.0.layers.0.weight") {
        // MobileFaceNet: `layers.1` is the grouped 3x3 (one block) or a Residual of DepthWise units.
        let first = count("layers.1.layers.", ".layers.0.layers.0.weight").max(1);
        let blocks = [
            first,
            count("layers.3.layers.", ".layers.0.layers.0.weight"),
            count("layers.5.layers.", ".layers.0.layers.0.weight"),
            count("layers.7.layers.", ".layers.0.layers.0.weight"),
        ];
        let (head, fc) = if tensors.contains_key("features.layers.2.weight") {
            (MbfHead::Gdc, "features.layers.2.weight")
        } else {
            (MbfHead::ConvFc, "features.fc.weight")
        };
        let d = shape(fc)
            .and_then(|s| s.first().copied())
            .ok_or_else(unknown)?;
        return Ok(BackboneConfig::MobileFaceNet(
            MobileFaceNetConfig::new()
                .with_blocks(blocks)
                .with_scale((stem[0] / 64).max(1))
                .with_head(head)
                .with_embedding_dim(d),
        ));
    }
    let mut layers = [0usize; 4];
    let mut widths = [0usize; 4];
    for i in 0..4 {
        let prefix = format!("layer{}.", i + 1);
        layers[i] = count(&prefix, ".conv1.weight");
        widths[i] = shape(&format!("{prefix}0.conv1.weight"))
            .and_then(|s| s.first().copied())
            .ok_or_else(unknown)?;
    }
    let d = shape("fc.weight")
        .and_then(|s| s.first().copied())
        .ok_or_else(unknown)?;
    Ok(BackboneConfig::IResNet(
        IResNetConfig::new(layers)
            .with_widths(widths)
            .with_embedding_dim(d),
    ))
}

/// Loads a PyTorch state dict into `model`. Every tensor the architecture needs must be there
/// with the right shape, and every tensor in the file must find a place.
pub fn load_pth<B, M>(model: &mut M, path: &Path) -> Result<()>
where
    B: Backend,
    M: Architecture<B> + Module<B> + ModuleSnapshot<B>,
{
    let mut dict = StateDict {
        tensors: read_state_dict(path)?,
        path,
    };
    // PyTorch checkpoints carry no epsilon; insightface uses the default, as our configs do.
    let eps = model.spec().bn_eps();

    let plan = model.plan();
    let mut layers = Vec::with_capacity(plan.layers.len());
    for layer in &plan.layers {
        let t = |n: &str| format!("{}.{n}", layer.torch);
        let weights = match layer.kind {
            LayerKind::Conv { .. } => LayerWeights::Conv {
                weight: dict.take(&t("weight"))?,
                bias: dict.take_optional(&t("bias"))?,
            },
            LayerKind::BatchNorm { .. } => LayerWeights::BatchNorm {
                gamma: dict.take(&t("weight"))?,
                beta: dict.take(&t("bias"))?,
                mean: dict.take(&t("running_mean"))?,
                var: dict.take(&t("running_var"))?,
                eps,
            },
            LayerKind::PRelu { .. } => LayerWeights::PRelu {
                slope: dict.take(&t("weight"))?,
            },
            LayerKind::Linear { .. } => LayerWeights::Linear {
                weight: dict.take(&t("weight"))?,
                bias: dict.take_optional(&t("bias"))?,
            },
        };
        layers.push(Some(SourcedWeights {
            source: layer.torch.clone(),
            weights,
        }));
    }
    if !dict.tensors.is_empty() {
        let names: BTreeSet<_> = dict.tensors.into_keys().collect();
        let names: Vec<_> = names.into_iter().collect();
        return Err(BackboneError::UnusedWeights(names.join(", ")));
    }
    load_layers(model, &plan, layers, eps)
}

/// A state dict being consumed: every tensor taken is removed, so what is left over is unused.
struct StateDict<'a> {
    tensors: HashMap<String, TensorSnapshot>,
    path: &'a Path,
}

impl StateDict<'_> {
    /// `None` only when the key is absent; a present tensor that cannot be read is an error.
    fn take_optional(&mut self, name: &str) -> Result<Option<Array>> {
        let Some(snapshot) = self.tensors.remove(name) else {
            return Ok(None);
        };
        let torch_err = |message: String| BackboneError::Torch {
            path: self.path.to_path_buf(),
            message: format!("{name}: {message}"),
        };
        let data = snapshot
            .to_data()
            .map_err(|e| torch_err(e.to_string()))?
            .convert::<f32>();
        let shape = data.shape.to_vec();
        let values = data
            .to_vec::<f32>()
            .map_err(|e| torch_err(format!("{e:?}")))?;
        Ok(Some(Array::new(shape, values)))
    }

    fn take(&mut self, name: &str) -> Result<Array> {
        self.take_optional(name)?
            .ok_or_else(|| BackboneError::MissingWeight(name.to_string()))
    }
}
