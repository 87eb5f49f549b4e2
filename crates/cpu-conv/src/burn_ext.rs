//! The Burn seam: a backend extension trait for 2-D convolution (the Burn book's "Backend
//! Extension" pattern), Flex's implementation on this crate's kernels, and `Autodiff<B>`'s, whose
//! backward node asks the inner backend for the two gradients through the same trait.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::{AutodiffBackend, Backend, TensorMetadata};
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};

use std::sync::OnceLock;

use crate::geom::Conv2dGeom;
use crate::isa::Isa;

/// A backend's 2-D convolution for models that train: forward and the two gradients Burn's
/// autodiff needs. Every method defaults to Burn's own operation, so a backend with good
/// convolutions (CUDA, LibTorch) implements the trait with an empty block.
pub trait ConvBackend: Backend {
    /// The forward pass (as `ModuleOps::conv2d`).
    fn conv2d_fwd(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, bias, options)
    }

    /// The gradient with respect to the input (as `ModuleOps::conv2d_x_backward`).
    fn conv2d_grad_x(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, grad, options)
    }

    /// The gradient with respect to the weights (as `ModuleOps::conv2d_weight_backward`).
    fn conv2d_grad_w(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, grad, options)
    }

    /// Both gradients at once, each only when `need` asks for it (`[input, weights]`): the
    /// autodiff node calls this. Defaults to the two methods above; a backend whose native
    /// backward computes both in one call (LibTorch) overrides it.
    fn conv2d_grads(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
        need: [bool; 2],
    ) -> [Option<FloatTensor<Self>>; 2] {
        separate_grads::<Self>(x, weight, grad, options, need)
    }
}

/// [`ConvBackend::conv2d_grads`] as two calls, for backends that override it but fall back.
pub(crate) fn separate_grads<B: ConvBackend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
    options: ConvOptions<2>,
    need: [bool; 2],
) -> [Option<FloatTensor<B>>; 2] {
    let gx =
        need[0].then(|| B::conv2d_grad_x(x.clone(), weight.clone(), grad.clone(), options.clone()));
    let gw = need[1].then(|| B::conv2d_grad_w(x, weight, grad, options));
    [gx, gw]
}

/// An autodiff backend whose forward and inner (evaluation) backend both convolve through
/// [`ConvBackend`]: the bound a trainer over any model of this workspace needs. Implemented for
/// every such backend.
pub trait ConvAutodiffBackend: AutodiffBackend<InnerBackend: ConvBackend> + ConvBackend {}

impl<B> ConvAutodiffBackend for B where B: AutodiffBackend<InnerBackend: ConvBackend> + ConvBackend {}

/// `module`'s convolution of `x` through [`ConvBackend`]: the same result as `module.forward(x)`
/// (`Same` or asymmetric padding, which the kernels do not take, goes to `forward` itself).
pub fn conv2d<B: ConvBackend>(module: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let padding = match module.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            [top, left]
        }
        _ => return module.forward(x),
    };
    let options = ConvOptions::new(module.stride, padding, module.dilation, module.groups);
    let bias = module
        .bias
        .as_ref()
        .map(|b| b.val().into_primitive().tensor());
    let y = B::conv2d_fwd(
        x.into_primitive().tensor(),
        module.weight.val().into_primitive().tensor(),
        bias,
        options,
    );
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

fn dims4(t: &impl TensorMetadata) -> Option<[usize; 4]> {
    let shape = t.shape();
    (shape.num_dims() == 4).then(|| [shape[0], shape[1], shape[2], shape[3]])
}

/// `CPU_CONV_KERNELS=burn` hands every convolution back to Burn's own: the same binary then
/// times (or checks) one against the other.
pub(crate) fn kernels_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("CPU_CONV_KERNELS").map_or(true, |v| v != "burn"))
}

/// The geometry of an f32 convolution the kernels run (`None`: leave it to Burn).
fn geom_of(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> Option<Conv2dGeom> {
    if !kernels_enabled() || x.dtype() != DType::F32 || weight.dtype() != DType::F32 {
        return None;
    }
    Conv2dGeom::new(
        dims4(x)?,
        dims4(weight)?,
        options.stride,
        options.padding,
        options.dilation,
        options.groups,
    )
    .ok()
}

/// A contiguous f32 view of a flex tensor, copying only when it is strided.
fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => {
            std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().unwrap_or(&[]).to_vec())
        }
    }
}

fn flex(values: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

impl ConvBackend for Flex {
    fn conv2d_fwd(
        x: FlexTensor,
        weight: FlexTensor,
        bias: Option<FlexTensor>,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        let bias_ok = bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
        match geom_of(&x, &weight, &options).filter(|_| bias_ok) {
            Some(g) => {
                let b = bias.as_ref().map(values);
                let y =
                    crate::forward(&g, &values(&x), &values(&weight), b.as_deref(), Isa::best());
                flex(y, g.output())
            }
            None => Flex::conv2d(x, weight, bias, options),
        }
    }

    fn conv2d_grad_x(
        x: FlexTensor,
        weight: FlexTensor,
        grad: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        match geom_of(&x, &weight, &options).filter(|g| dims4(&grad) == Some(g.output())) {
            Some(g) => flex(
                crate::backward_input(&g, &values(&weight), &values(&grad), Isa::best()),
                g.input,
            ),
            None => Flex::conv2d_x_backward(x, weight, grad, options),
        }
    }

    fn conv2d_grad_w(
        x: FlexTensor,
        weight: FlexTensor,
        grad: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        match geom_of(&x, &weight, &options).filter(|g| dims4(&grad) == Some(g.output())) {
            Some(g) => flex(
                crate::backward_weight(&g, &values(&x), &values(&grad), Isa::best()),
                g.weight,
            ),
            None => Flex::conv2d_weight_backward(x, weight, grad, options),
        }
    }
}

#[cfg(feature = "cuda")]
impl ConvBackend for burn::backend::Cuda {}

/// The backward node: the inner backend's [`ConvBackend`] gradients for the input and weights,
/// Burn's bias gradient. Its state is the checkpointed input and weights (and bias, if any).
#[derive(Debug)]
struct ConvNode<const N: usize>;

impl<B: ConvBackend, const N: usize> Backward<B, N> for ConvNode<N> {
    type State = (Vec<NodeId>, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let (states, options) = ops.state;
        let mut inputs = states
            .into_iter()
            .map(|s| checkpointer.retrieve_node_output::<FloatTensor<B>>(s));
        let (x, weight) = (inputs.next(), inputs.next());
        let (Some(x), Some(weight)) = (x, weight) else {
            return;
        };
        let bias = inputs.next();
        let parents = ops.parents;
        let need = [parents[0].is_some(), parents[1].is_some()];
        let [gx, gw] = B::conv2d_grads(x.clone(), weight, grad.clone(), options, need);
        for (parent, g) in parents.iter().zip([gx, gw]) {
            if let (Some(node), Some(g)) = (parent, g) {
                grads.register::<B>(node.id, g);
            }
        }
        if let (Some(Some(node)), Some(bias)) = (parents.get(2), bias) {
            grads.register::<B>(node.id, B::conv2d_bias_backward(x, bias, grad));
        }
    }
}

impl<B: ConvBackend, C: CheckpointStrategy> ConvBackend for Autodiff<B, C> {
    fn conv2d_fwd(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match bias {
            Some(bias) => match ConvNode::<3>
                .prepare::<C>([x.node.clone(), weight.node.clone(), bias.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let states = vec![
                        prep.checkpoint(&x),
                        prep.checkpoint(&weight),
                        prep.checkpoint(&bias),
                    ];
                    let y = B::conv2d_fwd(
                        x.primitive,
                        weight.primitive,
                        Some(bias.primitive),
                        options.clone(),
                    );
                    prep.finish((states, options), y)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::conv2d_fwd(
                    x.primitive,
                    weight.primitive,
                    Some(bias.primitive),
                    options,
                )),
            },
            None => match ConvNode::<2>
                .prepare::<C>([x.node.clone(), weight.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let states = vec![prep.checkpoint(&x), prep.checkpoint(&weight)];
                    let y = B::conv2d_fwd(x.primitive, weight.primitive, None, options.clone());
                    prep.finish((states, options), y)
                }
                OpsKind::UnTracked(prep) => {
                    prep.finish(B::conv2d_fwd(x.primitive, weight.primitive, None, options))
                }
            },
        }
    }
}
