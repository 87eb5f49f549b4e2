//! The inference graph both engines run: a backbone read out of Burn into plain per-layer
//! arrays, with every BatchNorm that can be folded folded (after a convolution into its weights;
//! IResNet's `bn2` into the input side of `fc`; the `features` BatchNorm1d into `fc`'s outputs).
//! What is left is four operations on channels-last tensors: convolution (dense or grouped, with
//! an optional PReLU), the per-channel affine of IResNet's pre-convolution BatchNorm (it cannot
//! be folded into the convolution after it: that convolution zero-pads the normalized values),
//! residual addition, and the final linear layer.

use serde::{Deserialize, Serialize};

use crate::fold::FoldError;

/// Side of the aligned face the backbones take.
pub const INPUT_SIZE: usize = 112;

/// The largest convolution kernel side a graph may hold (a whole 7x7 map is the largest in any
/// backbone; 112 allows a kernel over the whole input).
const MAX_KERNEL: usize = INPUT_SIZE;

/// The largest stride a graph may hold (backbones use 1 and 2).
const MAX_STRIDE: usize = 16;

/// A convolution with its BatchNorm folded in: weights `[cout, cin / groups, kh, kw]`
/// (PyTorch's layout), bias per output channel, optional PReLU slopes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvLayer<W = Vec<f32>> {
    /// `[cout, cin / groups, kh, kw]` values.
    pub weights: W,
    /// `[cout, cin / groups, kh, kw]`.
    pub shape: [usize; 4],
    /// Per output channel.
    pub bias: Vec<f32>,
    /// PReLU slopes per output channel, when the layer has one.
    pub prelu: Option<Vec<f32>>,
    /// Stride, both axes.
    pub stride: usize,
    /// Zero padding, every side.
    pub padding: usize,
    /// Groups (the input's channels for a depthwise layer).
    pub groups: usize,
}

impl<W> ConvLayer<W> {
    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.shape[0]
    }
    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.shape[1] * self.groups
    }
    /// Output side for an input side.
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
    /// A convolution (BatchNorm folded, optional PReLU).
    Conv {
        /// The value it reads.
        input: usize,
        /// The layer.
        conv: ConvLayer<W>,
    },
    /// `x * scale[c] + shift[c]`: an inference BatchNorm that could not be folded.
    Affine {
        /// The value it reads.
        input: usize,
        /// Per channel.
        scale: Vec<f32>,
        /// Per channel.
        shift: Vec<f32>,
    },
    /// `a + b`, element-wise.
    Add {
        /// A value of the sum.
        a: usize,
        /// The other.
        b: usize,
    },
    /// The embedding layer on the flattened feature map: weights `[out, c * h * w]` in PyTorch's
    /// flattening order, which is also the layout of a convolution whose kernel covers the
    /// whole map (how the engine runs it).
    Linear {
        /// The value it reads.
        input: usize,
        /// `[out, c * h * w]` values.
        weights: W,
        /// Per output.
        bias: Vec<f32>,
    },
}

/// A backbone as a list of [`Node`]s; the last node's value is the embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph<W = Vec<f32>> {
    /// The backbone it came from, for reports.
    pub architecture: String,
    /// The operations in order.
    pub nodes: Vec<Node<W>>,
}

/// What the shape check needs to know of a layer's weights, whichever form they are in.
pub trait WeightData {
    /// How many weights there are.
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
    /// A BatchNorm could not be folded.
    #[error(transparent)]
    Fold(#[from] FoldError),
    /// A layer the engine does not run.
    #[error("{0}")]
    Unsupported(String),
    /// A node does not fit its inputs.
    #[error("node {node}: {reason}")]
    Invalid {
        /// The node.
        node: usize,
        /// What is wrong.
        reason: String,
    },
}

/// `[h, w, c]` of every value, value 0 being the `[112, 112, c]` image (`c` = 3 for RGB).
pub type Shapes = Vec<[usize; 3]>;

impl<W: WeightData> Graph<W> {
    /// Planes of the input image, read off the first node that reads it: 3 for RGB, 1 for a
    /// near-infrared or depth branch, more for early fusion.
    pub fn input_channels(&self) -> usize {
        let first = self.nodes.iter().find_map(|node| match node {
            Node::Conv { input: 0, conv } => Some(conv.groups * conv.shape[1]),
            Node::Affine {
                input: 0, scale, ..
            } => Some(scale.len()),
            _ => None,
        });
        first.unwrap_or(3)
    }

    /// Checks every node against its inputs and returns the value shapes.
    pub fn shapes(&self) -> Result<Shapes, GraphError> {
        let mut shapes = vec![[INPUT_SIZE, INPUT_SIZE, self.input_channels()]];
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
                    // Checked arithmetic and sane bounds first: a damaged file's sizes must
                    // fail here, not wrap around and index out of bounds in the engine.
                    let count = [cout, cpg, kh, kw]
                        .iter()
                        .try_fold(1usize, |n, &d| n.checked_mul(d));
                    let ok = conv.groups > 0
                        && conv.groups.checked_mul(cpg) == Some(c)
                        && cout % conv.groups == 0
                        && count == Some(conv.weights.count())
                        && conv.bias.len() == cout
                        && conv.prelu.as_ref().is_none_or(|p| p.len() == cout)
                        && (1..=MAX_KERNEL).contains(&kh)
                        && kh == kw
                        && (1..=MAX_STRIDE).contains(&conv.stride)
                        && conv.padding < kh
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
                    let count = [d, h, w, c]
                        .iter()
                        .try_fold(1usize, |n, &x| n.checked_mul(x));
                    if d == 0 || count != Some(weights.count()) {
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

    /// Values per embedding (0 without a final linear layer).
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
