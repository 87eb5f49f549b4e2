//! A Burn backbone read into a [`Graph`] from its [`Dataflow`](iresnet::Dataflow): inference
//! statistics, every foldable BatchNorm folded (feature `burn`, on by default; the engine and
//! `.aq8` files need none of it).

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, PRelu};
use burn::tensor::backend::Backend;
use iresnet::export::{param_values, BatchNormValues};
use iresnet::{ConvSpec, Describe, Op};

use crate::fold::{fold_batch_norm, BatchNormStats, FoldError};
use crate::graph::{ConvLayer, Graph, GraphError, Node};

impl Graph {
    /// Reads a Burn backbone (inference statistics) into a graph, from the dataflow it
    /// describes itself with ([`Describe::dataflow`]): any architecture that describes
    /// itself quantizes, with no code here that knows it.
    pub fn from_backbone<B: Backend, M: Describe<B>>(backbone: &M) -> Result<Self, GraphError> {
        let flow = backbone.dataflow();
        let shapes = flow.shapes().ok_or_else(|| {
            GraphError::Unsupported("the dataflow reads a value before writing it".into())
        })?;
        let mut builder = Builder {
            nodes: Vec::new(),
            shapes,
        };
        for op in &flow.ops {
            builder.op(op)?;
        }
        let graph = Self {
            architecture: backbone.name(),
            nodes: builder.nodes,
        };
        graph.shapes()?;
        Ok(graph)
    }
}

/// Hands `f` the BatchNorm's inference statistics, read out of Burn once (the exporter's reader).
fn with_stats<B: Backend, R>(bn: &BatchNorm<B>, f: impl FnOnce(&BatchNormStats<'_>) -> R) -> R {
    let v = BatchNormValues::of(bn);
    f(&BatchNormStats {
        gamma: &v.gamma,
        beta: &v.beta,
        mean: &v.mean,
        var: &v.var,
        eps: v.eps,
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
    let a = param_values(&prelu.alpha);
    if a.len() == 1 {
        vec![a[0]; channels]
    } else {
        a
    }
}

/// The graph's nodes as the dataflow's operations are read.
struct Builder {
    nodes: Vec<Node>,
    /// `[h, w, c]` of every dataflow value (the linear layer needs its input's map).
    shapes: Vec<[usize; 3]>,
}

impl Builder {
    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len()
    }

    fn op<B: Backend>(&mut self, op: &Op<'_, B>) -> Result<usize, GraphError> {
        match op {
            Op::Conv {
                input,
                conv,
                bn,
                prelu,
            } => self.conv(
                *input,
                conv.module,
                bn.module,
                prelu.as_ref().map(|p| p.module),
            ),
            Op::Norm { input, bn } => {
                let (scale, shift) = bn_affine(bn.module)?;
                Ok(self.push(Node::Affine {
                    input: *input,
                    scale,
                    shift,
                }))
            }
            Op::Add { a, b } => Ok(self.push(Node::Add { a: *a, b: *b })),
            Op::Embedding {
                input,
                pre,
                fc,
                features,
            } => {
                let map = self.shapes.get(*input).copied().ok_or_else(|| {
                    GraphError::Unsupported(format!(
                        "the embedding reads value {input}, which is never written"
                    ))
                })?;
                let pre = pre.as_ref().map(|bn| bn_affine(bn.module)).transpose()?;
                self.linear(*input, map, pre, fc.module, features.module)
            }
        }
    }

    fn conv<B: Backend>(
        &mut self,
        input: usize,
        conv: &Conv2d<B>,
        bn: &BatchNorm<B>,
        prelu: Option<&PRelu<B>>,
    ) -> Result<usize, GraphError> {
        let shape = conv.weight.dims();
        let geometry = ConvSpec::exact(conv).ok_or_else(|| {
            GraphError::Unsupported(format!(
                "a {:?} convolution with stride {:?}, padding {:?} and dilation {:?} (the engine \
                 runs square kernels, equal strides, no dilation and the same padding all round)",
                shape, conv.stride, conv.padding, conv.dilation
            ))
        })?;
        let bias = conv.bias.as_ref().map(param_values);
        let (weights, bias) = fold(&param_values(&conv.weight), bias.as_deref(), bn)?;
        let conv = ConvLayer {
            weights,
            shape,
            bias,
            prelu: prelu.map(|p| slopes(p, shape[0])),
            stride: geometry.stride,
            padding: geometry.padding,
            groups: geometry.groups,
        };
        Ok(self.push(Node::Conv { input, conv }))
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
        let burn = param_values(&fc.weight);
        let mut bias = fc
            .bias
            .as_ref()
            .map_or_else(|| vec![0.0; d_out], param_values);
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
}

impl crate::fusion::FusionEngine {
    /// A late-fusion model with every branch quantised on `calibration[i]` (branch `i`'s
    /// modality images, 112x112 with its planes interleaved), or in f32 where `options` is
    /// `None` (the reference the int8 one is measured against).
    pub fn from_late_fusion<B: iresnet::ConvBackend>(
        model: &iresnet::LateFusion<B>,
        calibration: &[Vec<&[u8]>],
        options: Option<crate::model::QuantizeOptions>,
    ) -> Result<Self, crate::model::ModelError> {
        use crate::engine::Engine;
        use crate::fusion::FuseLayer;
        let specs = &model.config().branches;
        if options.is_some() && calibration.len() != specs.len() {
            return Err(crate::model::ModelError::NoCalibration);
        }
        let mut branches = Vec::with_capacity(specs.len());
        for (k, (net, spec)) in model.branches.iter().zip(specs).enumerate() {
            let graph = Graph::from_backbone(net)?;
            let engine = match options {
                None => Engine::float(&graph)?,
                Some(o) => crate::model::quantize(&graph, &calibration[k], o)?.engine()?,
            };
            branches.push((spec.name.clone(), engine));
        }
        let fuse = match &model.fuser {
            iresnet::fusion::Fuser::Concat(c) => {
                let (scale, shift) = bn_affine(&c.features).map_err(GraphError::from)?;
                FuseLayer::Concat {
                    weight: param_values(&c.fc.weight),
                    bias: (c.fc.bias.as_ref().map(param_values))
                        .unwrap_or_else(|| vec![0.0; scale.len()]),
                    scale,
                    shift,
                }
            }
            iresnet::fusion::Fuser::Weighted(w) => {
                let logits = param_values(&w.logits);
                let top = logits.iter().cloned().fold(f32::MIN, f32::max);
                let exp: Vec<f32> = logits.iter().map(|l| (l - top).exp()).collect();
                let sum: f32 = exp.iter().sum();
                FuseLayer::Weighted {
                    weights: exp.iter().map(|e| e / sum).collect(),
                }
            }
        };
        Ok(Self { branches, fuse })
    }
}
