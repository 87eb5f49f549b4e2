//! LibTorch's own convolution backward under Burn's autodiff, where it pays.
//!
//! burn-tch 0.21 runs a convolution's forward on LibTorch but leaves its two gradients to Burn's
//! generic decomposition: a transposed convolution for the input and a convolution over permuted
//! tensors for the weights, both native LibTorch calls for a dense layer, but one convolution per
//! group for a grouped one (512 for a 512-channel depthwise layer). tch 0.22 binds no
//! `convolution_backward`, so grouped layers get their gradients from LibTorch's autograd on a
//! re-run of the forward: `d/d(x, w) sum(conv(x, w) * grad)` is exactly the pair of convolution
//! gradients, computed by LibTorch's native backward (oneDNN on the CPU, cuDNN on CUDA). Dense
//! layers keep the decomposition, which needs no re-run: measured on 2 cores, the re-run made
//! IResNet-50's step slower and MobileFaceNet's 1.17-1.25x faster (docs/performance.md).
//! `CPU_CONV_KERNELS=burn` sends grouped layers back to the decomposition too.

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
        if !kernels_enabled() || options.groups == 1 || need == [false, false] {
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
