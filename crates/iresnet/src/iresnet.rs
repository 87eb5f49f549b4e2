//! IResNet as insightface's arcface_torch builds it (`backbones/iresnet.py`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Dropout, DropoutConfig, Linear, LinearConfig, PRelu};
use burn::tensor::{backend::Backend, Tensor};
use cpu_conv::{conv2d, ConvBackend};

use crate::conv::{ConvInit, ConvSpec};
use crate::dataflow::{same, Dataflow, Named, Op, Value};
use crate::norm::{apply_batch_norm, apply_prelu, batch_norm, prelu};
use crate::plan::join;
use crate::preprocess::INPUT_SIZE;

/// Feature-map side before the head (the input is downsampled 16 times).
const HEAD_SIZE: usize = INPUT_SIZE / 16;

/// Configuration of an [`IResNet`].
#[derive(Config, Debug, PartialEq)]
pub struct IResNetConfig {
    /// Blocks per stage: `[2,2,2,2]` is r18, `[3,4,14,3]` r50, `[3,13,30,3]` r100.
    pub layers: [usize; 4],
    /// Planes of the four stages; the stem has `widths[0]` channels. Smaller widths give small
    /// models for tests and CPU demos on the same code path.
    #[config(default = "[64, 128, 256, 512]")]
    pub widths: [usize; 4],
    /// Embedding size D.
    #[config(default = 512)]
    pub embedding_dim: usize,
    /// Dropout before the FC layer (insightface: 0; 0.4 is a common choice).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Epsilon of every BatchNorm.
    #[config(default = 1e-5)]
    pub bn_eps: f64,
    /// Input planes of the stem: 3 for RGB; 1 for a near-infrared or depth image; 5 for early
    /// fusion of RGB, NIR and depth stacked along the channel axis.
    #[config(default = 3)]
    pub in_channels: usize,
}

impl IResNetConfig {
    /// IResNet-18: blocks [2, 2, 2, 2].
    pub fn r18() -> Self {
        Self::new([2, 2, 2, 2])
    }
    /// IResNet-34: blocks [3, 4, 6, 3].
    pub fn r34() -> Self {
        Self::new([3, 4, 6, 3])
    }
    /// IResNet-50: blocks [3, 4, 14, 3].
    pub fn r50() -> Self {
        Self::new([3, 4, 14, 3])
    }
    /// IResNet-100: blocks [3, 13, 30, 3].
    pub fn r100() -> Self {
        Self::new([3, 13, 30, 3])
    }
    /// IResNet-200: blocks [6, 26, 60, 6].
    pub fn r200() -> Self {
        Self::new([6, 26, 60, 6])
    }

    /// Scales every stage width (rounded, at least 1 channel).
    pub fn with_width_multiplier(self, multiplier: f64) -> Self {
        let widths = self
            .widths
            .map(|w| ((w as f64 * multiplier).round() as usize).max(1));
        self.with_widths(widths)
    }

    /// Refuses settings out of range (before anything is allocated).
    pub fn validate(&self) -> Result<(), String> {
        if self.layers.contains(&0) {
            return Err(format!(
                "every stage needs at least one block, got {:?}",
                self.layers
            ));
        }
        if self.in_channels == 0 || self.in_channels > 64 {
            return Err(format!(
                "in_channels must be in 1..=64, got {}",
                self.in_channels
            ));
        }
        if self.widths.contains(&0) || self.embedding_dim == 0 {
            return Err("widths and embedding_dim must be positive".into());
        }
        // Far beyond any published model; a config (or a model file's header) past these is
        // damaged, and building it would exhaust memory instead of failing.
        if self.layers.iter().any(|&n| n > 256) || self.widths.iter().any(|&w| w > 4096) {
            return Err(format!(
                "blocks {:?} / widths {:?} are out of range (at most 256 blocks and 4096 planes a stage)",
                self.layers, self.widths
            ));
        }
        check_common(self.embedding_dim, self.bn_eps)?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        Ok(())
    }

    /// The module, initialized as insightface's reference does.
    pub fn init<B: Backend>(&self, device: &B::Device) -> IResNet<B> {
        let eps = self.bn_eps;
        let stem = self.widths[0];
        let mut inplanes = stem;
        let mut stage = |planes: usize, blocks: usize| {
            let mut out = Vec::with_capacity(blocks);
            for i in 0..blocks {
                let stride = if i == 0 { 2 } else { 1 };
                out.push(IBasicBlock::new(inplanes, planes, stride, eps, device));
                inplanes = planes;
            }
            out
        };
        let layer1 = stage(self.widths[0], self.layers[0]);
        let layer2 = stage(self.widths[1], self.layers[1]);
        let layer3 = stage(self.widths[2], self.layers[2]);
        let layer4 = stage(self.widths[3], self.layers[3]);
        let last = self.widths[3];
        let mut features = batch_norm(self.embedding_dim, eps, device);
        // insightface fixes the embedding BN's scale at 1 and trains only its shift.
        features.gamma = features.gamma.set_require_grad(false);
        IResNet {
            conv1: ConvSpec::k3(self.in_channels, stem).init(ConvInit::Normal(0.1), device),
            bn1: batch_norm(stem, eps, device),
            prelu: prelu(stem, device),
            layer1,
            layer2,
            layer3,
            layer4,
            bn2: batch_norm(last, eps, device),
            dropout: DropoutConfig::new(self.dropout).init(),
            fc: LinearConfig::new(last * HEAD_SIZE * HEAD_SIZE, self.embedding_dim).init(device),
            features,
        }
    }
}

/// Checks shared by every backbone config.
pub(crate) fn check_common(embedding_dim: usize, bn_eps: f64) -> Result<(), String> {
    if embedding_dim > 16384 {
        return Err(format!(
            "embedding_dim {embedding_dim} is out of range (at most 16384)"
        ));
    }
    if !(bn_eps > 0.0 && bn_eps < 1.0) {
        return Err(format!("bn_eps must be in (0, 1), got {bn_eps}"));
    }
    Ok(())
}

/// `BN, conv3x3, BN, PReLU, conv3x3(stride), BN` plus identity or a strided 1x1 downsample;
/// no activation after the sum.
#[derive(Module, Debug)]
pub struct IBasicBlock<B: Backend> {
    /// BatchNorm before the first convolution.
    pub bn1: BatchNorm<B>,
    /// 3x3 convolution.
    pub conv1: Conv2d<B>,
    /// BatchNorm after it.
    pub bn2: BatchNorm<B>,
    /// PReLU after that.
    pub prelu: PRelu<B>,
    /// 3x3 convolution, strided in a stage's first block.
    pub conv2: Conv2d<B>,
    /// BatchNorm after it.
    pub bn3: BatchNorm<B>,
    /// The shortcut's projection, where the shape changes.
    pub downsample: Option<Downsample<B>>,
}

/// `conv1x1(stride)` then BN, named `downsample.0` / `downsample.1` in PyTorch.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// 1x1 strided convolution.
    pub conv: Conv2d<B>,
    /// BatchNorm after it.
    pub bn: BatchNorm<B>,
}

impl<B: Backend> IBasicBlock<B> {
    fn new(inplanes: usize, planes: usize, stride: usize, eps: f64, device: &B::Device) -> Self {
        let init = ConvInit::Normal(0.1);
        let downsample = (stride != 1 || inplanes != planes).then(|| Downsample {
            conv: ConvSpec::new(inplanes, planes, 1)
                .stride(stride)
                .init(init, device),
            bn: batch_norm(planes, eps, device),
        });
        Self {
            bn1: batch_norm(inplanes, eps, device),
            conv1: ConvSpec::k3(inplanes, planes).init(init, device),
            bn2: batch_norm(planes, eps, device),
            prelu: prelu(planes, device),
            conv2: ConvSpec::k3(planes, planes)
                .stride(stride)
                .init(init, device),
            bn3: batch_norm(planes, eps, device),
            downsample,
        }
    }

    /// Adds the block to `flow`: `bn1`, `conv1`+`bn2`+PReLU, `conv2`+`bn3`, the shortcut, the sum.
    fn describe<'a>(&'a self, flow: &mut Dataflow<'a, B>, x: Value, path: &str) -> Value {
        let normalized = flow.push(Op::Norm {
            input: x,
            bn: same(&self.bn1, path, "bn1"),
        });
        let y = flow.conv(
            normalized,
            same(&self.conv1, path, "conv1"),
            same(&self.bn2, path, "bn2"),
            Some(same(&self.prelu, path, "prelu")),
        );
        let y = flow.conv(
            y,
            same(&self.conv2, path, "conv2"),
            same(&self.bn3, path, "bn3"),
            None,
        );
        let identity = match &self.downsample {
            Some(d) => flow.conv(
                x,
                Named::new(
                    &d.conv,
                    join(path, "downsample.conv"),
                    join(path, "downsample.0"),
                ),
                Named::new(
                    &d.bn,
                    join(path, "downsample.bn"),
                    join(path, "downsample.1"),
                ),
                None,
            ),
            None => x,
        };
        flow.push(Op::Add { a: y, b: identity })
    }
}

impl<B: ConvBackend> IBasicBlock<B> {
    /// The block's output.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let out = conv2d(&self.conv1, apply_batch_norm(&self.bn1, x.clone()));
        let out = apply_prelu(&self.prelu, apply_batch_norm(&self.bn2, out));
        let out = apply_batch_norm(&self.bn3, conv2d(&self.conv2, out));
        let identity = match &self.downsample {
            Some(d) => apply_batch_norm(&d.bn, conv2d(&d.conv, x)),
            None => x,
        };
        out + identity
    }
}

/// IResNet-18/34/50/100/200: no max-pool, no global pooling; BN2d, flatten, dropout,
/// `Linear(C*7*7 -> D)` and a BatchNorm1d whose scale stays 1.
#[derive(Module, Debug)]
pub struct IResNet<B: Backend> {
    /// Stem: 3x3 convolution.
    pub conv1: Conv2d<B>,
    /// Stem BatchNorm.
    pub bn1: BatchNorm<B>,
    /// Stem PReLU.
    pub prelu: PRelu<B>,
    /// Stage 1 (56x56).
    pub layer1: Vec<IBasicBlock<B>>,
    /// Stage 2 (28x28).
    pub layer2: Vec<IBasicBlock<B>>,
    /// Stage 3 (14x14).
    pub layer3: Vec<IBasicBlock<B>>,
    /// Stage 4 (7x7).
    pub layer4: Vec<IBasicBlock<B>>,
    /// BatchNorm on the last feature map.
    pub bn2: BatchNorm<B>,
    /// Dropout before `fc` (training only).
    pub dropout: Dropout,
    /// The embedding layer.
    pub fc: Linear<B>,
    /// BatchNorm1d on the embedding.
    pub features: BatchNorm<B>,
}

impl<B: ConvBackend> IResNet<B> {
    /// `[N, C, 112, 112]` normalized faces (`C = in_channels`, 3 for RGB) to `[N, D]`
    /// embeddings (not L2-normalized).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = apply_prelu(
            &self.prelu,
            apply_batch_norm(&self.bn1, conv2d(&self.conv1, x)),
        );
        for block in self.stages() {
            x = block.forward(x);
        }
        let x = apply_batch_norm(&self.bn2, x).flatten::<2>(1, 3);
        let x = self.fc.forward(self.dropout.forward(x));
        apply_batch_norm(&self.features, x)
    }
}

impl<B: Backend> IResNet<B> {
    /// Every residual block, first stage first.
    pub fn stages(&self) -> impl Iterator<Item = &IBasicBlock<B>> {
        self.named_stages().into_iter().flat_map(|(_, stage)| stage)
    }

    /// The four stages with their module names, in order: the one list the forward pass, the
    /// config and the dataflow read.
    fn named_stages(&self) -> [(&'static str, &[IBasicBlock<B>]); 4] {
        [
            ("layer1", &self.layer1),
            ("layer2", &self.layer2),
            ("layer3", &self.layer3),
            ("layer4", &self.layer4),
        ]
    }

    /// The configuration this module was built from, read back from its weights.
    pub fn config(&self) -> IResNetConfig {
        let stages = self.named_stages().map(|(_, stage)| stage);
        let widths = stages.map(|stage| stage[0].conv1.weight.dims()[0]);
        let layers = stages.map(<[IBasicBlock<B>]>::len);
        IResNetConfig::new(layers)
            .with_widths(widths)
            .with_embedding_dim(self.fc.weight.dims()[1])
            .with_dropout(self.dropout.prob)
            .with_bn_eps(self.bn1.epsilon)
            .with_in_channels(self.conv1.weight.dims()[1])
    }

    /// The inference dataflow: the stem, every block, then `bn2`, `fc` and `features`.
    pub fn dataflow(&self) -> Dataflow<'_, B> {
        let mut flow = Dataflow::default();
        let mut x = flow.conv(
            0,
            same(&self.conv1, "", "conv1"),
            same(&self.bn1, "", "bn1"),
            Some(same(&self.prelu, "", "prelu")),
        );
        for (name, stage) in self.named_stages() {
            for (i, block) in stage.iter().enumerate() {
                x = block.describe(&mut flow, x, &format!("{name}.{i}"));
            }
        }
        flow.push(Op::Embedding {
            input: x,
            pre: Some(same(&self.bn2, "", "bn2")),
            fc: same(&self.fc, "", "fc"),
            features: same(&self.features, "", "features"),
        });
        flow
    }
}
