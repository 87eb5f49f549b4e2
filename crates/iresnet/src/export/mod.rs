//! Our backbones out to the formats other tools load: ONNX (ONNX Runtime, TensorRT, Triton,
//! insightface's Python model zoo) and arcface_torch's state dict (`.pth` for PyTorch,
//! `.safetensors` with the same names).
//!
//! Everything is read off the backbone's [`Dataflow`](crate::Dataflow), which names each module
//! in insightface's PyTorch code, so any architecture that describes itself exports, and the
//! names are the ones arcface_torch's `get_model(name)` expects.

pub mod onnx;
mod safetensors;
mod torch;

pub use onnx::{to_onnx, OnnxOptions, ONNX_INPUT, ONNX_OPSET, ONNX_OUTPUT};
pub use safetensors::write_safetensors;
pub use torch::write_pth;

use burn::module::Param;
use burn::nn::{BatchNorm, Linear, PRelu};
use burn::tensor::{backend::Backend, Tensor};

use crate::dataflow::{Dataflow, Named, Op};

/// One tensor of a PyTorch state dict: its key, shape and values (PyTorch's layout).
#[derive(Debug, Clone, PartialEq)]
pub struct TorchTensor {
    /// The state-dict key (`layer1.0.conv1.weight`).
    pub key: String,
    /// PyTorch's shape.
    pub shape: Vec<usize>,
    /// Float values, or `None` for BatchNorm's `num_batches_tracked` (an int64 scalar 0).
    pub values: Option<Vec<f32>>,
}

/// A parameter's values as `f32`.
pub fn param_values<B: Backend, const D: usize>(p: &Param<Tensor<B, D>>) -> Vec<f32> {
    tensor_values(p.val())
}

/// A tensor's values as `f32`.
pub fn tensor_values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("converted to f32")
}

/// An inference BatchNorm's parameters and running statistics, read out of Burn.
#[derive(Debug, Clone)]
pub struct BatchNormValues {
    /// Scale.
    pub gamma: Vec<f32>,
    /// Shift.
    pub beta: Vec<f32>,
    /// Running mean.
    pub mean: Vec<f32>,
    /// Running variance.
    pub var: Vec<f32>,
    /// Epsilon.
    pub eps: f32,
}

impl BatchNormValues {
    /// Reads `bn`.
    pub fn of<B: Backend>(bn: &BatchNorm<B>) -> Self {
        Self {
            gamma: param_values(&bn.gamma),
            beta: param_values(&bn.beta),
            mean: tensor_values(bn.running_mean.value()),
            var: tensor_values(bn.running_var.value()),
            eps: bn.epsilon as f32,
        }
    }
}

fn push(out: &mut Vec<TorchTensor>, key: String, shape: Vec<usize>, values: Vec<f32>) {
    out.push(TorchTensor {
        key,
        shape,
        values: Some(values),
    });
}

fn batch_norm<B: Backend>(out: &mut Vec<TorchTensor>, bn: &Named<'_, BatchNorm<B>>) {
    let v = BatchNormValues::of(bn.module);
    let c = v.gamma.len();
    for (name, values) in [
        ("weight", v.gamma),
        ("bias", v.beta),
        ("running_mean", v.mean),
        ("running_var", v.var),
    ] {
        push(out, format!("{}.{name}", bn.torch), vec![c], values);
    }
    out.push(TorchTensor {
        key: format!("{}.num_batches_tracked", bn.torch),
        shape: Vec::new(),
        values: None,
    });
}

fn prelu<B: Backend>(out: &mut Vec<TorchTensor>, p: &Named<'_, PRelu<B>>) {
    let slopes = param_values(&p.module.alpha);
    push(
        out,
        format!("{}.weight", p.torch),
        vec![slopes.len()],
        slopes,
    );
}

fn linear<B: Backend>(out: &mut Vec<TorchTensor>, fc: &Named<'_, Linear<B>>) {
    // Burn stores `[in, out]`; PyTorch `[out, in]`.
    let [d_in, d_out] = fc.module.weight.dims();
    let w = tensor_values(fc.module.weight.val().transpose());
    push(out, format!("{}.weight", fc.torch), vec![d_out, d_in], w);
    if let Some(b) = &fc.module.bias {
        push(
            out,
            format!("{}.bias", fc.torch),
            vec![d_out],
            param_values(b),
        );
    }
}

/// The backbone's arcface_torch state dict, in forward order.
pub fn state_dict<B: Backend>(flow: &Dataflow<'_, B>) -> Vec<TorchTensor> {
    let mut out = Vec::new();
    for op in &flow.ops {
        match op {
            Op::Conv {
                conv, bn, prelu: p, ..
            } => {
                let w = &conv.module.weight;
                push(
                    &mut out,
                    format!("{}.weight", conv.torch),
                    w.dims().to_vec(),
                    param_values(w),
                );
                if let Some(b) = &conv.module.bias {
                    let values = param_values(b);
                    push(
                        &mut out,
                        format!("{}.bias", conv.torch),
                        vec![values.len()],
                        values,
                    );
                }
                batch_norm(&mut out, bn);
                if let Some(p) = p {
                    prelu(&mut out, p);
                }
            }
            Op::Norm { bn, .. } => batch_norm(&mut out, bn),
            Op::Add { .. } => {}
            Op::Embedding {
                pre, fc, features, ..
            } => {
                if let Some(pre) = pre {
                    batch_norm(&mut out, pre);
                }
                linear(&mut out, fc);
                batch_norm(&mut out, features);
            }
        }
    }
    out
}
