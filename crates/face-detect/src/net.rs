//! RetinaFace with a MobileNet-0.25 body (Deng et al. 2020; biubug6/Pytorch_Retinaface's
//! `mobilenet0.25` configuration), BatchNorm folded into the convolutions for inference.

use std::path::Path;

use burn::{
    module::Module,
    nn::conv::Conv2d,
    tensor::{
        activation::{leaky_relu, relu, softmax},
        backend::Backend,
        Int, Tensor, TensorData,
    },
};

use cpu_conv::{conv2d, ConvBackend};

use crate::{
    error::DetectError,
    weights::{ConvShape, StateDict},
};

/// Anchors per feature-map cell (two box sizes per level).
pub const ANCHORS: usize = 2;
/// Feature channels of the FPN and SSH modules.
const WIDTH: usize = 64;
/// LeakyReLU slope of the MobileNet body, FPN and SSH (`leaky = 0.1` where channels <= 64).
const LEAKY: f64 = 0.1;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Act {
    Linear,
    Leaky,
}

/// A (BN-folded) convolution and its activation.
#[derive(Module, Debug)]
pub struct ConvAct<B: Backend> {
    conv: Conv2d<B>,
    #[module(skip)]
    act: Act,
}

impl<B: ConvBackend> ConvAct<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = conv2d(&self.conv, x);
        match self.act {
            Act::Linear => y,
            Act::Leaky => leaky_relu(y, LEAKY),
        }
    }
}

/// SSH context module: a 3x3 branch (half the channels) and 5x5 / 7x7 branches built from
/// stacked 3x3s (a quarter each), concatenated, then ReLU.
#[derive(Module, Debug)]
pub struct Ssh<B: Backend> {
    conv3: ConvAct<B>,
    conv5_1: ConvAct<B>,
    conv5_2: ConvAct<B>,
    conv7_2: ConvAct<B>,
    conv7_3: ConvAct<B>,
}

impl<B: ConvBackend> Ssh<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let a = self.conv3.forward(x.clone());
        let b1 = self.conv5_1.forward(x);
        let b = self.conv5_2.forward(b1.clone());
        let c = self.conv7_3.forward(self.conv7_2.forward(b1));
        relu(Tensor::cat(vec![a, b, c], 1))
    }
}

/// The whole network: MobileNet-0.25 body (3 stages), FPN, 3 SSH modules, 3 x 3 heads.
#[derive(Module, Debug)]
pub struct RetinaFaceNet<B: Backend> {
    stages: Vec<Vec<ConvAct<B>>>,
    fpn_lateral: Vec<ConvAct<B>>,
    fpn_merge: Vec<ConvAct<B>>,
    ssh: Vec<Ssh<B>>,
    class_heads: Vec<Conv2d<B>>,
    box_heads: Vec<Conv2d<B>>,
    landmark_heads: Vec<Conv2d<B>>,
}

/// Raw outputs over all priors: box offsets `[P, 4]`, face probability `[P]`, landmark offsets
/// `[P, 10]`, in prior order.
pub struct RawOutput {
    pub loc: Vec<f32>,
    pub scores: Vec<f32>,
    pub landmarks: Vec<f32>,
}

/// `(cin, cout, stride)` of the depthwise-separable blocks of each stage; stage 1 starts with a
/// full 3x3 convolution 3 -> 8, stride 2.
const STAGES: [&[(usize, usize, usize)]; 3] = [
    &[
        (8, 16, 1),
        (16, 32, 2),
        (32, 32, 1),
        (32, 64, 2),
        (64, 64, 1),
    ],
    &[
        (64, 128, 2),
        (128, 128, 1),
        (128, 128, 1),
        (128, 128, 1),
        (128, 128, 1),
        (128, 128, 1),
    ],
    &[(128, 256, 2), (256, 256, 1)],
];

impl<B: Backend> RetinaFaceNet<B> {
    /// Builds the network from `mobilenet0.25_Final.pth` (names as in Pytorch_Retinaface; a
    /// DataParallel `module.` prefix is accepted). Every tensor must be present with its shape
    /// and every tensor in the file must be used.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self, DetectError> {
        let mut sd = StateDict::open(path)?;
        let leaky = |conv| ConvAct {
            conv,
            act: Act::Leaky,
        };
        let linear = |conv| ConvAct {
            conv,
            act: Act::Linear,
        };
        let mut stages = Vec::new();
        for (s, blocks) in STAGES.iter().enumerate() {
            let p = format!("body.stage{}", s + 1);
            let mut layers = Vec::new();
            let offset = if s == 0 {
                let shape = ConvShape::new(3, 8, 3).stride(2);
                layers.push(leaky(sd.conv_bn(
                    &format!("{p}.0.0"),
                    &format!("{p}.0.1"),
                    shape,
                    device,
                )?));
                1
            } else {
                0
            };
            for (i, &(cin, cout, stride)) in blocks.iter().enumerate() {
                let q = format!("{p}.{}", i + offset);
                let dw = ConvShape::new(cin, cin, 3).stride(stride).depthwise();
                layers.push(leaky(sd.conv_bn(
                    &format!("{q}.0"),
                    &format!("{q}.1"),
                    dw,
                    device,
                )?));
                let pw = ConvShape::new(cin, cout, 1);
                layers.push(leaky(sd.conv_bn(
                    &format!("{q}.3"),
                    &format!("{q}.4"),
                    pw,
                    device,
                )?));
            }
            stages.push(layers);
        }
        let mut fpn_lateral = Vec::new();
        for (i, cin) in [64, 128, 256].into_iter().enumerate() {
            let p = format!("fpn.output{}", i + 1);
            let shape = ConvShape::new(cin, WIDTH, 1);
            fpn_lateral.push(leaky(sd.conv_bn(
                &format!("{p}.0"),
                &format!("{p}.1"),
                shape,
                device,
            )?));
        }
        let mut fpn_merge = Vec::new();
        for i in 1..=2 {
            let p = format!("fpn.merge{i}");
            let shape = ConvShape::new(WIDTH, WIDTH, 3);
            fpn_merge.push(leaky(sd.conv_bn(
                &format!("{p}.0"),
                &format!("{p}.1"),
                shape,
                device,
            )?));
        }
        let mut ssh = Vec::new();
        for i in 1..=3 {
            let mut branch = |name: &str, cin: usize, cout: usize| {
                let p = format!("ssh{i}.{name}");
                sd.conv_bn::<B>(
                    &format!("{p}.0"),
                    &format!("{p}.1"),
                    ConvShape::new(cin, cout, 3),
                    device,
                )
            };
            let (half, quarter) = (WIDTH / 2, WIDTH / 4);
            ssh.push(Ssh {
                conv3: linear(branch("conv3X3", WIDTH, half)?),
                conv5_1: leaky(branch("conv5X5_1", WIDTH, quarter)?),
                conv5_2: linear(branch("conv5X5_2", quarter, quarter)?),
                conv7_2: leaky(branch("conv7X7_2", quarter, quarter)?),
                conv7_3: linear(branch("conv7x7_3", quarter, quarter)?),
            });
        }
        let mut heads = |name: &str, per_anchor: usize| {
            (0..3)
                .map(|i| {
                    let shape = ConvShape::new(WIDTH, ANCHORS * per_anchor, 1);
                    sd.conv::<B>(&format!("{name}.{i}.conv1x1"), shape, device)
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let class_heads = heads("ClassHead", 2)?;
        let box_heads = heads("BboxHead", 4)?;
        let landmark_heads = heads("LandmarkHead", 10)?;
        sd.finish()?;
        Ok(Self {
            stages,
            fpn_lateral,
            fpn_merge,
            ssh,
            class_heads,
            box_heads,
            landmark_heads,
        })
    }
}

impl<B: ConvBackend> RetinaFaceNet<B> {
    /// Runs one image (`[1, 3, H, W]`, BGR minus the means) and returns the outputs over all
    /// priors, read back to the host.
    pub fn forward(&self, x: Tensor<B, 4>) -> RawOutput {
        let mut features = Vec::with_capacity(3);
        let mut x = x;
        for stage in &self.stages {
            for layer in stage {
                x = layer.forward(x);
            }
            features.push(x.clone());
        }
        let lateral: Vec<_> = features
            .into_iter()
            .zip(&self.fpn_lateral)
            .map(|(f, conv)| conv.forward(f))
            .collect();
        let [o1, o2, o3]: [Tensor<B, 4>; 3] = lateral.try_into().expect("three levels");
        let [_, _, h2, w2] = o2.dims();
        let o2 = self.fpn_merge[1].forward(o2 + upsample_nearest(o3.clone(), h2, w2));
        let [_, _, h1, w1] = o1.dims();
        let o1 = self.fpn_merge[0].forward(o1 + upsample_nearest(o2.clone(), h1, w1));
        let levels: Vec<Tensor<B, 4>> = [o1, o2, o3]
            .into_iter()
            .zip(&self.ssh)
            .map(|(f, ssh)| ssh.forward(f))
            .collect();
        let head = |convs: &[Conv2d<B>], k: usize| {
            let parts = levels
                .iter()
                .zip(convs)
                .map(|(f, conv)| {
                    let y = conv2d(conv, f.clone());
                    let [n, _, h, w] = y.dims();
                    y.permute([0, 2, 3, 1]).reshape([n, h * w * ANCHORS, k])
                })
                .collect();
            Tensor::cat(parts, 1)
        };
        let host = |t: Tensor<B, 3>| {
            t.into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("f32 data")
        };
        let conf = softmax(head(&self.class_heads, 2), 2);
        let [_, p, _] = conf.dims();
        let scores = conf.slice([0..1, 0..p, 1..2]);
        RawOutput {
            loc: host(head(&self.box_heads, 4)),
            scores: host(scores),
            landmarks: host(head(&self.landmark_heads, 10)),
        }
    }
}

/// PyTorch's `F.interpolate(x, size=(h, w), mode="nearest")`: source index
/// `min(floor(i * in / out), in - 1)` with the ratio in f32.
fn upsample_nearest<B: Backend>(x: Tensor<B, 4>, h: usize, w: usize) -> Tensor<B, 4> {
    let [_, _, ih, iw] = x.dims();
    let device = x.device();
    let index = |out: usize, inp: usize| {
        let scale = inp as f32 / out as f32;
        let idx: Vec<i64> = (0..out)
            .map(|i| ((i as f32 * scale).floor() as i64).min(inp as i64 - 1))
            .collect();
        Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [out]), &device)
    };
    x.select(2, index(h, ih)).select(3, index(w, iw))
}
