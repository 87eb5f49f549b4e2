//! The small units both backbones are built from.

use burn::module::{Initializer, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PRelu, PReluConfig, PaddingConfig2d};
use burn::tensor::{backend::Backend, Tensor};

use crate::dataflow::{Dataflow, Named, Value};
use crate::norm::{apply_batch_norm, apply_prelu};
use crate::plan::join;

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
    /// The geometry of a built (or loaded) convolution, read back from the module.
    pub fn of<B: Backend>(conv: &Conv2d<B>) -> Self {
        let [out_channels, in_per_group, kernel, _] = conv.weight.dims();
        let padding = match conv.padding {
            PaddingConfig2d::Explicit(p, ..) => p,
            _ => 0,
        };
        Self {
            in_channels: in_per_group * conv.groups,
            out_channels,
            kernel,
            stride: conv.stride[0],
            padding,
            groups: conv.groups,
        }
    }

    /// `3x3, padding 1`.
    pub fn k3(in_channels: usize, out_channels: usize) -> Self {
        Self::new(in_channels, out_channels, 3).padding(1)
    }

    pub fn out_size(&self, in_size: usize) -> usize {
        (in_size + 2 * self.padding).saturating_sub(self.kernel) / self.stride.max(1) + 1
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
    /// The convolution.
    pub conv: Conv2d<B>,
    /// BatchNorm after it.
    pub bn: BatchNorm<B>,
    /// PReLU after that, if any.
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

    /// The block's output.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = apply_batch_norm(&self.bn, self.conv.forward(x));
        match &self.prelu {
            Some(prelu) => apply_prelu(prelu, x),
            None => x,
        }
    }

    /// Adds this block to `flow`, named as PyTorch's `nn.Sequential(conv, bn, prelu)`.
    pub(crate) fn describe<'a>(
        &'a self,
        flow: &mut Dataflow<'a, B>,
        input: Value,
        burn: &str,
        torch: &str,
    ) -> Value {
        let name = |n: &str, t: &str| (join(burn, n), join(torch, t));
        let ((c, tc), (b, tb), (p, tp)) = (
            name("conv", "layers.0"),
            name("bn", "layers.1"),
            name("prelu", "layers.2"),
        );
        let prelu = self.prelu.as_ref().map(|m| Named::new(m, p, tp));
        flow.conv(
            input,
            Named::new(&self.conv, c, tc),
            Named::new(&self.bn, b, tb),
            prelu,
        )
    }
}
