//! Reading the PyTorch checkpoint and folding BatchNorm into the convolutions.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::{
    module::Param,
    nn::{
        conv::{Conv2d, Conv2dConfig},
        PaddingConfig2d,
    },
    tensor::{backend::Backend, Tensor, TensorData},
};
use burn_store::{pytorch::PytorchReader, TensorSnapshot};

use crate::error::DetectError;

/// PyTorch's BatchNorm default epsilon, which the RetinaFace checkpoint was trained with.
const BN_EPS: f32 = 1e-5;

/// A state dict being consumed: what is left at the end was not used.
pub(crate) struct StateDict {
    tensors: HashMap<String, TensorSnapshot>,
    path: PathBuf,
}

impl StateDict {
    pub fn open(path: &Path) -> Result<Self, DetectError> {
        let err = |message: String| DetectError::Weights {
            path: path.to_path_buf(),
            message,
        };
        if !path.exists() {
            return Err(err("no such file".into()));
        }
        let reader = PytorchReader::new(path).map_err(|e| err(e.to_string()))?;
        let tensors = reader
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
        Ok(Self {
            tensors,
            path: path.to_path_buf(),
        })
    }

    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, DetectError> {
        let snapshot = self
            .tensors
            .remove(name)
            .ok_or_else(|| DetectError::MissingWeight(name.to_string()))?;
        let found = snapshot.shape.to_vec();
        if found != shape {
            return Err(DetectError::WeightShape {
                name: name.to_string(),
                found,
                expected: shape.to_vec(),
            });
        }
        let values = snapshot
            .to_data()
            .map_err(|e| DetectError::Weights {
                path: self.path.clone(),
                message: format!("{name}: {e}"),
            })?
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| DetectError::Weights {
                path: self.path.clone(),
                message: format!("{name}: {e:?}"),
            })?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(DetectError::NonFiniteWeight(name.to_string()));
        }
        Ok(values)
    }

    /// Every tensor must have been used.
    pub fn finish(self) -> Result<(), DetectError> {
        if self.tensors.is_empty() {
            return Ok(());
        }
        let names: BTreeSet<String> = self.tensors.into_keys().collect();
        Err(DetectError::UnusedWeights(
            names.into_iter().collect::<Vec<_>>().join(", "),
        ))
    }
}

/// Shape of one convolution as the checkpoint has it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvShape {
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
}

impl ConvShape {
    pub fn new(cin: usize, cout: usize, kernel: usize) -> Self {
        Self {
            cin,
            cout,
            kernel,
            stride: 1,
            groups: 1,
        }
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }
    pub fn depthwise(mut self) -> Self {
        self.groups = self.cin;
        self
    }

    /// PyTorch's weight layout: `[cout, cin / groups, k, k]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.cout, self.cin / self.groups, self.kernel, self.kernel]
    }
}

fn build_conv<B: Backend>(
    shape: ConvShape,
    weight: Vec<f32>,
    bias: Vec<f32>,
    device: &B::Device,
) -> Conv2d<B> {
    let ConvShape {
        cin,
        cout,
        kernel,
        stride,
        groups,
    } = shape;
    let pad = kernel / 2;
    let mut conv = Conv2dConfig::new([cin, cout], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_groups(groups)
        .with_bias(true)
        .init(device);
    let w = TensorData::new(weight, shape.weight_shape());
    conv.weight = Param::from_tensor(Tensor::from_data(w, device));
    conv.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(bias, [cout]),
        device,
    )));
    conv
}

impl StateDict {
    /// `prefix.{conv}.weight` followed by BatchNorm `prefix.{bn}.*`, folded into one biased conv:
    /// `w' = w * g / sqrt(v + eps)`, `b' = beta - mean * g / sqrt(v + eps)`.
    pub fn conv_bn<B: Backend>(
        &mut self,
        conv: &str,
        bn: &str,
        shape: ConvShape,
        device: &B::Device,
    ) -> Result<Conv2d<B>, DetectError> {
        let mut weight = self.take(&format!("{conv}.weight"), &shape.weight_shape())?;
        let c = [shape.cout];
        let gamma = self.take(&format!("{bn}.weight"), &c)?;
        let beta = self.take(&format!("{bn}.bias"), &c)?;
        let mean = self.take(&format!("{bn}.running_mean"), &c)?;
        let var = self.take(&format!("{bn}.running_var"), &c)?;
        let per_out = weight.len() / shape.cout;
        let mut bias = vec![0.0; shape.cout];
        for o in 0..shape.cout {
            let k = gamma[o] / (var[o] + BN_EPS).sqrt();
            weight[o * per_out..(o + 1) * per_out]
                .iter_mut()
                .for_each(|w| *w *= k);
            bias[o] = beta[o] - mean[o] * k;
        }
        Ok(build_conv(shape, weight, bias, device))
    }

    /// A plain biased convolution `prefix.weight` / `prefix.bias`.
    pub fn conv<B: Backend>(
        &mut self,
        prefix: &str,
        shape: ConvShape,
        device: &B::Device,
    ) -> Result<Conv2d<B>, DetectError> {
        let weight = self.take(&format!("{prefix}.weight"), &shape.weight_shape())?;
        let bias = self.take(&format!("{prefix}.bias"), &[shape.cout])?;
        Ok(build_conv(shape, weight, bias, device))
    }
}
