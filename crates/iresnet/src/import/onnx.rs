//! insightface's ONNX model packs (`w600k_mbf.onnx`, `w600k_r50.onnx`, `glintr100.onnx`, ...).
//!
//! The initializers of these graphs carry numeric names and the exporter folded most
//! BatchNorms into the preceding convolutions (which then have a bias), while the BatchNorms
//! that precede a convolution (IResNet's `bn1`) or follow the embedding layer stay as nodes.
//! So the importer walks the weighted nodes in graph order against the backbone's plan and
//! follows the data flow to tell a folded BatchNorm from the next layer's own.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn_store::ModuleSnapshot;
use onnx_io::proto;

use super::load::{load_layers, Array, LayerWeights, SourcedWeights};
use crate::backbone::{Architecture, BackboneConfig};
use crate::error::{BackboneError, Result};
use crate::iresnet::IResNetConfig;
use crate::mobilefacenet::MbfHead;
use crate::mobilefacenet::MobileFaceNetConfig;
use crate::plan::LayerKind;

/// A parsed ONNX model: its nodes in graph order and its constant tensors.
pub struct OnnxModel {
    path: PathBuf,
    nodes: Vec<proto::NodeProto>,
    constants: HashMap<String, proto::TensorProto>,
    /// The tool that wrote the file.
    pub producer: String,
    /// The ONNX opset.
    pub opset: i64,
}

impl OnnxModel {
    /// Reads and parses an ONNX file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = onnx_io::OnnxFile::open(path).map_err(|e| BackboneError::Onnx {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            nodes: file.nodes,
            constants: file.constants,
            producer: file.producer,
            opset: file.opset,
        })
    }

    fn err(&self, message: impl Into<String>) -> BackboneError {
        BackboneError::Onnx {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    /// The MobileFaceNet head this graph was exported with: a linear layer over `64*7*7`
    /// features is the `w600k_mbf` conv-fc head, over 512 the GDC head.
    pub fn mbf_head(&self) -> Result<MbfHead> {
        for node in &self.nodes {
            if matches!(node.op_type.as_str(), "Gemm" | "MatMul") {
                let w = self.tensor(node.input.get(1).map(String::as_str).unwrap_or(""))?;
                let trans_b =
                    node.op_type == "Gemm" && Self::attr(node, "transB").is_some_and(|a| a.i != 0);
                let d_input = if trans_b {
                    w.shape.get(1)
                } else {
                    w.shape.first()
                };
                return Ok(if d_input == Some(&(64 * 49)) {
                    MbfHead::ConvFc
                } else {
                    MbfHead::Gdc
                });
            }
        }
        Err(self.err("the graph has no Gemm/MatMul embedding layer"))
    }

    /// Reads the architecture off the graph: the family, IResNet stage widths and blocks, or
    /// MobileFaceNet's scale, blocks and head, and the embedding size. The import that follows
    /// checks every layer, so a wrong guess cannot load silently.
    pub fn infer_arch(&self) -> Result<BackboneConfig> {
        let layers = self.weighted_layers()?;
        let mut convs = Vec::new();
        let mut embedding_dim = None;
        for l in &layers {
            match (&l.weights.weights, l.conv) {
                (LayerWeights::Conv { weight, .. }, Some(g)) if weight.shape.len() == 4 => convs
                    .push(ConvShape {
                        out: weight.shape[0],
                        kernel: weight.shape[2],
                        stride: g.stride,
                        groups: g.groups,
                    }),
                (LayerWeights::Linear { weight, .. }, _) => {
                    embedding_dim = weight.shape.first().copied()
                }
                _ => {}
            }
        }
        let embedding_dim = embedding_dim
            .ok_or_else(|| self.err("no embedding layer (Gemm/MatMul) in the graph"))?;
        let unknown =
            |why: &str| self.err(format!("cannot tell the architecture: {why}; pass --arch"));
        if convs.iter().any(|c| c.groups > 1) {
            let stem = convs.first().ok_or_else(|| unknown("no convolutions"))?;
            let scale = stem.out / 64;
            let depthwise = |c: &&ConvShape| c.groups > 1 && c.groups == c.out && c.kernel == 3;
            // After the stem: either the grouped 3x3 (`blocks[0] == 1`) or residual units.
            let body = if convs.get(1).is_some_and(|c| c.groups > 1) {
                &convs[2..]
            } else {
                &convs[1..]
            };
            let mut blocks = [0usize; 4];
            let mut stage = 0;
            for c in body.iter().filter(depthwise) {
                if c.stride == 2 {
                    stage += 1;
                    if stage > 3 {
                        return Err(unknown("more than three downsampling stages"));
                    }
                } else {
                    blocks[stage] += 1;
                }
            }
            if stage != 3 {
                return Err(unknown("not three downsampling stages"));
            }
            blocks[0] = blocks[0].max(1);
            return Ok(BackboneConfig::MobileFaceNet(
                MobileFaceNetConfig::new()
                    .with_blocks(blocks)
                    .with_scale(scale.max(1))
                    .with_head(self.mbf_head()?)
                    .with_embedding_dim(embedding_dim),
            ));
        }
        // IResNet: every stage opens with a block whose strided 1x1 downsample follows its two
        // 3x3 convolutions; the number of 3x3 convolutions between them gives the blocks.
        let mut k3_seen = 0usize;
        let mut opens = Vec::new();
        let mut widths = Vec::new();
        for c in convs.iter().skip(1) {
            match c.kernel {
                3 => k3_seen += 1,
                1 => {
                    opens.push(
                        k3_seen
                            .checked_sub(2)
                            .ok_or_else(|| unknown("a downsample before any block"))?,
                    );
                    widths.push(c.out);
                }
                _ => return Err(unknown("a convolution that is neither 3x3 nor 1x1")),
            }
        }
        if opens.len() != 4 {
            return Err(unknown("not four stages"));
        }
        opens.push(k3_seen);
        let mut layers = [0usize; 4];
        for i in 0..4 {
            let convs_in_stage = opens[i + 1] - opens[i];
            if convs_in_stage % 2 != 0 || convs_in_stage == 0 {
                return Err(unknown("a stage with an odd number of 3x3 convolutions"));
            }
            layers[i] = convs_in_stage / 2;
        }
        Ok(BackboneConfig::IResNet(
            IResNetConfig::new(layers)
                .with_widths([widths[0], widths[1], widths[2], widths[3]])
                .with_embedding_dim(embedding_dim),
        ))
    }

    /// The value `name` is a reshaped view of: follows Flatten, Reshape, (Un)Squeeze, Identity
    /// and Dropout back to the value they were applied to.
    fn origin<'a>(&'a self, mut name: &'a str) -> &'a str {
        for _ in 0..self.nodes.len() {
            let producer = self.nodes.iter().find(|n| {
                n.output.first().is_some_and(|o| o == name)
                    && matches!(
                        n.op_type.as_str(),
                        "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" | "Identity" | "Dropout"
                    )
            });
            match producer.and_then(|n| n.input.first()) {
                Some(input) => name = input,
                None => break,
            }
        }
        name
    }

    /// Number of weighted layers per kind, for `arcface import` to report.
    pub fn summary(&self) -> String {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for node in &self.nodes {
            match counts.iter_mut().find(|(op, _)| *op == node.op_type) {
                Some((_, n)) => *n += 1,
                None => counts.push((node.op_type.clone(), 1)),
            }
        }
        let ops: Vec<String> = counts.iter().map(|(op, n)| format!("{op} x{n}")).collect();
        format!(
            "producer `{}`, opset {}, {}",
            self.producer,
            self.opset,
            ops.join(", ")
        )
    }

    fn tensor(&self, name: &str) -> Result<Array> {
        let t = self.constants.get(name).ok_or_else(|| {
            self.err(format!(
                "`{name}` is computed in the graph, not a stored weight"
            ))
        })?;
        t.to_array()
            .map_err(|m| self.err(format!("tensor `{name}`: {m}")))
    }

    fn attr<'a>(node: &'a proto::NodeProto, name: &str) -> Option<&'a proto::AttributeProto> {
        node.attribute.iter().find(|a| a.name == name)
    }

    /// The weighted layers in graph order, each with the value it reads and the one it writes.
    fn weighted_layers(&self) -> Result<Vec<OnnxLayer>> {
        let mut layers = Vec::new();
        let mut bias_adds: HashSet<usize> = HashSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let name = if node.name.is_empty() {
                format!("{} node #{i}", node.op_type)
            } else {
                node.name.clone()
            };
            let input = |k: usize| node.input.get(k).filter(|s| !s.is_empty());
            let output = node.output.first().cloned().unwrap_or_default();
            let reads = input(0).cloned().unwrap_or_default();
            let source = |k: usize| format!("{name} ({})", input(k).map_or("", |s| s.as_str()));
            let weights = match node.op_type.as_str() {
                "Conv" => {
                    let ints = |a: &str| {
                        Self::attr(node, a)
                            .map(|a| a.ints.clone())
                            .unwrap_or_default()
                    };
                    let weight = self.tensor(
                        input(1).ok_or_else(|| self.err(format!("{name} has no weight")))?,
                    )?;
                    let bias = input(2).map(|b| self.tensor(b)).transpose()?;
                    let geometry = ConvGeometry {
                        stride: ints("strides").first().copied().unwrap_or(1) as usize,
                        padding: ints("pads").first().copied().unwrap_or(0) as usize,
                        groups: Self::attr(node, "group").map_or(1, |a| a.i) as usize,
                        symmetric: ints("pads").windows(2).all(|w| w[0] == w[1])
                            && ints("strides").windows(2).all(|w| w[0] == w[1]),
                    };
                    layers.push(OnnxLayer {
                        weights: SourcedWeights {
                            source: source(1),
                            weights: LayerWeights::Conv { weight, bias },
                        },
                        reads,
                        writes: output,
                        conv: Some(geometry),
                    });
                    continue;
                }
                "BatchNormalization" => {
                    let t = |k: usize| {
                        self.tensor(
                            input(k).ok_or_else(|| self.err(format!("{name} lacks input {k}")))?,
                        )
                    };
                    LayerWeights::BatchNorm {
                        gamma: t(1)?,
                        beta: t(2)?,
                        mean: t(3)?,
                        var: t(4)?,
                        eps: Self::attr(node, "epsilon").map_or(1e-5, |a| a.f as f64),
                    }
                }
                "PRelu" => LayerWeights::PRelu {
                    slope: self.tensor(
                        input(1).ok_or_else(|| self.err(format!("{name} has no slope")))?,
                    )?,
                },
                "Gemm" => {
                    for (attr, want) in [("alpha", 1.0), ("beta", 1.0)] {
                        if let Some(a) = Self::attr(node, attr) {
                            if a.f != want {
                                return Err(self
                                    .err(format!("{name}: Gemm {attr}={} is not supported", a.f)));
                            }
                        }
                    }
                    if Self::attr(node, "transA").is_some_and(|a| a.i != 0) {
                        return Err(self.err(format!("{name}: Gemm transA=1 is not supported")));
                    }
                    let w = self.tensor(
                        input(1).ok_or_else(|| self.err(format!("{name} has no weight")))?,
                    )?;
                    let trans_b = Self::attr(node, "transB").is_some_and(|a| a.i != 0);
                    LayerWeights::Linear {
                        weight: if trans_b { w } else { w.transposed() },
                        bias: input(2).map(|b| self.tensor(b)).transpose()?,
                    }
                }
                "MatMul" => {
                    let w = self.tensor(
                        input(1).ok_or_else(|| self.err(format!("{name} has no weight")))?,
                    )?;
                    // A following `Add` of a stored vector is this layer's bias.
                    let add = self.nodes.iter().enumerate().find(|(_, n)| {
                        n.op_type == "Add"
                            && n.input.contains(&output)
                            && n.input.iter().any(|i| self.constants.contains_key(i))
                    });
                    let (bias, writes) = match add {
                        Some((k, n)) => {
                            bias_adds.insert(k);
                            let b = n
                                .input
                                .iter()
                                .find(|i| self.constants.contains_key(*i))
                                .unwrap();
                            (
                                Some(self.tensor(b)?),
                                n.output.first().cloned().unwrap_or_default(),
                            )
                        }
                        None => (None, output),
                    };
                    layers.push(OnnxLayer {
                        weights: SourcedWeights {
                            source: source(1),
                            weights: LayerWeights::Linear {
                                weight: w.transposed(),
                                bias,
                            },
                        },
                        reads,
                        writes,
                        conv: None,
                    });
                    continue;
                }
                "Add" if bias_adds.contains(&i) => continue,
                "Add" | "Sub" | "Mul" | "Div"
                    if node.input.iter().any(|i| self.constants.contains_key(i)) =>
                {
                    return Err(self.err(format!(
                        "{name}: an {} with a stored operand is not part of these backbones (input \
                         normalisation inside the graph is not supported; feed (x-127.5)/127.5)",
                        node.op_type
                    )));
                }
                "Add" | "Flatten" | "Reshape" | "Dropout" | "Identity" | "Constant" | "Shape"
                | "Gather" | "Unsqueeze" | "Squeeze" | "Concat" | "Cast" => continue,
                other => {
                    return Err(self.err(format!(
                        "{name}: operator `{other}` does not occur in IResNet or MobileFaceNet"
                    )))
                }
            };
            layers.push(OnnxLayer {
                weights: SourcedWeights {
                    source: source(1),
                    weights,
                },
                reads,
                writes: output,
                conv: None,
            });
        }
        Ok(layers)
    }
}

struct ConvShape {
    out: usize,
    kernel: usize,
    stride: usize,
    groups: usize,
}

#[derive(Debug, Clone, Copy)]
struct ConvGeometry {
    stride: usize,
    padding: usize,
    groups: usize,
    symmetric: bool,
}

struct OnnxLayer {
    weights: SourcedWeights,
    reads: String,
    writes: String,
    conv: Option<ConvGeometry>,
}

/// Loads the graph's weights into `model`, matching weighted nodes to the plan in order.
pub fn load_onnx<B, M>(model: &mut M, onnx: &OnnxModel) -> Result<()>
where
    B: Backend,
    M: Architecture<B> + Module<B> + ModuleSnapshot<B>,
{
    let plan = model.plan();
    let found = onnx.weighted_layers()?;
    let mut next = found.into_iter().peekable();
    let mut previous_output: Option<String> = None;
    let mut layers = Vec::with_capacity(plan.layers.len());
    for layer in &plan.layers {
        let is_bn = |l: &OnnxLayer| matches!(l.weights.weights, LayerWeights::BatchNorm { .. });
        let item = match layer.kind {
            // A BatchNorm right after a conv/linear is the graph's own only if it reads that
            // layer's output (possibly reshaped); otherwise the exporter folded it.
            LayerKind::BatchNorm { .. } => match (&previous_output, next.peek()) {
                (Some(prev), Some(l)) if is_bn(l) && onnx.origin(&l.reads) != onnx.origin(prev) => {
                    None
                }
                (Some(_), Some(l)) if !is_bn(l) => None,
                (Some(_), None) => None,
                _ => next.next(),
            },
            _ => Some(next.next().ok_or_else(|| {
                BackboneError::GraphMismatch(format!(
                    "the graph ends before `{}`: is this the right architecture?",
                    layer.burn
                ))
            })?),
        };
        if let (
            LayerKind::Conv {
                stride,
                padding,
                groups,
                ..
            },
            Some(OnnxLayer {
                conv: Some(g),
                weights,
                ..
            }),
        ) = (&layer.kind, &item)
        {
            if !g.symmetric || (g.stride, g.padding, g.groups) != (*stride, *padding, *groups) {
                return Err(BackboneError::GraphMismatch(format!(
                    "`{}` has stride {}, padding {}, groups {} but `{}` needs stride {stride}, padding {padding}, groups {groups}",
                    weights.source, g.stride, g.padding, g.groups, layer.burn
                )));
            }
        }
        previous_output = match (&layer.kind, &item) {
            (LayerKind::Conv { .. } | LayerKind::Linear { .. }, Some(l)) => Some(l.writes.clone()),
            _ => None,
        };
        layers.push(item.map(|l| l.weights));
    }
    if let Some(extra) = next.next() {
        return Err(BackboneError::GraphMismatch(format!(
            "the graph has more weighted layers than the architecture, starting at `{}`",
            extra.weights.source
        )));
    }
    load_layers(model, &plan, layers, model.spec().bn_eps())
}
