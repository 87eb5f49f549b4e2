//! Global-norm gradient clipping, as PyTorch's `clip_grad_norm_` (Burn's own clipping works per
//! tensor, which is a different thing).

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{backend::AutodiffBackend, Tensor};

struct SumSquares<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SumSquares<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.total += g.powi_scalar(2).sum().into_scalar().into_f64_lossy();
        }
    }
}

trait IntoF64 {
    fn into_f64_lossy(self) -> f64;
}

impl<E: burn::tensor::ElementConversion> IntoF64 for E {
    fn into_f64_lossy(self) -> f64 {
        self.elem::<f64>()
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads
                .register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The L2 norm of all of `module`'s gradients in `grads`, taken together.
pub fn global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut visitor = SumSquares::<B> {
        grads,
        total: 0.0,
        _b: Default::default(),
    };
    module.visit(&mut visitor);
    visitor.total.sqrt()
}

/// Scales `module`'s gradients so their global L2 norm is at most `max_norm`, exactly as
/// `torch.nn.utils.clip_grad_norm_`: `coef = max_norm / (norm + 1e-6)`, applied when below 1.
/// Returns the norm before clipping (NaN or infinite when a gradient is; then nothing is scaled).
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let norm = global_norm::<B, M>(module, grads);
    if !norm.is_finite() {
        return norm;
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let mut scale = Scale::<B> {
            grads,
            factor: coef,
            _b: Default::default(),
        };
        module.visit(&mut scale);
    }
    norm
}
