//! Late fusion of several images of a face (RGB, near-infrared, depth): one backbone per
//! modality, each reading its own planes of the stacked input, their embeddings fused into one.
//! Early fusion needs no module of its own: it is a single backbone whose stem takes every plane
//! (`IResNetConfig::in_channels`).
//!
//! A modality whose planes are all zero for a sample (what a batch holds for a missing or dropped
//! modality) is left out of that sample's fusion, so a model trained with modality dropout keeps
//! working when a camera lacks one.

use burn::module::{Module, Param};
use burn::nn::{BatchNorm, Linear, LinearConfig};
use burn::tensor::{activation::softmax, backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::backbone::{AnyBackbone, Backbone, BackboneConfig};
use crate::error::{BackboneError, Result};
use crate::norm::{apply_batch_norm, batch_norm};
use cpu_conv::ConvBackend;

/// How branch embeddings become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Fuse {
    /// Concatenate the (masked) branch embeddings, then `Linear` + BatchNorm1d to D.
    #[default]
    Concat,
    /// A learned weight per modality (softmax over the modalities present) on the
    /// L2-normalised branch embeddings; every branch must have the fused size D.
    Weighted,
}

/// One branch: the planes it reads and its backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionBranch {
    /// A name for reports (the modality: `rgb`, `nir`, `depth`).
    pub name: String,
    /// First plane of the stacked input it reads.
    pub first_plane: usize,
    /// Planes it reads (3 for RGB, 1 for NIR or depth).
    pub planes: usize,
    /// Its backbone (`in_channels` must equal `planes`).
    pub backbone: BackboneConfig,
}

/// A late-fusion model: branches and how they are fused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LateFusionConfig {
    /// The branches, in input order.
    pub branches: Vec<FusionBranch>,
    /// How their embeddings are fused.
    #[serde(default)]
    pub fuse: Fuse,
    /// D, the fused embedding size.
    pub embedding_dim: usize,
}

impl LateFusionConfig {
    /// Refuses empty, overlapping or mis-sized branches (before anything is allocated).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(BackboneError::InvalidConfig(m));
        if self.branches.is_empty() || self.embedding_dim == 0 {
            return bad("late fusion needs at least one branch and embedding_dim > 0".into());
        }
        for (k, b) in self.branches.iter().enumerate() {
            b.backbone.validate()?;
            if b.planes == 0 || b.backbone.in_channels() != b.planes {
                return bad(format!(
                    "branch {}: reads {} planes but its backbone takes {}",
                    b.name,
                    b.planes,
                    b.backbone.in_channels()
                ));
            }
            let overlaps = self.branches[..k].iter().any(|a| {
                a.first_plane < b.first_plane + b.planes && b.first_plane < a.first_plane + a.planes
            });
            if overlaps {
                return bad(format!(
                    "branch {} overlaps an earlier branch's planes",
                    b.name
                ));
            }
            if self.fuse == Fuse::Weighted && b.backbone.embedding_dim() != self.embedding_dim {
                return bad(format!(
                    "weighted fusion: branch {} embeds to {} values, the fused size is {}",
                    b.name,
                    b.backbone.embedding_dim(),
                    self.embedding_dim
                ));
            }
        }
        Ok(())
    }

    /// Planes of the stacked input the model reads.
    pub fn input_channels(&self) -> usize {
        (self.branches.iter())
            .map(|b| b.first_plane + b.planes)
            .max()
            .unwrap_or(0)
    }

    /// The module, each branch initialised as its architecture is.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<LateFusion<B>> {
        self.validate()?;
        let branches = (self.branches.iter())
            .map(|b| b.backbone.init(device))
            .collect::<Result<Vec<_>>>()?;
        let fuser = match self.fuse {
            Fuse::Concat => {
                let width = self
                    .branches
                    .iter()
                    .map(|b| b.backbone.embedding_dim())
                    .sum();
                Fuser::Concat(ConcatFuse {
                    fc: LinearConfig::new(width, self.embedding_dim).init(device),
                    features: batch_norm(self.embedding_dim, 1e-5, device),
                })
            }
            Fuse::Weighted => Fuser::Weighted(WeightedFuse {
                logits: Param::from_tensor(Tensor::zeros([self.branches.len()], device)),
            }),
        };
        Ok(LateFusion {
            branches,
            fuser,
            config: self.clone(),
        })
    }
}

/// Concatenation, `Linear` and BatchNorm1d.
#[derive(Module, Debug)]
pub struct ConcatFuse<B: Backend> {
    /// The fusing layer.
    pub fc: Linear<B>,
    /// BatchNorm1d on the fused embedding.
    pub features: BatchNorm<B>,
}

/// Learned per-modality weights.
#[derive(Module, Debug)]
pub struct WeightedFuse<B: Backend> {
    /// One logit per branch.
    pub logits: Param<Tensor<B, 1>>,
}

/// The fusing layer of either kind.
// Built once and read every forward pass, as `AnyBackbone` is: boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Fuser<B: Backend> {
    /// [`Fuse::Concat`].
    Concat(ConcatFuse<B>),
    /// [`Fuse::Weighted`].
    Weighted(WeightedFuse<B>),
}

/// One backbone per modality and the layer that fuses them (see the module docs).
#[derive(Module, Debug)]
pub struct LateFusion<B: Backend> {
    /// The branches, in the config's order.
    pub branches: Vec<AnyBackbone<B>>,
    /// The layer that fuses their embeddings.
    pub fuser: Fuser<B>,
    #[module(skip)]
    config: LateFusionConfig,
}

impl<B: Backend> LateFusion<B> {
    /// The configuration it was built from.
    pub fn config(&self) -> &LateFusionConfig {
        &self.config
    }
}

/// `[N, 1]`: 1 where a sample's planes hold anything, 0 where they are all zero (missing).
fn present<B: Backend>(x: &Tensor<B, 4>) -> Tensor<B, 2> {
    let n = x.dims()[0];
    let energy = x.clone().abs().reshape([n as i64, -1]).sum_dim(1);
    energy.greater_elem(0.0).float()
}

impl<B: ConvBackend> LateFusion<B> {
    /// Each branch's embedding of its planes and whether the sample has them.
    fn branch_embeddings(&self, x: &Tensor<B, 4>) -> Vec<(Tensor<B, 2>, Tensor<B, 2>)> {
        (self.branches.iter().zip(&self.config.branches))
            .map(|(net, spec)| {
                let planes = x.clone().narrow(1, spec.first_plane, spec.planes);
                let mask = present(&planes);
                (net.embed(planes), mask)
            })
            .collect()
    }
}

impl<B: ConvBackend> Backbone<B> for LateFusion<B> {
    fn embed(&self, faces: Tensor<B, 4>) -> Tensor<B, 2> {
        let parts = self.branch_embeddings(&faces);
        match &self.fuser {
            Fuser::Concat(c) => {
                let masked: Vec<_> = parts.into_iter().map(|(e, m)| e * m).collect();
                apply_batch_norm(&c.features, c.fc.forward(Tensor::cat(masked, 1)))
            }
            Fuser::Weighted(w) => weighted(parts, w.logits.val()),
        }
    }

    fn embedding_dim(&self) -> usize {
        self.config.embedding_dim
    }

    fn input_channels(&self) -> usize {
        self.config.input_channels()
    }
}

/// `sum_i w_i m_i e_i / |e_i|  /  sum_i w_i m_i` with `w = softmax(logits)`: the modalities
/// present, weighted, on the unit sphere.
fn weighted<B: Backend>(
    parts: Vec<(Tensor<B, 2>, Tensor<B, 2>)>,
    logits: Tensor<B, 1>,
) -> Tensor<B, 2> {
    let n = parts[0].0.dims()[0];
    let masks = Tensor::cat(parts.iter().map(|(_, m)| m.clone()).collect(), 1);
    let w = masks * softmax(logits, 0).unsqueeze::<2>().expand([n as i64, -1]);
    let total = w.clone().sum_dim(1).clamp_min(1e-12);
    let mut fused = Tensor::zeros_like(&parts[0].0);
    for (k, (e, _)) in parts.into_iter().enumerate() {
        let norm = e.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
        fused = fused + e / norm * w.clone().narrow(1, k, 1);
    }
    fused / total
}
