//! The small units both backbones are built from.

use burn::module::{Initializer, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PRelu, PReluConfig, PaddingConfig2d};
use burn::tensor::{backend::Backend, Tensor};

/// `x * scale[c] + shift[c]` over `[N, C, H, W]`.
///
/// Written as a `[N*C, H*W]` by `[N*C, 1]` broadcast: Burn 0.21's flex backend broadcasts a
/// `[1, C, 1, 1]` operand over a batch about 15-25x slower than along the last axis (measured:
/// 54 ms against 3.6 ms for `[32, 64, 56, 56]`), which made BatchNorm and PReLU cost more than
/// the convolutions.
pub(crate) fn channel_affine<B: Backend>(
    x: Tensor<B, 4>,
    scale: Tensor<B, 1>,
    shift: Option<Tensor<B, 1>>,
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let column = |v: Tensor<B, 1>| v.reshape([1, c]).repeat_dim(0, n).reshape([n * c, 1]);
    let y = x.reshape([n * c, h * w]).mul(column(scale));
    let y = match shift {
        Some(shift) => y.add(column(shift)),
        None => y,
    };
    y.reshape([n, c, h, w])
}

/// BatchNorm over `[N, C, H, W]`: Burn's own in training (batch statistics, running-stat
/// updates), a folded per-channel affine at inference.
pub(crate) fn batch_norm_2d<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    if B::ad_enabled(&x.device()) {
        return bn.forward(x);
    }
    let scale = bn.gamma.val() / bn.running_var.value().add_scalar(bn.epsilon).sqrt();
    let shift = bn.beta.val() - bn.running_mean.value() * scale.clone();
    channel_affine(x, scale, Some(shift))
}

/// PReLU with per-channel slopes: `max(x, 0) + alpha[c] * min(x, 0)` (same values and
/// gradients as Burn's, without its slow broadcast).
pub(crate) fn prelu_2d<B: Backend>(prelu: &PRelu<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let positive = x.clone().clamp_min(0.0);
    positive + channel_affine(x.clamp_max(0.0), prelu.alpha.val(), None)
}

use crate::plan::{join, LayerKind, Plan};

/// How a conv's weights are drawn, following the PyTorch reference of each family.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ConvInit {
    /// `normal(0, std)` (IResNet uses 0.1).
    Normal(f64),
    /// `kaiming_normal_(mode="fan_out", nonlinearity="relu")` as PyTorch computes fan-out
    /// (`out_channels * k * k`, ignoring groups), which Burn's Kaiming does not.
    KaimingFanOut,
}

/// Geometry of a square convolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

impl ConvSpec {
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
            groups: 1,
        }
    }
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }
    pub fn padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
    /// `3x3, padding 1`.
    pub fn k3(in_channels: usize, out_channels: usize) -> Self {
        Self::new(in_channels, out_channels, 3).padding(1)
    }

    pub fn out_size(&self, in_size: usize) -> usize {
        (in_size + 2 * self.padding - self.kernel) / self.stride + 1
    }

    pub fn init<B: Backend>(&self, init: ConvInit, device: &B::Device) -> Conv2d<B> {
        let initializer = match init {
            ConvInit::Normal(std) => Initializer::Normal { mean: 0.0, std },
            ConvInit::KaimingFanOut => {
                let fan_out = self.out_channels * self.kernel * self.kernel;
                Initializer::Normal {
                    mean: 0.0,
                    std: (2.0 / fan_out as f64).sqrt(),
                }
            }
        };
        let p = self.padding;
        Conv2dConfig::new(
            [self.in_channels, self.out_channels],
            [self.kernel, self.kernel],
        )
        .with_stride([self.stride, self.stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_groups(self.groups)
        .with_bias(false)
        .with_initializer(initializer)
        .init(device)
    }

    pub fn plan(&self, plan: &mut Plan, burn: String, torch: String, in_size: usize) {
        plan.push(
            LayerKind::Conv {
                in_channels: self.in_channels,
                out_channels: self.out_channels,
                kernel: self.kernel,
                stride: self.stride,
                padding: self.padding,
                groups: self.groups,
                out_size: self.out_size(in_size),
            },
            burn,
            torch,
        );
    }
}

pub(crate) fn batch_norm<B: Backend>(
    channels: usize,
    eps: f64,
    device: &B::Device,
) -> BatchNorm<B> {
    BatchNormConfig::new(channels)
        .with_epsilon(eps)
        .init(device)
}

pub(crate) fn prelu<B: Backend>(channels: usize, device: &B::Device) -> PRelu<B> {
    PReluConfig::new()
        .with_num_parameters(channels)
        .with_alpha(0.25)
        .init(device)
}

/// Conv, BatchNorm and an optional PReLU: MobileFaceNet's `ConvBlock` (with PReLU)
/// and `LinearBlock` (without).
#[derive(Module, Debug)]
pub struct ConvBnAct<B: Backend> {
    pub conv: Conv2d<B>,
    pub bn: BatchNorm<B>,
    pub prelu: Option<PRelu<B>>,
}

impl<B: Backend> ConvBnAct<B> {
    pub(crate) fn new(spec: ConvSpec, activation: bool, eps: f64, device: &B::Device) -> Self {
        Self {
            conv: spec.init(ConvInit::KaimingFanOut, device),
            bn: batch_norm(spec.out_channels, eps, device),
            prelu: activation.then(|| prelu(spec.out_channels, device)),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = batch_norm_2d(&self.bn, self.conv.forward(x));
        match &self.prelu {
            Some(prelu) => prelu_2d(prelu, x),
            None => x,
        }
    }

    /// The geometry, read back from the weights (modules loaded from records have no config).
    pub(crate) fn spec(&self) -> ConvSpec {
        let [out_channels, in_per_group, kernel, _] = self.conv.weight.dims();
        let groups = self.conv.groups;
        let padding = match self.conv.padding {
            PaddingConfig2d::Explicit(p, ..) => p,
            _ => 0,
        };
        ConvSpec {
            in_channels: in_per_group * groups,
            out_channels,
            kernel,
            stride: self.conv.stride[0],
            padding,
            groups,
        }
    }

    /// Describes this block in PyTorch's `nn.Sequential(conv, bn, prelu)` naming.
    pub(crate) fn plan(&self, plan: &mut Plan, burn: &str, torch: &str, in_size: usize) -> usize {
        let spec = self.spec();
        spec.plan(plan, join(burn, "conv"), join(torch, "layers.0"), in_size);
        plan.push(
            LayerKind::BatchNorm {
                channels: spec.out_channels,
            },
            join(burn, "bn"),
            join(torch, "layers.1"),
        );
        if self.prelu.is_some() {
            plan.push(
                LayerKind::PRelu {
                    channels: spec.out_channels,
                },
                join(burn, "prelu"),
                join(torch, "layers.2"),
            );
        }
        spec.out_size(in_size)
    }
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
        batch_norm_2d(&bn, x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&bn.forward(x.clone()).into_data(), Tolerance::default());

        let mut p = prelu::<B>(5, &device);
        p.alpha = p
            .alpha
            .map(|t| t.random_like(Distribution::Uniform(0.0, 0.5)));
        prelu_2d(&p, x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&p.forward(x).into_data(), Tolerance::default());
    }

    #[test]
    fn prelu_gradients_equal_burns() {
        let device = Default::default();
        let x = Tensor::<AD, 4>::random([2, 4, 3, 3], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let p = prelu::<AD>(4, &device);
        let grads_ours = prelu_2d(&p, x.clone()).powi_scalar(2).sum().backward();
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
