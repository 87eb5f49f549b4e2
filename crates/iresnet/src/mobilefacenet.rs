//! MobileFaceNet as insightface's arcface_torch builds it (`backbones/mobilefacenet.py`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{BatchNorm, Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};
use cpu_conv::ConvBackend;

use crate::conv::ConvSpec;
use crate::dataflow::{Dataflow, Named, Op, Value};
use crate::layers::ConvBnAct;
use crate::norm::{apply_batch_norm, batch_norm};
use crate::plan::join;

/// Which embedding head follows `conv_sep`.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum MbfHead {
    /// Current arcface_torch: depthwise 7x7 (groups 512) + BN, flatten,
    /// `Linear(512 -> D, no bias)`, BatchNorm1d.
    Gdc,
    /// The head of insightface's released `w600k_mbf` (buffalo_s), read off its ONNX graph:
    /// 1x1 conv 512 -> 64 + BN + PReLU, flatten, `Linear(64*7*7 -> D)` with bias, BatchNorm1d.
    ConvFc,
}

/// Configuration of a [`MobileFaceNet`].
#[derive(Config, Debug, PartialEq)]
pub struct MobileFaceNetConfig {
    /// Depthwise blocks per stage: `mbf` (1,4,6,2), `mbf_large` (2,8,12,4).
    #[config(default = "[1, 4, 6, 2]")]
    pub blocks: [usize; 4],
    /// Channel multiplier: `mbf` 2, `mbf_large` 4.
    #[config(default = 2)]
    pub scale: usize,
    /// D, the embedding size.
    #[config(default = 512)]
    pub embedding_dim: usize,
    /// The embedding head.
    #[config(default = "MbfHead::Gdc")]
    pub head: MbfHead,
    /// Epsilon of every BatchNorm.
    #[config(default = 1e-5)]
    pub bn_eps: f64,
}

impl MobileFaceNetConfig {
    /// `mbf`: blocks (1, 4, 6, 2), scale 2.
    pub fn mbf() -> Self {
        Self::new()
    }
    /// `mbf_large`: blocks (2, 8, 12, 4), scale 4.
    pub fn mbf_large() -> Self {
        Self::new().with_blocks([2, 8, 12, 4]).with_scale(4)
    }

    /// Refuses settings out of range (before anything is allocated).
    pub fn validate(&self) -> Result<(), String> {
        if self.scale == 0 || self.embedding_dim == 0 {
            return Err("scale and embedding_dim must be positive".into());
        }
        if self.blocks[0] == 0 {
            return Err("the first stage needs at least one block".into());
        }
        if self.scale > 16 || self.blocks.iter().any(|&n| n > 256) {
            return Err(format!(
                "scale {} / blocks {:?} are out of range (at most 16 and 256)",
                self.scale, self.blocks
            ));
        }
        crate::iresnet::check_common(self.embedding_dim, self.bn_eps)
    }

    /// The module, initialized as the reference does.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MobileFaceNet<B> {
        let eps = self.bn_eps;
        let (c1, c2) = (64 * self.scale, 128 * self.scale);
        let block = |spec: ConvSpec, act: bool| ConvBnAct::new(spec, act, eps, device);
        let residual = |c: usize, n: usize, groups: usize| -> Vec<DepthWise<B>> {
            (0..n)
                .map(|_| DepthWise::new(c, c, 1, groups, true, eps, device))
                .collect()
        };
        let (stem_dw, block0) = if self.blocks[0] == 1 {
            let dw = ConvSpec::k3(c1, c1).groups(64);
            (Some(block(dw, true)), Vec::new())
        } else {
            (None, residual(c1, self.blocks[0], 128))
        };
        let (gdc, embed_conv, fc) = match self.head {
            MbfHead::Gdc => (
                Some(block(ConvSpec::new(512, 512, 7).groups(512), false)),
                None,
                LinearConfig::new(512, self.embedding_dim).with_bias(false),
            ),
            MbfHead::ConvFc => (
                None,
                Some(block(ConvSpec::new(512, 64, 1), true)),
                LinearConfig::new(64 * 49, self.embedding_dim),
            ),
        };
        // Kaiming normal, fan-out, ReLU gain, as the reference initialises its Linear.
        let fc_std = (2.0 / self.embedding_dim as f64).sqrt();
        let fc = fc
            .with_initializer(burn::module::Initializer::Normal {
                mean: 0.0,
                std: fc_std,
            })
            .init(device);
        let fc = Linear {
            bias: fc.bias.map(|b| b.map(|t| t.zeros_like())),
            ..fc
        };
        MobileFaceNet {
            stem: block(ConvSpec::k3(3, c1).stride(2), true),
            stem_dw,
            block0,
            down1: DepthWise::new(c1, c1, 2, 128, false, eps, device),
            block1: residual(c1, self.blocks[1], 128),
            down2: DepthWise::new(c1, c2, 2, 256, false, eps, device),
            block2: residual(c2, self.blocks[2], 256),
            down3: DepthWise::new(c2, c2, 2, 512, false, eps, device),
            block3: residual(c2, self.blocks[3], 256),
            conv_sep: block(ConvSpec::new(c2, 512, 1), true),
            gdc,
            embed_conv,
            fc,
            features: batch_norm(self.embedding_dim, eps, device),
        }
    }
}

/// 1x1 expand to `groups` channels, depthwise 3x3 (stride here), 1x1 linear projection;
/// with a residual sum when input and output match.
#[derive(Module, Debug)]
pub struct DepthWise<B: Backend> {
    /// 1x1 expansion.
    pub expand: ConvBnAct<B>,
    /// Depthwise 3x3.
    pub depthwise: ConvBnAct<B>,
    /// 1x1 linear projection.
    pub project: ConvBnAct<B>,
    /// Whether the input is added to the output.
    pub residual: bool,
}

impl<B: Backend> DepthWise<B> {
    fn new(
        in_c: usize,
        out_c: usize,
        stride: usize,
        groups: usize,
        residual: bool,
        eps: f64,
        device: &B::Device,
    ) -> Self {
        Self {
            expand: ConvBnAct::new(ConvSpec::new(in_c, groups, 1), true, eps, device),
            depthwise: ConvBnAct::new(
                ConvSpec::k3(groups, groups).stride(stride).groups(groups),
                true,
                eps,
                device,
            ),
            project: ConvBnAct::new(ConvSpec::new(groups, out_c, 1), false, eps, device),
            residual,
        }
    }

    /// Adds the three blocks (and the residual sum) to `flow`.
    fn describe<'a>(
        &'a self,
        flow: &mut Dataflow<'a, B>,
        input: Value,
        burn: &str,
        torch: &str,
    ) -> Value {
        let parts = [
            (&self.expand, "expand", "layers.0"),
            (&self.depthwise, "depthwise", "layers.1"),
            (&self.project, "project", "layers.2"),
        ];
        let y = parts.into_iter().fold(input, |x, (block, b, t)| {
            block.describe(flow, x, &join(burn, b), &join(torch, t))
        });
        if self.residual {
            flow.push(Op::Add { a: input, b: y })
        } else {
            y
        }
    }
}

impl<B: ConvBackend> DepthWise<B> {
    /// The block's output.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = self
            .project
            .forward(self.depthwise.forward(self.expand.forward(x.clone())));
        if self.residual {
            x + y
        } else {
            y
        }
    }
}

/// MobileFaceNet (`mbf`, `mbf_large`): a stride-2 stem, four depthwise stages, `conv_sep`
/// to 512 channels and an embedding head ([`MbfHead`]).
#[derive(Module, Debug)]
pub struct MobileFaceNet<B: Backend> {
    /// Stride-2 3x3 stem.
    pub stem: ConvBnAct<B>,
    /// Grouped 3x3 after the stem when the first stage has one block.
    pub stem_dw: Option<ConvBnAct<B>>,
    /// Residual depthwise blocks of the first stage when it has more than one.
    pub block0: Vec<DepthWise<B>>,
    /// Stride-2 block into the second stage.
    pub down1: DepthWise<B>,
    /// The second stage's residual blocks.
    pub block1: Vec<DepthWise<B>>,
    /// Stride-2 block into the third stage.
    pub down2: DepthWise<B>,
    /// The third stage's residual blocks.
    pub block2: Vec<DepthWise<B>>,
    /// Stride-2 block into the fourth stage.
    pub down3: DepthWise<B>,
    /// The fourth stage's residual blocks.
    pub block3: Vec<DepthWise<B>>,
    /// 1x1 to 512 channels.
    pub conv_sep: ConvBnAct<B>,
    /// GDC head: depthwise 7x7 over the whole map.
    pub gdc: Option<ConvBnAct<B>>,
    /// ConvFc head: 1x1 to 64 channels.
    pub embed_conv: Option<ConvBnAct<B>>,
    /// The embedding layer.
    pub fc: Linear<B>,
    /// BatchNorm1d on the embedding.
    pub features: BatchNorm<B>,
}

impl<B: ConvBackend> MobileFaceNet<B> {
    /// The feature map before the embedding's linear layer.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.stem.forward(x);
        if let Some(dw) = &self.stem_dw {
            x = dw.forward(x);
        }
        for block in self.body() {
            x = block.forward(x);
        }
        let x = self.conv_sep.forward(x);
        match (&self.gdc, &self.embed_conv) {
            (Some(gdc), _) => gdc.forward(x),
            (None, Some(conv)) => conv.forward(x),
            (None, None) => x,
        }
    }

    /// `[N, 3, 112, 112]` normalized RGB to `[N, D]` embeddings (not L2-normalized).
    pub fn embed(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self.forward(x).flatten::<2>(1, 3);
        apply_batch_norm(&self.features, self.fc.forward(x))
    }
}

impl<B: Backend> MobileFaceNet<B> {
    /// The depthwise blocks between the stem and `conv_sep`, in order.
    pub fn body(&self) -> impl Iterator<Item = &DepthWise<B>> {
        self.named_body()
            .into_iter()
            .flat_map(|(.., blocks, _)| blocks)
    }

    /// The body's parts in order, with their Burn and PyTorch paths and whether their blocks
    /// are numbered (a residual stage) or stand alone (a downsampling block): the one list the
    /// forward pass and the dataflow read.
    #[allow(clippy::type_complexity)]
    fn named_body(&self) -> [(&'static str, &'static str, &[DepthWise<B>], bool); 7] {
        use std::slice::from_ref;
        [
            ("block0", "layers.1", &self.block0, true),
            ("down1", "layers.2", from_ref(&self.down1), false),
            ("block1", "layers.3", &self.block1, true),
            ("down2", "layers.4", from_ref(&self.down2), false),
            ("block2", "layers.5", &self.block2, true),
            ("down3", "layers.6", from_ref(&self.down3), false),
            ("block3", "layers.7", &self.block3, true),
        ]
    }

    /// The configuration this module was built from, read back from its weights.
    pub fn config(&self) -> MobileFaceNetConfig {
        let scale = self.stem.conv.weight.dims()[0] / 64;
        let blocks = [
            self.block0.len().max(1),
            self.block1.len(),
            self.block2.len(),
            self.block3.len(),
        ];
        let head = if self.gdc.is_some() {
            MbfHead::Gdc
        } else {
            MbfHead::ConvFc
        };
        MobileFaceNetConfig::new()
            .with_blocks(blocks)
            .with_scale(scale)
            .with_embedding_dim(self.fc.weight.dims()[1])
            .with_head(head)
            .with_bn_eps(self.features.epsilon)
    }

    /// The inference dataflow, named as insightface's `backbones/mobilefacenet.py`.
    pub fn dataflow(&self) -> Dataflow<'_, B> {
        let mut flow = Dataflow::default();
        let mut x = self.stem.describe(&mut flow, 0, "stem", "layers.0");
        if let Some(dw) = &self.stem_dw {
            x = dw.describe(&mut flow, x, "stem_dw", "layers.1");
        }
        for (burn, torch, blocks, numbered) in self.named_body() {
            for (i, block) in blocks.iter().enumerate() {
                let (b, t) = if numbered {
                    (format!("{burn}.{i}"), format!("{torch}.layers.{i}"))
                } else {
                    (burn.to_string(), torch.to_string())
                };
                x = block.describe(&mut flow, x, &b, &t);
            }
        }
        x = self.conv_sep.describe(&mut flow, x, "conv_sep", "conv_sep");
        let (fc, features) = match (&self.gdc, &self.embed_conv) {
            (Some(gdc), _) => {
                x = gdc.describe(&mut flow, x, "gdc", "features.layers.0");
                ("features.layers.2", "features.layers.3")
            }
            (None, Some(conv)) => {
                // As tools/make_backbone_fixtures.py's ConvFcHead nests them under `features`,
                // like the GDC head (arcface_torch never released this head as a state dict).
                x = conv.describe(&mut flow, x, "embed_conv", "features.conv");
                ("features.fc", "features.features")
            }
            (None, None) => ("fc", "features"),
        };
        flow.push(Op::Embedding {
            input: x,
            pre: None,
            fc: Named::new(&self.fc, "fc", fc),
            features: Named::new(&self.features, "features", features),
        });
        flow
    }
}
