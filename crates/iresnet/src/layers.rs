//! The small units both backbones are built from.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PRelu};
use burn::tensor::{backend::Backend, Tensor};
use cpu_conv::{conv2d, ConvBackend};

use crate::conv::{ConvInit, ConvSpec};
use crate::dataflow::{child, Dataflow, Value};
use crate::norm::{apply_batch_norm, apply_prelu, batch_norm, prelu};

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

    /// Adds this block to `flow`, named as PyTorch's `nn.Sequential(conv, bn, prelu)`.
    pub(crate) fn describe<'a>(
        &'a self,
        flow: &mut Dataflow<'a, B>,
        input: Value,
        burn: &str,
        torch: &str,
    ) -> Value {
        let at = (burn, torch);
        let prelu = self
            .prelu
            .as_ref()
            .map(|m| child(m, at, ("prelu", "layers.2")));
        flow.conv(
            input,
            child(&self.conv, at, ("conv", "layers.0")),
            child(&self.bn, at, ("bn", "layers.1")),
            prelu,
        )
    }
}

impl<B: ConvBackend> ConvBnAct<B> {
    /// The block's output.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = apply_batch_norm(&self.bn, conv2d(&self.conv, x));
        match &self.prelu {
            Some(prelu) => apply_prelu(prelu, x),
            None => x,
        }
    }
}
