//! The inference graph both engines run: a backbone read out of Burn into plain per-layer
//! arrays, with every BatchNorm that can be folded folded (after a convolution into its weights;
//! IResNet's `bn2` into the input side of `fc`; the `features` BatchNorm1d into `fc`'s outputs).
//! What is left is four operations on channels-last tensors: convolution (dense or grouped, with
//! an optional PReLU), the per-channel affine of IResNet's pre-convolution BatchNorm (it cannot
//! be folded into the convolution after it: that convolution zero-pads the normalised values),
//! residual addition, and the final linear layer.

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, PRelu, PaddingConfig2d};
use burn::tensor::{backend::Backend, Tensor};
use iresnet::mobilefacenet::DepthWise;
use iresnet::{AnyBackbone, Architecture, ConvBnAct, IResNet, MobileFaceNet};
use serde::{Deserialize, Serialize};

use crate::fold::{fold_batch_norm, BatchNormStats, FoldError};

/// Side of the aligned face the backbones take.
pub const INPUT_SIZE: usize = 112;

/// A convolution with its BatchNorm folded in: weights `[cout, cin / groups, kh, kw]`
/// (PyTorch's layout), bias per output channel, optional PReLU slopes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvLayer<W = Vec<f32>> {
    pub weights: W,
    pub shape: [usize; 4],
    pub bias: Vec<f32>,
    pub prelu: Option<Vec<f32>>,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

impl<W> ConvLayer<W> {
    pub fn out_channels(&self) -> usize {
        self.shape[0]
    }
    pub fn in_channels(&self) -> usize {
        self.shape[1] * self.groups
    }
    pub fn out_size(&self, size: usize) -> usize {
        out_size(size, self.shape[2], self.stride, self.padding)
    }
}

/// Output side of a convolution over `size` inputs (every layer here uses this one rule).
pub(crate) fn out_size(size: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (size + 2 * padding).saturating_sub(kernel) / stride.max(1) + 1
}

/// One operation; its inputs are value indices (0 is the image, node `i` writes value `i + 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Node<W = Vec<f32>> {
    Conv {
        input: usize,
        conv: ConvLayer<W>,
    },
    /// `x * scale[c] + shift[c]`: an inference BatchNorm that could not be folded.
    Affine {
        input: usize,
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    Add {
        a: usize,
        b: usize,
    },
    /// The embedding layer on the flattened feature map: weights `[out, c * h * w]` in PyTorch's
    /// flattening order, which is also the layout of a convolution whose kernel covers the
    /// whole map (how the engine runs it).
    Linear {
        input: usize,
        weights: W,
        bias: Vec<f32>,
    },
}

/// A backbone as a list of [`Node`]s; the last node's value is the embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph<W = Vec<f32>> {
    /// The backbone it came from, for reports.
    pub architecture: String,
    pub nodes: Vec<Node<W>>,
}

/// What the shape check needs to know of a layer's weights, whichever form they are in.
pub trait WeightData {
    fn count(&self) -> usize;
}

impl WeightData for Vec<f32> {
    fn count(&self) -> usize {
        self.len()
    }
}

/// Why a backbone could not be turned into a graph.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    #[error(transparent)]
    Fold(#[from] FoldError),
    #[error("{0}")]
    Unsupported(String),
    #[error("node {node}: {reason}")]
    Invalid { node: usize, reason: String },
}

/// `[h, w, c]` of every value, value 0 being the `[112, 112, 3]` image.
pub type Shapes = Vec<[usize; 3]>;

impl Graph {
    /// Reads a Burn backbone (inference statistics) into a graph.
    pub fn from_backbone<B: Backend>(backbone: &AnyBackbone<B>) -> Result<Self, GraphError> {
        let mut builder = Builder::default();
        match backbone {
            AnyBackbone::IResNet(net) => builder.iresnet(net)?,
            AnyBackbone::MobileFaceNet(net) => builder.mobilefacenet(net)?,
        }
        let graph = Self {
            architecture: backbone.spec().describe(),
            nodes: builder.nodes,
        };
        graph.shapes()?;
        Ok(graph)
    }
}

impl<W: WeightData> Graph<W> {
    /// Checks every node against its inputs and returns the value shapes.
    pub fn shapes(&self) -> Result<Shapes, GraphError> {
        let mut shapes = vec![[INPUT_SIZE, INPUT_SIZE, 3]];
        for (i, node) in self.nodes.iter().enumerate() {
            let bad = |reason: String| GraphError::Invalid { node: i, reason };
            let get = |v: usize| {
                shapes
                    .get(v)
                    .copied()
                    .ok_or_else(|| bad(format!("reads value {v}, which is not computed yet")))
            };
            let shape = match node {
                Node::Conv { input, conv } => {
                    let [h, w, c] = get(*input)?;
                    let [cout, cpg, kh, kw] = conv.shape;
                    let ok = conv.groups > 0
                        && c == cpg * conv.groups
                        && cout % conv.groups == 0
                        && conv.weights.count() == cout * cpg * kh * kw
                        && conv.bias.len() == cout
                        && conv.prelu.as_ref().is_none_or(|p| p.len() == cout)
                        && conv.stride > 0
                        && kh == kw
                        && h + 2 * conv.padding >= kh
                        && w + 2 * conv.padding >= kw;
                    if !ok {
                        return Err(bad(format!(
                            "convolution {:?} (groups {}) does not fit input {:?}",
                            conv.shape,
                            conv.groups,
                            [h, w, c]
                        )));
                    }
                    [conv.out_size(h), conv.out_size(w), cout]
                }
                Node::Affine {
                    input,
                    scale,
                    shift,
                } => {
                    let s = get(*input)?;
                    if scale.len() != s[2] || shift.len() != s[2] {
                        return Err(bad(format!("affine over {} channels", scale.len())));
                    }
                    s
                }
                Node::Add { a, b } => {
                    let (sa, sb) = (get(*a)?, get(*b)?);
                    if sa != sb {
                        return Err(bad(format!("adds {sa:?} and {sb:?}")));
                    }
                    sa
                }
                Node::Linear {
                    input,
                    weights,
                    bias,
                } => {
                    let [h, w, c] = get(*input)?;
                    let d = bias.len();
                    if d == 0 || weights.count() != d * h * w * c {
                        return Err(bad(format!(
                            "linear with {} weights and {d} outputs on {:?}",
                            weights.count(),
                            [h, w, c]
                        )));
                    }
                    [1, 1, d]
                }
            };
            shapes.push(shape);
        }
        if !matches!(self.nodes.last(), Some(Node::Linear { .. })) {
            return Err(GraphError::Invalid {
                node: self.nodes.len(),
                reason: "the graph must end in the embedding's linear layer".into(),
            });
        }
        Ok(shapes)
    }

    pub fn embedding_dim(&self) -> usize {
        match self.nodes.last() {
            Some(Node::Linear { bias, .. }) => bias.len(),
            _ => 0,
        }
    }

    /// For each value, how many nodes read it (the engine frees a value after its last reader).
    pub fn readers(&self) -> Vec<usize> {
        let mut count = vec![0; self.nodes.len() + 1];
        for node in &self.nodes {
            match node {
                Node::Conv { input, .. }
                | Node::Affine { input, .. }
                | Node::Linear { input, .. } => count[*input] += 1,
                Node::Add { a, b } => {
                    count[*a] += 1;
                    count[*b] += 1;
                }
            }
        }
        count
    }
}

fn values<B: Backend, const D: usize>(t: &Param<Tensor<B, D>>) -> Vec<f32> {
    t.val()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

/// Hands `f` the BatchNorm's inference statistics, read out of Burn once.
fn with_stats<B: Backend, R>(bn: &BatchNorm<B>, f: impl FnOnce(&BatchNormStats<'_>) -> R) -> R {
    let running = |t: &burn::module::RunningState<Tensor<B, 1>>| {
        t.value()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 data")
    };
    let (gamma, beta) = (values(&bn.gamma), values(&bn.beta));
    let (mean, var) = (running(&bn.running_mean), running(&bn.running_var));
    f(&BatchNormStats {
        gamma: &gamma,
        beta: &beta,
        mean: &mean,
        var: &var,
        eps: bn.epsilon as f32,
    })
}

/// An inference BatchNorm as the per-channel affine it computes.
fn bn_affine<B: Backend>(bn: &BatchNorm<B>) -> Result<(Vec<f32>, Vec<f32>), FoldError> {
    with_stats(bn, |stats| stats.affine())
}

fn fold<B: Backend>(
    weights: &[f32],
    bias: Option<&[f32]>,
    bn: &BatchNorm<B>,
) -> Result<(Vec<f32>, Vec<f32>), FoldError> {
    with_stats(bn, |stats| fold_batch_norm(weights, bias, stats))
}

fn slopes<B: Backend>(prelu: &PRelu<B>, channels: usize) -> Vec<f32> {
    let a = values(&prelu.alpha);
    if a.len() == 1 {
        vec![a[0]; channels]
    } else {
        a
    }
}

#[derive(Default)]
struct Builder {
    nodes: Vec<Node>,
}

impl Builder {
    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len()
    }

    fn conv<B: Backend>(
        &mut self,
        input: usize,
        conv: &Conv2d<B>,
        bn: &BatchNorm<B>,
        prelu: Option<&PRelu<B>>,
    ) -> Result<usize, GraphError> {
        let shape = conv.weight.dims();
        let [stride, _] = conv.stride;
        let padding = match &conv.padding {
            PaddingConfig2d::Explicit(t, l, b, r) if t == l && l == b && b == r => *t,
            PaddingConfig2d::Valid => 0,
            other => {
                return Err(GraphError::Unsupported(format!(
                    "convolution padding {other:?}"
                )))
            }
        };
        if conv.stride[0] != conv.stride[1] || conv.dilation != [1, 1] {
            return Err(GraphError::Unsupported(
                "unequal strides or dilation".into(),
            ));
        }
        let bias = conv.bias.as_ref().map(values);
        let (weights, bias) = fold(&values(&conv.weight), bias.as_deref(), bn)?;
        let conv = ConvLayer {
            weights,
            shape,
            bias,
            prelu: prelu.map(|p| slopes(p, shape[0])),
            stride,
            padding,
            groups: conv.groups,
        };
        Ok(self.push(Node::Conv { input, conv }))
    }

    fn block<B: Backend>(
        &mut self,
        input: usize,
        block: &ConvBnAct<B>,
    ) -> Result<usize, GraphError> {
        self.conv(input, &block.conv, &block.bn, block.prelu.as_ref())
    }

    fn depthwise<B: Backend>(
        &mut self,
        input: usize,
        dw: &DepthWise<B>,
    ) -> Result<usize, GraphError> {
        let x = self.block(input, &dw.expand)?;
        let x = self.block(x, &dw.depthwise)?;
        let x = self.block(x, &dw.project)?;
        Ok(if dw.residual {
            self.push(Node::Add { a: input, b: x })
        } else {
            x
        })
    }

    /// The embedding layer: `features(fc(pre(flatten(x))))` with `pre` an optional per-channel
    /// affine (IResNet's `bn2`), everything folded into one linear layer over a `[h, w, c]`
    /// feature map flattened as PyTorch does (`c`, then `h`, then `w`).
    fn linear<B: Backend>(
        &mut self,
        input: usize,
        [h, w, c]: [usize; 3],
        pre: Option<(Vec<f32>, Vec<f32>)>,
        fc: &Linear<B>,
        features: &BatchNorm<B>,
    ) -> Result<usize, GraphError> {
        // Burn keeps linear weights as [in, out].
        let [d_in, d_out] = fc.weight.dims();
        if d_in != h * w * c {
            return Err(GraphError::Unsupported(format!(
                "fc takes {d_in} inputs, the feature map has {h}x{w}x{c}"
            )));
        }
        let burn = values(&fc.weight);
        let mut bias = fc.bias.as_ref().map_or_else(|| vec![0.0; d_out], values);
        let mut weights = vec![0f32; d_out * d_in];
        for (i, row) in burn.chunks_exact(d_out).enumerate() {
            let (s, t) = pre
                .as_ref()
                .map_or((1.0, 0.0), |(s, t)| (s[i / (h * w)], t[i / (h * w)]));
            for (o, &v) in row.iter().enumerate() {
                weights[o * d_in + i] = v * s;
                bias[o] += v * t;
            }
        }
        let (weights, bias) = fold(&weights, Some(&bias), features)?;
        Ok(self.push(Node::Linear {
            input,
            weights,
            bias,
        }))
    }

    fn iresnet<B: Backend>(&mut self, net: &IResNet<B>) -> Result<(), GraphError> {
        let mut x = self.conv(0, &net.conv1, &net.bn1, Some(&net.prelu))?;
        for block in net.stages() {
            let (scale, shift) = bn_affine(&block.bn1)?;
            let normalised = self.push(Node::Affine {
                input: x,
                scale,
                shift,
            });
            let y = self.conv(normalised, &block.conv1, &block.bn2, Some(&block.prelu))?;
            let y = self.conv(y, &block.conv2, &block.bn3, None)?;
            let identity = match &block.downsample {
                Some(d) => self.conv(x, &d.conv, &d.bn, None)?,
                None => x,
            };
            x = self.push(Node::Add { a: y, b: identity });
        }
        let c = net.bn2.gamma.dims()[0];
        let side = ((net.fc.weight.dims()[0] / c.max(1)) as f64).sqrt() as usize;
        self.linear(
            x,
            [side, side, c],
            Some(bn_affine(&net.bn2)?),
            &net.fc,
            &net.features,
        )?;
        Ok(())
    }

    fn mobilefacenet<B: Backend>(&mut self, net: &MobileFaceNet<B>) -> Result<(), GraphError> {
        let mut x = self.block(0, &net.stem)?;
        if let Some(dw) = &net.stem_dw {
            x = self.block(x, dw)?;
        }
        for dw in net.body() {
            x = self.depthwise(x, dw)?;
        }
        x = self.block(x, &net.conv_sep)?;
        let (x, shape) = match (&net.gdc, &net.embed_conv) {
            (Some(gdc), _) => (self.block(x, gdc)?, [1, 1, gdc.conv.weight.dims()[0]]),
            (None, Some(conv)) => (self.block(x, conv)?, [7, 7, conv.conv.weight.dims()[0]]),
            (None, None) => {
                return Err(GraphError::Unsupported(
                    "MobileFaceNet without an embedding head".into(),
                ))
            }
        };
        self.linear(x, shape, None, &net.fc, &net.features)?;
        Ok(())
    }
}
