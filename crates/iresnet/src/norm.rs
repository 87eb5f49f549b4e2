//! BatchNorm and PReLU: how the backbones build them, and forward passes over their
//! per-channel parameters.
//!
//! Burn 0.21's flex backend broadcasts a `[1, C, 1, 1]` operand over a batch about 15-25x slower
//! than along the last axis (measured: `[32, 64, 56, 56] * [1, 64, 1, 1]` 54 ms, the same product
//! as `[N*C, H*W] * [N*C, 1]` 3.6 ms), which made Burn's BatchNorm and PReLU cost more than the
//! convolutions they follow. These versions only broadcast along the last axis. Training-mode
//! BatchNorm also keeps its running variance as PyTorch does (unbiased), where Burn's keeps the
//! biased one.

use burn::nn::{BatchNorm, BatchNormConfig, PRelu, PReluConfig};
use burn::tensor::{backend::Backend, DType, FloatDType, Tensor};

/// `[N, C, ...]` seen as `[N, C, R]`.
fn nc_rest<const D: usize>(dims: [usize; D]) -> [usize; 3] {
    [dims[0], dims[1], dims[2..].iter().product()]
}

/// `x * scale[c] + shift[c]` over `[N, C, ...]`, either part optional.
pub(crate) fn channel_affine<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    scale: Option<Tensor<B, 1>>,
    shift: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    let dims = x.dims();
    let [n, c, r] = nc_rest(dims);
    let column = |v: Tensor<B, 1>| v.reshape([1, c]).repeat_dim(0, n).reshape([n * c, 1]);
    let mut y = x.reshape([n * c, r]);
    if let Some(scale) = scale {
        y = y.mul(column(scale));
    }
    if let Some(shift) = shift {
        y = y.add(column(shift));
    }
    y.reshape(dims)
}

/// Per-channel mean over the batch and every other axis: `[C]`.
fn channel_mean<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 1> {
    let [n, c, r] = nc_rest(x.dims());
    x.reshape([n, c, r])
        .sum_dim(2)
        .sum_dim(0)
        .reshape([c])
        .div_scalar((n * r) as f64)
}

/// BatchNorm over `[N, C, ...]`.
///
/// With autodiff (training): batch statistics, and running statistics updated as PyTorch does,
/// `(1 - m) * running + m * batch` with the unbiased batch variance. Without (inference): the
/// running statistics folded into one per-channel affine.
pub(crate) fn apply_batch_norm<B: Backend, const D: usize>(
    bn: &BatchNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    if !B::ad_enabled(&x.device()) {
        let scale = bn.gamma.val() / bn.running_var.value().add_scalar(bn.epsilon).sqrt();
        let shift = bn.beta.val() - bn.running_mean.value() * scale.clone();
        return channel_affine(x, Some(scale), Some(shift));
    }
    // Half-precision activations (mixed-precision training) are normalized in f32, as PyTorch's
    // autocast runs batch_norm: subtracting a large mean in bf16 loses most of the signal.
    let input_dtype = x.dtype();
    let half = matches!(input_dtype, DType::BF16 | DType::F16);
    let x = if half { x.cast(FloatDType::F32) } else { x };
    let [n, _, r] = nc_rest(x.dims());
    let count = n * r;
    let mean = channel_mean(x.clone());
    let centered = channel_affine(x, None, Some(mean.clone().neg()));
    let var = channel_mean(centered.clone().powi_scalar(2));
    // The affine parameters in the activations' dtype: under mixed precision a frozen gamma
    // (insightface's embedding BN) is not cast with the trainable weights.
    let dtype = var.dtype();
    let scale = bn.gamma.val().cast(dtype) / var.clone().add_scalar(bn.epsilon).sqrt();
    let y = channel_affine(centered, Some(scale), Some(bn.beta.val().cast(dtype)));

    let m = bn.momentum;
    let unbiased = var
        .detach()
        .mul_scalar(count as f64 / count.saturating_sub(1).max(1) as f64);
    // Running statistics keep their own dtype (f32 under mixed precision, where the batch
    // statistics come in bf16).
    let (old_mean, old_var) = (bn.running_mean.value_sync(), bn.running_var.value_sync());
    let running_mean =
        old_mean.clone().mul_scalar(1.0 - m) + mean.detach().cast(old_mean.dtype()).mul_scalar(m);
    let running_var =
        old_var.clone().mul_scalar(1.0 - m) + unbiased.cast(old_var.dtype()).mul_scalar(m);
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
    if half {
        y.cast(input_dtype)
    } else {
        y
    }
}

/// PReLU with per-channel slopes: `max(x, 0) + alpha[c] * min(x, 0)`.
pub(crate) fn apply_prelu<B: Backend, const D: usize>(
    prelu: &PRelu<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let positive = x.clone().clamp_min(0.0);
    positive + channel_affine(x.clamp_max(0.0), Some(prelu.alpha.val()), None)
}

/// A BatchNorm of `channels` with epsilon `eps`, as every backbone layer builds it.
pub(crate) fn batch_norm<B: Backend>(
    channels: usize,
    eps: f64,
    device: &B::Device,
) -> BatchNorm<B> {
    BatchNormConfig::new(channels)
        .with_epsilon(eps)
        .init(device)
}

/// A PReLU with one slope per channel, starting at 0.25 as PyTorch's does.
pub(crate) fn prelu<B: Backend>(channels: usize, device: &B::Device) -> PRelu<B> {
    PReluConfig::new()
        .with_num_parameters(channels)
        .with_alpha(0.25)
        .init(device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::{Distribution, Tolerance};

    type B = crate::CpuBackend;
    type AD = Autodiff<B>;

    #[test]
    fn fast_batch_norm_and_prelu_equal_burns() {
        let device = Default::default();
        let x = Tensor::<B, 4>::random([3, 5, 4, 6], Distribution::Normal(0.0, 2.0), &device);
        let mut bn = batch_norm::<B>(5, 1e-5, &device);
        bn.gamma = bn
            .gamma
            .map(|t| t.random_like(Distribution::Uniform(0.5, 1.5)));
        bn.beta = bn
            .beta
            .map(|t| t.random_like(Distribution::Normal(0.0, 1.0)));
        bn.running_mean = burn::module::RunningState::new(Tensor::random(
            [5],
            Distribution::Normal(0.0, 1.0),
            &device,
        ));
        bn.running_var = burn::module::RunningState::new(Tensor::random(
            [5],
            Distribution::Uniform(0.5, 2.0),
            &device,
        ));
        apply_batch_norm(&bn, x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&bn.forward(x.clone()).into_data(), Tolerance::default());

        let mut p = prelu::<B>(5, &device);
        p.alpha = p
            .alpha
            .map(|t| t.random_like(Distribution::Uniform(0.0, 0.5)));
        apply_prelu(&p, x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&p.forward(x).into_data(), Tolerance::default());
    }

    #[test]
    fn prelu_gradients_equal_burns() {
        let device = Default::default();
        let x = Tensor::<AD, 4>::random([2, 4, 3, 3], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let p = prelu::<AD>(4, &device);
        let grads_ours = apply_prelu(&p, x.clone()).powi_scalar(2).sum().backward();
        let grads_burn = p.forward(x.clone()).powi_scalar(2).sum().backward();
        let tol = Tolerance::default();
        x.grad(&grads_ours)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&x.grad(&grads_burn).unwrap().into_data(), tol);
        p.alpha
            .grad(&grads_ours)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&p.alpha.grad(&grads_burn).unwrap().into_data(), tol);
    }
}
