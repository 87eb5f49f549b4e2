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
use crate::backbone::Backbone;
use crate::error::{BackboneError, Result};
use crate::plan::LayerKind;

/// Loads a PyTorch state dict into `model`. Every tensor the architecture needs must be there
/// with the right shape, and every tensor in the file must find a place.
pub fn load_pth<B, M>(model: &mut M, path: &Path) -> Result<()>
where
    B: Backend,
    M: Backbone<B> + Module<B> + ModuleSnapshot<B>,
{
    let torch_err = |message: String| BackboneError::Torch {
        path: path.to_path_buf(),
        message,
    };
    if !path.exists() {
        return Err(BackboneError::io(path, std::io::ErrorKind::NotFound.into()));
    }
    let reader = PytorchReader::new(path).map_err(|e| torch_err(e.to_string()))?;
    let mut tensors: HashMap<String, TensorSnapshot> = reader
        .into_tensors()
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(k, v)| {
            (
                k.strip_prefix("module.").map(str::to_string).unwrap_or(k),
                v,
            )
        })
        .collect();

    let mut take = |name: String| -> Result<Array> {
        let snapshot = tensors
            .remove(&name)
            .ok_or_else(|| BackboneError::MissingWeight(name.clone()))?;
        let data = snapshot
            .to_data()
            .map_err(|e| torch_err(format!("{name}: {e}")))?
            .convert::<f32>();
        let shape = data.shape.to_vec();
        let values = data
            .to_vec::<f32>()
            .map_err(|e| torch_err(format!("{name}: {e:?}")))?;
        Ok(Array::new(shape, values))
    };

    let plan = model.plan();
    let mut layers = Vec::with_capacity(plan.layers.len());
    for layer in &plan.layers {
        let t = |n: &str| format!("{}.{n}", layer.torch);
        let weights = match layer.kind {
            LayerKind::Conv { .. } => LayerWeights::Conv {
                weight: take(t("weight"))?,
                bias: take(t("bias")).ok(),
            },
            LayerKind::BatchNorm { .. } => LayerWeights::BatchNorm {
                gamma: take(t("weight"))?,
                beta: take(t("bias"))?,
                mean: take(t("running_mean"))?,
                var: take(t("running_var"))?,
                // PyTorch checkpoints carry no epsilon; insightface uses the default, as our configs do.
                eps: model.spec().bn_eps(),
            },
            LayerKind::PRelu { .. } => LayerWeights::PRelu {
                slope: take(t("weight"))?,
            },
            LayerKind::Linear { .. } => LayerWeights::Linear {
                weight: take(t("weight"))?,
                bias: take(t("bias")).ok(),
            },
        };
        layers.push(Some(SourcedWeights {
            source: layer.torch.clone(),
            weights,
        }));
    }
    if !tensors.is_empty() {
        let names: BTreeSet<_> = tensors.into_keys().collect();
        let names: Vec<_> = names.into_iter().collect();
        return Err(BackboneError::UnusedWeights(names.join(", ")));
    }
    load_layers(model, &plan, layers, model.spec().bn_eps())
}
