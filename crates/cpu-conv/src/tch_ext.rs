//! LibTorch's own convolution backward under Burn's autodiff.
//!
//! burn-tch 0.21 runs a convolution's forward on LibTorch but leaves its two gradients to Burn's
//! generic decomposition (a transposed convolution, and a convolution over permuted tensors, one
//! per group for depthwise layers). tch 0.22 binds no `convolution_backward`, so the gradients
//! come from LibTorch's autograd on a re-run of the forward: `d/d(x, w) sum(conv(x, w) * grad)`
//! is exactly the pair of convolution gradients, computed by LibTorch's native backward (oneDNN
//! on the CPU, cuDNN on CUDA). `CPU_CONV_KERNELS=burn` switches back to Burn's decomposition.

use burn::backend::libtorch::{LibTorch, TchElement, TchTensor};
use burn::tensor::ops::ConvOptions;
use tch::Tensor;

use crate::burn_ext::{kernels_enabled, separate_grads, ConvBackend};

impl<E: TchElement> ConvBackend for LibTorch<E> {
    fn conv2d_grads(
        x: TchTensor,
        weight: TchTensor,
        grad: TchTensor,
        options: ConvOptions<2>,
        need: [bool; 2],
    ) -> [Option<TchTensor>; 2] {
        if !kernels_enabled() || need == [false, false] {
            return separate_grads::<Self>(x, weight, grad, options, need);
        }
        let [gx, gw] = native_grads(&x.tensor, &weight.tensor, &grad.tensor, &options, need);
        [gx.map(TchTensor::new), gw.map(TchTensor::new)]
    }
}

/// The input and weight gradients of `conv2d(x, weight)` for the output gradient `grad`, as
/// LibTorch's autograd computes them.
fn native_grads(
    x: &Tensor,
    weight: &Tensor,
    grad: &Tensor,
    options: &ConvOptions<2>,
    need: [bool; 2],
) -> [Option<Tensor>; 2] {
    tch::with_grad(|| {
        let x = x.detach().set_requires_grad(need[0]);
        let w = weight.detach().set_requires_grad(need[1]);
        let y = x.conv2d(
            &w,
            None::<Tensor>,
            options.stride.map(|v| v as i64),
            options.padding.map(|v| v as i64),
            options.dilation.map(|v| v as i64),
            options.groups as i64,
        );
        let objective = (y * grad).sum(grad.kind());
        let wanted: Vec<&Tensor> = [&x, &w]
            .into_iter()
            .zip(need)
            .filter_map(|(t, n)| n.then_some(t))
            .collect();
        let mut grads = Tensor::run_backward(&[objective], &wanted, false, false).into_iter();
        need.map(|n| if n { grads.next() } else { None })
    })
}
