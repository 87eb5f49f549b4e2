//! Mixed precision: the backbone computes in bf16 while the weights the optimiser updates stay
//! f32 ("master weights").
//!
//! Each step the backbone's trainable parameters are cast to bf16 *inside the autodiff graph*
//! (Burn 0.21's `cast` is differentiable and casts the gradient back), so the forward and
//! backward passes of every convolution, PReLU and BatchNorm run in bf16, and the gradients
//! arrive at the f32 parameters as f32. BatchNorm normalises in f32 (activations cast up and back,
//! as PyTorch's autocast runs batch_norm) and its running statistics stay f32; the embeddings are cast back to f32 before the margin head, so
//! the head's logits, softmax and loss are f32. bf16 keeps f32's exponent range, so no loss
//! scaling is needed; f16 would need it and is not offered.

use std::collections::HashSet;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::{backend::Backend, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// What the backbone computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Backbone forward and backward in bf16, f32 master weights, head and loss in f32.
    Bf16,
}

impl Precision {
    /// The float type the backbone computes in (None: the backend's default, f32).
    pub fn compute_dtype(self) -> Option<FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(FloatDType::BF16),
        }
    }
}

/// Casts trainable parameters (those that require a gradient) and frozen ones to a dtype,
/// leaving running statistics alone.
struct CastWeights<'a> {
    dtype: FloatDType,
    frozen: &'a HashSet<ParamId>,
}

impl<B: Backend> ModuleMapper<B> for CastWeights<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        if !tensor.is_require_grad() && !self.frozen.contains(&id) {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        Param::from_mapped_value(id, tensor.cast(self.dtype), mapper)
    }
}

/// A copy of `module` whose weights are `dtype` views of the originals, linked to them in the
/// autodiff graph (the gradients of trainable ones land on the originals, in the originals'
/// dtype). `frozen` names weights that get no gradient but compute in `dtype` too.
pub fn compute_copy<B: Backend, M: Module<B>>(
    module: &M,
    dtype: FloatDType,
    frozen: &HashSet<ParamId>,
) -> M {
    module.clone().map(&mut CastWeights { dtype, frozen })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{ModuleVisitor, Param};
    use burn::optim::GradientsParams;
    use burn::tensor::{DType, Distribution};
    use iresnet::{Backbone, BackboneConfig, IResNetConfig};

    type Ad = burn::backend::Autodiff<burn::backend::Flex>;

    /// Each tensor's id, dtype and whether it is trainable (a leaf that requires a gradient;
    /// the copy's cast views are not leaves, so they are told apart by the master's ids).
    #[derive(Default)]
    struct Tensors(Vec<(burn::module::ParamId, DType, bool)>);

    impl ModuleVisitor<Ad> for Tensors {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
            let t = param.val();
            self.0.push((param.id, t.dtype(), t.is_require_grad()));
        }
    }

    #[test]
    fn bf16_compute_with_f32_master_weights_and_gradients() {
        let device = Default::default();
        let backbone = BackboneConfig::IResNet(
            IResNetConfig::new([1, 1, 1, 1])
                .with_widths([4, 8, 8, 16])
                .with_embedding_dim(16),
        )
        .init::<Ad>(&device)
        .unwrap();
        let x =
            Tensor::<Ad, 4>::random([8, 3, 112, 112], Distribution::Uniform(-1.0, 1.0), &device);
        let f32_out = backbone.embed(x.clone());

        let mut master = Tensors::default();
        backbone.visit(&mut master);
        let trainable = master.0.iter().filter(|t| t.2).count();
        assert!(
            trainable > 10 && trainable < master.0.len(),
            "weights and running statistics"
        );
        let copy = compute_copy(&backbone, FloatDType::BF16, &Default::default());
        let mut seen = Tensors::default();
        copy.visit(&mut seen);
        assert_eq!(seen.0.len(), master.0.len());
        for (m, c) in master.0.iter().zip(&seen.0) {
            assert_eq!(m.0, c.0, "same parameter ids");
            // Trainable weights become bf16 views; running statistics stay f32.
            assert_eq!(c.1, if m.2 { DType::BF16 } else { DType::F32 });
            assert_eq!(m.1, DType::F32, "the master weights stay f32");
        }

        let out = copy.embed(x.cast(FloatDType::BF16));
        assert_eq!(out.dtype(), DType::BF16);
        let out = out.cast(FloatDType::F32);
        // bf16 has 8 mantissa bits: close to the f32 result, not equal to it. Measured as RMS
        // error over RMS value (the last BatchNorm normalises over only 8 faces of a random
        // net, which magnifies single values; 30 runs gave at most 1.6%).
        let rms = |t: Tensor<Ad, 2>| t.powi_scalar(2).mean().sqrt().into_scalar();
        let (err, size) = (rms(out.clone() - f32_out.clone()), rms(f32_out.clone()));
        assert!(err > 0.0 && err < 0.05 * size, "rms error {err} of {size}");

        let grads = GradientsParams::from_grads(out.sum().backward(), &backbone);
        struct GradDtypes<'a>(&'a GradientsParams, Vec<DType>);
        impl ModuleVisitor<Ad> for GradDtypes<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
                if let Some(g) = self.0.get::<burn::backend::Flex, D>(param.id) {
                    self.1.push(g.dtype());
                }
            }
        }
        let mut g = GradDtypes(&grads, vec![]);
        backbone.visit(&mut g);
        assert_eq!(g.1.len(), trainable, "every master weight has its gradient");
        assert!(g.1.iter().all(|d| *d == DType::F32), "{:?}", g.1);
        // The running statistics were updated by the bf16 pass, and kept f32.
        let mut after = Tensors::default();
        backbone.visit(&mut after);
        assert!(after.0.iter().all(|t| t.1 == DType::F32));
    }
}
