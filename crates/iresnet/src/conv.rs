//! Convolution geometry: how the backbones build their convolutions, and what the layer plan,
//! the dataflow's shapes and `quantize`'s graph read back from a built one.

use burn::module::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;

/// How a conv's weights are drawn, following the PyTorch reference of each family.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ConvInit {
    /// `normal(0, std)` (IResNet uses 0.1).
    Normal(f64),
    /// `kaiming_normal_(mode="fan_out", nonlinearity="relu")` as PyTorch computes fan-out
    /// (`out_channels * k * k`, ignoring groups), which Burn's Kaiming does not.
    KaimingFanOut,
}

/// Geometry of a square convolution: how the backbones build theirs, and what the layer plan,
/// the dataflow's shapes and `quantize`'s graph read back from a module ([`ConvSpec::exact`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Stride, both axes.
    pub stride: usize,
    /// Zero padding, every side.
    pub padding: usize,
    /// Groups.
    pub groups: usize,
}

impl ConvSpec {
    pub(crate) fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
            groups: 1,
        }
    }
    pub(crate) fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }
    pub(crate) fn padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }
    pub(crate) fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
    /// The geometry of a built (or loaded) convolution, read back from the module: the stride
    /// and padding of its first axis and top edge (see [`ConvSpec::exact`]).
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
    pub(crate) fn k3(in_channels: usize, out_channels: usize) -> Self {
        Self::new(in_channels, out_channels, 3).padding(1)
    }

    /// The geometry of `conv` when it is square with equal strides, no dilation and the same
    /// padding on every side (every backbone's); `None` for anything else, which `of` would
    /// misdescribe.
    pub fn exact<B: Backend>(conv: &Conv2d<B>) -> Option<Self> {
        let [_, _, kh, kw] = conv.weight.dims();
        let symmetric = match conv.padding {
            PaddingConfig2d::Explicit(t, l, b, r) => t == l && l == b && b == r,
            PaddingConfig2d::Valid => true,
            _ => false,
        };
        let square = kh == kw && conv.stride[0] == conv.stride[1] && conv.dilation == [1, 1];
        (symmetric && square).then(|| Self::of(conv))
    }

    /// Output side for an input side.
    pub fn out_size(&self, in_size: usize) -> usize {
        (in_size + 2 * self.padding).saturating_sub(self.kernel) / self.stride.max(1) + 1
    }

    pub(crate) fn init<B: Backend>(&self, init: ConvInit, device: &B::Device) -> Conv2d<B> {
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
