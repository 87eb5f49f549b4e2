//! The [`Backbone`] seam and the runtime-chosen [`AnyBackbone`].

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use cpu_conv::ConvBackend;
use serde::{Deserialize, Serialize};

use crate::dataflow::Dataflow;
use crate::error::{BackboneError, Result};
use crate::iresnet::{IResNet, IResNetConfig};
use crate::mobilefacenet::{MbfHead, MobileFaceNet, MobileFaceNetConfig};
use crate::plan::Plan;
use crate::preprocess::INPUT_SIZE;

/// A face-embedding network: aligned, normalized faces `[N, C, 112, 112]` in, embeddings
/// `[N, D]` out (not L2-normalized; callers normalize for cosine scores). This is all the
/// trainer, the evaluators and the embedders need, so a user's own network plugs in by
/// implementing these two methods.
pub trait Backbone<B: Backend> {
    /// `[N, C, 112, 112]` normalized faces to `[N, D]` embeddings.
    fn embed(&self, faces: Tensor<B, 4>) -> Tensor<B, 2>;
    /// D, the embedding size.
    fn embedding_dim(&self) -> usize;
    /// C, the input planes: 3 for RGB; more when several images of a face (RGB, infrared,
    /// depth) are stacked along the channel axis, as a multimodal dataset's batches are.
    fn input_channels(&self) -> usize {
        3
    }
}

/// A backbone that describes its inference [`Dataflow`] once; importers, FLOP counts and
/// `quantize`'s int8 graph all read it, so a user's own network that implements this is
/// quantized with no code in the tools that knows it.
pub trait Describe<B: Backend>: Backbone<B> {
    /// Every weighted module in forward order, with the values it reads.
    fn dataflow(&self) -> Dataflow<'_, B>;
    /// Weighted layers in forward order, derived from the dataflow.
    fn plan(&self) -> Plan {
        self.dataflow().plan()
    }
    /// A short human name for reports.
    fn name(&self) -> String {
        "custom backbone".into()
    }
}

/// A backbone of the architectures this crate knows: it can also say how to rebuild itself
/// (model files record this).
pub trait Architecture<B: Backend>: Describe<B> {
    /// The architecture, enough to rebuild the module.
    fn spec(&self) -> BackboneConfig;
}

impl<B: ConvBackend> Backbone<B> for IResNet<B> {
    fn embed(&self, faces: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(faces)
    }
    fn embedding_dim(&self) -> usize {
        self.fc.weight.dims()[1]
    }
    fn input_channels(&self) -> usize {
        self.conv1.weight.dims()[1]
    }
}

impl<B: ConvBackend> Describe<B> for IResNet<B> {
    fn dataflow(&self) -> Dataflow<'_, B> {
        IResNet::dataflow(self)
    }
    fn name(&self) -> String {
        self.spec().describe()
    }
}

impl<B: ConvBackend> Architecture<B> for IResNet<B> {
    fn spec(&self) -> BackboneConfig {
        BackboneConfig::IResNet(self.config())
    }
}

impl<B: ConvBackend> Backbone<B> for MobileFaceNet<B> {
    fn embed(&self, faces: Tensor<B, 4>) -> Tensor<B, 2> {
        MobileFaceNet::embed(self, faces)
    }
    fn embedding_dim(&self) -> usize {
        self.fc.weight.dims()[1]
    }
}

impl<B: ConvBackend> Describe<B> for MobileFaceNet<B> {
    fn dataflow(&self) -> Dataflow<'_, B> {
        MobileFaceNet::dataflow(self)
    }
    fn name(&self) -> String {
        self.spec().describe()
    }
}

impl<B: ConvBackend> Architecture<B> for MobileFaceNet<B> {
    fn spec(&self) -> BackboneConfig {
        BackboneConfig::MobileFaceNet(self.config())
    }
}

/// Which backbone to build: what model files record in their header and what
/// `--arch` names select.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum BackboneConfig {
    /// An IResNet.
    IResNet(IResNetConfig),
    /// A MobileFaceNet.
    MobileFaceNet(MobileFaceNetConfig),
}

/// The architecture names users type, with a one-line description for `--help` and `info`.
pub const ARCH_NAMES: &[(&str, &str)] = &[
    ("r18", "IResNet-18, blocks [2,2,2,2]"),
    ("r34", "IResNet-34, blocks [3,4,6,3]"),
    ("r50", "IResNet-50, blocks [3,4,14,3]"),
    ("r100", "IResNet-100, blocks [3,13,30,3]"),
    ("r200", "IResNet-200, blocks [6,26,60,6]"),
    ("mbf", "MobileFaceNet, blocks (1,4,6,2), scale 2, GDC head"),
    (
        "mbf_large",
        "MobileFaceNet, blocks (2,8,12,4), scale 4, GDC head",
    ),
];

impl BackboneConfig {
    /// A name from [`ARCH_NAMES`] (with the default 512-d embedding).
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "r18" | "iresnet18" => Self::IResNet(IResNetConfig::r18()),
            "r34" | "iresnet34" => Self::IResNet(IResNetConfig::r34()),
            "r50" | "iresnet50" => Self::IResNet(IResNetConfig::r50()),
            "r100" | "iresnet100" => Self::IResNet(IResNetConfig::r100()),
            "r200" | "iresnet200" => Self::IResNet(IResNetConfig::r200()),
            "mbf" | "mobilefacenet" => Self::MobileFaceNet(MobileFaceNetConfig::mbf()),
            "mbf_large" => Self::MobileFaceNet(MobileFaceNetConfig::mbf_large()),
            "mbf_w600k" => {
                Self::MobileFaceNet(MobileFaceNetConfig::mbf().with_head(MbfHead::ConvFc))
            }
            _ => return Err(BackboneError::UnknownArch(name.to_string())),
        })
    }

    /// A short human name, e.g. `IResNet [3,4,14,3] widths [64,128,256,512] D=512`.
    pub fn describe(&self) -> String {
        match self {
            Self::IResNet(c) => format!(
                "IResNet blocks {:?} widths {:?} D={}",
                c.layers, c.widths, c.embedding_dim
            ),
            Self::MobileFaceNet(c) => format!(
                "MobileFaceNet blocks {:?} scale {} head {:?} D={}",
                c.blocks, c.scale, c.head, c.embedding_dim
            ),
        }
    }

    /// D, the embedding size.
    pub fn embedding_dim(&self) -> usize {
        match self {
            Self::IResNet(c) => c.embedding_dim,
            Self::MobileFaceNet(c) => c.embedding_dim,
        }
    }

    /// Input planes the stem takes (3 for RGB; MobileFaceNet always takes RGB).
    pub fn in_channels(&self) -> usize {
        match self {
            Self::IResNet(c) => c.in_channels,
            Self::MobileFaceNet(_) => 3,
        }
    }

    /// The same architecture with another embedding size.
    pub fn with_embedding_dim(self, embedding_dim: usize) -> Self {
        match self {
            Self::IResNet(c) => Self::IResNet(c.with_embedding_dim(embedding_dim)),
            Self::MobileFaceNet(c) => Self::MobileFaceNet(c.with_embedding_dim(embedding_dim)),
        }
    }

    /// The field names of the last `stages` stages (at least one, at most all four) and the
    /// embedding layers after them: what continual learning's `train = "last_stage"` trains.
    pub fn last_stages(&self, stages: usize) -> Vec<&'static str> {
        let (embedding, by_stage): (&[&str], [&[&str]; 4]) = match self {
            Self::IResNet(_) => (
                &["bn2", "fc", "features"],
                [&["layer1"], &["layer2"], &["layer3"], &["layer4"]],
            ),
            Self::MobileFaceNet(_) => (
                &["conv_sep", "gdc", "embed_conv", "fc", "features"],
                [
                    &["block0"],
                    &["down1", "block1"],
                    &["down2", "block2"],
                    &["down3", "block3"],
                ],
            ),
        };
        let first = 4 - stages.clamp(1, 4);
        (by_stage[first..].iter().flat_map(|s| s.iter()))
            .chain(embedding)
            .copied()
            .collect()
    }

    /// Epsilon of every BatchNorm in the network.
    pub fn bn_eps(&self) -> f64 {
        match self {
            Self::IResNet(c) => c.bn_eps,
            Self::MobileFaceNet(c) => c.bn_eps,
        }
    }

    /// Refuses settings out of range (before anything is allocated).
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::IResNet(c) => c.validate(),
            Self::MobileFaceNet(c) => c.validate(),
        }
        .map_err(BackboneError::InvalidConfig)
    }

    /// The module, randomly initialized as insightface's reference does.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<AnyBackbone<B>> {
        self.validate()?;
        Ok(match self {
            Self::IResNet(c) => AnyBackbone::IResNet(c.init(device)),
            Self::MobileFaceNet(c) => AnyBackbone::MobileFaceNet(c.init(device)),
        })
    }
}

/// Any backbone, chosen at run time (from a name, a config or a model file's header).
// Built once and moved rarely; boxing would only add an indirection to every forward call.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum AnyBackbone<B: Backend> {
    /// An IResNet.
    IResNet(IResNet<B>),
    /// A MobileFaceNet.
    MobileFaceNet(MobileFaceNet<B>),
}

impl<B: ConvBackend> Backbone<B> for AnyBackbone<B> {
    fn embed(&self, faces: Tensor<B, 4>) -> Tensor<B, 2> {
        match self {
            Self::IResNet(m) => m.forward(faces),
            Self::MobileFaceNet(m) => m.embed(faces),
        }
    }
    fn embedding_dim(&self) -> usize {
        match self {
            Self::IResNet(m) => Backbone::embedding_dim(m),
            Self::MobileFaceNet(m) => Backbone::embedding_dim(m),
        }
    }
    fn input_channels(&self) -> usize {
        match self {
            Self::IResNet(m) => Backbone::input_channels(m),
            Self::MobileFaceNet(m) => Backbone::input_channels(m),
        }
    }
}

impl<B: ConvBackend> Describe<B> for AnyBackbone<B> {
    fn dataflow(&self) -> Dataflow<'_, B> {
        match self {
            Self::IResNet(m) => m.dataflow(),
            Self::MobileFaceNet(m) => m.dataflow(),
        }
    }
    fn name(&self) -> String {
        self.spec().describe()
    }
}

impl<B: ConvBackend> Architecture<B> for AnyBackbone<B> {
    fn spec(&self) -> BackboneConfig {
        match self {
            Self::IResNet(m) => Architecture::spec(m),
            Self::MobileFaceNet(m) => Architecture::spec(m),
        }
    }
}

impl<B: ConvBackend> AnyBackbone<B> {
    /// Embeds with a shape check first, for inputs that come from users.
    pub fn try_embed(&self, faces: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let dims = faces.dims();
        if dims[1] != self.input_channels() || dims[2] != INPUT_SIZE || dims[3] != INPUT_SIZE {
            return Err(BackboneError::BadInput(dims.to_vec()));
        }
        Ok(self.embed(faces))
    }
}

/// Size and cost figures of a backbone, as `arcface info` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct BackboneStats {
    /// The architecture, in words.
    pub arch: String,
    /// Trainable and frozen parameters, counted as PyTorch's `sum(p.numel())` does.
    pub params: usize,
    /// BatchNorm running statistics (stored, not parameters).
    pub buffers: usize,
    /// Multiply-accumulates at 112x112 (convolutions and linear layers).
    pub macs: u64,
    /// `2 * macs`.
    pub flops: u64,
    /// Tensor bytes of an f32 model file (the header adds a few hundred bytes).
    pub record_bytes_f32: usize,
    /// Tensor bytes of an f16 model file.
    pub record_bytes_f16: usize,
}

impl BackboneStats {
    /// The figures of `model`.
    pub fn of<B: Backend, M: Architecture<B> + Module<B>>(model: &M) -> Self {
        let plan = model.plan();
        // Burn's `num_params` also visits BatchNorm running statistics; PyTorch does not count them.
        let buffers: usize = plan
            .layers
            .iter()
            .map(|l| match l.kind {
                crate::plan::LayerKind::BatchNorm { channels } => 2 * channels,
                _ => 0,
            })
            .sum();
        let tensors = model.num_params();
        let params = tensors - buffers;
        let macs = plan.macs();
        Self {
            arch: model.spec().describe(),
            params,
            buffers,
            macs,
            flops: 2 * macs,
            record_bytes_f32: tensors * 4,
            record_bytes_f16: tensors * 2,
        }
    }
}
