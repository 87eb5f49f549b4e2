//! A Burn backbone read into a [`Graph`]: inference statistics, every foldable BatchNorm folded
//! (feature `burn`, on by default; the engine and `.aq8` files need none of it).

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, PRelu, PaddingConfig2d};
use burn::tensor::{backend::Backend, Tensor};
use iresnet::mobilefacenet::DepthWise;
use iresnet::{AnyBackbone, Architecture, ConvBnAct, IResNet, MobileFaceNet};

use crate::fold::{fold_batch_norm, BatchNormStats, FoldError};
use crate::graph::{ConvLayer, Graph, GraphError, Node};

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
            let normalized = self.push(Node::Affine {
                input: x,
                scale,
                shift,
            });
            let y = self.conv(normalized, &block.conv1, &block.bn2, Some(&block.prelu))?;
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
