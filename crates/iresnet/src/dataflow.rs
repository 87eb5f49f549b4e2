//! A backbone's inference dataflow: the one description each architecture writes of itself.
//!
//! Every weighted module appears once, in forward order, with its Burn and PyTorch names and the
//! values it reads. The layer [`Plan`] the importers and FLOP counts use is derived from it, and
//! so is `quantize`'s int8 graph: adding an architecture means writing its module and its
//! [`Describe::dataflow`](crate::Describe::dataflow), nothing in the tools.

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, PRelu};
use burn::tensor::backend::Backend;

use crate::conv::ConvSpec;
use crate::plan::{join, LayerKind, Plan};
use crate::preprocess::INPUT_SIZE;

/// A value flowing between operations: 0 is the input image, operation `i` writes value `i + 1`.
pub type Value = usize;

/// A module with its path in Burn (`layer1.0.conv1`) and in insightface's PyTorch code.
#[derive(Debug, Clone)]
pub struct Named<'a, M> {
    /// The module.
    pub module: &'a M,
    /// Its path in Burn's record.
    pub burn: String,
    /// Its key in insightface's PyTorch state dict.
    pub torch: String,
}

impl<'a, M> Named<'a, M> {
    /// Names `module` in both worlds.
    pub fn new(module: &'a M, burn: impl Into<String>, torch: impl Into<String>) -> Self {
        Self {
            module,
            burn: burn.into(),
            torch: torch.into(),
        }
    }
}

/// One inference operation.
#[derive(Debug, Clone)]
pub enum Op<'a, B: Backend> {
    /// Convolution, its BatchNorm, then an optional PReLU.
    Conv {
        /// The value it reads.
        input: Value,
        /// The convolution.
        conv: Named<'a, Conv2d<B>>,
        /// The BatchNorm after it.
        bn: Named<'a, BatchNorm<B>>,
        /// The PReLU after that, if any.
        prelu: Option<Named<'a, PRelu<B>>>,
    },
    /// An inference BatchNorm with no convolution before it to fold into (IResNet's
    /// pre-activation `bn1`).
    Norm {
        /// The value it reads.
        input: Value,
        /// The BatchNorm.
        bn: Named<'a, BatchNorm<B>>,
    },
    /// Element-wise sum of two equal-shaped values.
    Add {
        /// One value.
        a: Value,
        /// The other.
        b: Value,
    },
    /// The embedding: an optional BatchNorm on the feature map, flatten in PyTorch's order
    /// (`c`, then `h`, then `w`), `Linear`, and the BatchNorm1d on its outputs. Always last.
    Embedding {
        /// The feature map it reads.
        input: Value,
        /// A BatchNorm on the feature map first, if any (IResNet's `bn2`).
        pre: Option<Named<'a, BatchNorm<B>>>,
        /// The embedding layer.
        fc: Named<'a, Linear<B>>,
        /// The BatchNorm1d on its outputs.
        features: Named<'a, BatchNorm<B>>,
    },
}

/// A backbone's operations in forward order; the last one's value is the embedding.
#[derive(Debug, Clone)]
pub struct Dataflow<'a, B: Backend> {
    /// The operations, in forward order.
    pub ops: Vec<Op<'a, B>>,
}

impl<B: Backend> Default for Dataflow<'_, B> {
    fn default() -> Self {
        Self { ops: Vec::new() }
    }
}

impl<'a, B: Backend> Dataflow<'a, B> {
    /// Appends an operation and returns the value it writes.
    pub fn push(&mut self, op: Op<'a, B>) -> Value {
        self.ops.push(op);
        self.ops.len()
    }

    /// A convolution block (conv, BatchNorm, optional PReLU) reading `input`.
    pub fn conv(
        &mut self,
        input: Value,
        conv: Named<'a, Conv2d<B>>,
        bn: Named<'a, BatchNorm<B>>,
        prelu: Option<Named<'a, PRelu<B>>>,
    ) -> Value {
        self.push(Op::Conv {
            input,
            conv,
            bn,
            prelu,
        })
    }

    /// `[h, w, c]` of every value at a 112x112 input, value 0 being the image; `None` when an
    /// operation reads a value before it is written or a convolution is not one
    /// [`ConvSpec::exact`] describes.
    pub fn shapes(&self) -> Option<Vec<[usize; 3]>> {
        let mut shapes = vec![[INPUT_SIZE, INPUT_SIZE, 3]];
        for op in &self.ops {
            let shape = match op {
                Op::Conv { input, conv, .. } => {
                    let [h, w, _] = *shapes.get(*input)?;
                    let g = ConvSpec::exact(conv.module)?;
                    [g.out_size(h), g.out_size(w), g.out_channels]
                }
                Op::Norm { input, .. } => *shapes.get(*input)?,
                Op::Add { a, .. } => *shapes.get(*a)?,
                Op::Embedding { fc, .. } => [1, 1, fc.module.weight.dims()[1]],
            };
            shapes.push(shape);
        }
        Some(shapes)
    }

    /// The weighted layers in forward order, as importers and FLOP counts read them (output
    /// sizes are 0 where [`Dataflow::shapes`] cannot tell them).
    pub fn plan(&self) -> Plan {
        let shapes = self.shapes().unwrap_or_default();
        let mut plan = Plan::default();
        let bn = |plan: &mut Plan, bn: &Named<'_, BatchNorm<B>>, channels: usize| {
            let kind = LayerKind::BatchNorm { channels };
            plan.push(kind, bn.burn.clone(), bn.torch.clone());
        };
        for (i, op) in self.ops.iter().enumerate() {
            let out_size = shapes.get(i + 1).map_or(0, |s| s[0]);
            match op {
                Op::Conv {
                    conv,
                    bn: norm,
                    prelu,
                    ..
                } => {
                    let g = ConvSpec::of(conv.module);
                    let kind = LayerKind::Conv {
                        in_channels: g.in_channels,
                        out_channels: g.out_channels,
                        kernel: g.kernel,
                        stride: g.stride,
                        padding: g.padding,
                        groups: g.groups,
                        out_size,
                    };
                    plan.push(kind, conv.burn.clone(), conv.torch.clone());
                    bn(&mut plan, norm, g.out_channels);
                    if let Some(p) = prelu {
                        let kind = LayerKind::PRelu {
                            channels: g.out_channels,
                        };
                        plan.push(kind, p.burn.clone(), p.torch.clone());
                    }
                }
                Op::Norm { bn: norm, .. } => bn(&mut plan, norm, norm.module.gamma.dims()[0]),
                Op::Add { .. } => {}
                Op::Embedding {
                    pre, fc, features, ..
                } => {
                    if let Some(pre) = pre {
                        bn(&mut plan, pre, pre.module.gamma.dims()[0]);
                    }
                    let [d_input, d_output] = fc.module.weight.dims();
                    let kind = LayerKind::Linear {
                        d_input,
                        d_output,
                        bias: fc.module.bias.is_some(),
                    };
                    plan.push(kind, fc.burn.clone(), fc.torch.clone());
                    bn(&mut plan, features, d_output);
                }
            }
        }
        plan
    }
}

/// Names `module` as `burn.b` in Burn and `torch.t` in PyTorch, for a parent at paths
/// `(burn, torch)` and a child named `(b, t)`.
pub(crate) fn child<'a, M>(
    module: &'a M,
    (burn, torch): (&str, &str),
    (b, t): (&str, &str),
) -> Named<'a, M> {
    Named::new(module, join(burn, b), join(torch, t))
}

/// Names `module` as `prefix.name` in both Burn and PyTorch (where the two agree).
pub(crate) fn same<'a, M>(module: &'a M, prefix: &str, name: &str) -> Named<'a, M> {
    child(module, (prefix, prefix), (name, name))
}
