//! The Burn seam: Flex through `ConvBackend` equals Burn's own convolution (forward and both
//! gradients), and `Autodiff<Flex>` through `cpu_conv::conv2d` gives the gradients Burn's own
//! `Conv2d::forward` gives, for the input, weights and bias.

use burn::backend::{Autodiff, Flex};
use burn::nn::conv::Conv2dConfig;
use burn::nn::PaddingConfig2d;
use burn::tensor::ops::{ConvOptions, ModuleOps};
use burn::tensor::{Distribution, Tensor, TensorData, TensorPrimitive};
use cpu_conv::ConvBackend;

type B = Flex;
type AD = Autodiff<Flex>;

fn close(what: &str, a: TensorData, b: TensorData) {
    let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
            "{what} [{i}]: {x} vs {y}"
        );
    }
}

/// (input, weight, stride, padding, groups).
type Case = ([usize; 4], [usize; 4], usize, usize, usize);

/// Dense, strided, 1x1, grouped and depthwise layers.
const CASES: [Case; 5] = [
    ([3, 4, 9, 9], [6, 4, 3, 3], 1, 1, 1),
    ([2, 4, 10, 7], [8, 4, 3, 3], 2, 1, 1),
    ([2, 6, 8, 8], [4, 6, 1, 1], 2, 0, 1),
    ([2, 6, 7, 7], [4, 3, 3, 3], 1, 0, 2),
    ([5, 8, 12, 12], [8, 1, 3, 3], 2, 1, 8),
];

#[test]
fn flex_matches_burns_own_convolution() {
    let device = Default::default();
    for (input, weight, s, p, groups) in CASES {
        let opts = ConvOptions::new([s, s], [p, p], [1, 1], groups);
        let x = Tensor::<B, 4>::random(input, Distribution::Default, &device);
        let w = Tensor::<B, 4>::random(weight, Distribution::Default, &device);
        let bias = Tensor::<B, 1>::random([weight[0]], Distribution::Default, &device);
        let prim = |t: Tensor<B, 4>| t.into_primitive().tensor();
        let ours = B::conv2d_fwd(
            prim(x.clone()),
            prim(w.clone()),
            Some(bias.clone().into_primitive().tensor()),
            opts.clone(),
        );
        let theirs = B::conv2d(
            prim(x.clone()),
            prim(w.clone()),
            Some(bias.into_primitive().tensor()),
            opts.clone(),
        );
        let to_data = |t| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(t)).into_data();
        let gy_shape = to_data(theirs.clone()).shape.clone();
        close("forward", to_data(ours), to_data(theirs));
        let gy = Tensor::<B, 4>::random(gy_shape, Distribution::Default, &device);
        let gx = B::conv2d_grad_x(
            prim(x.clone()),
            prim(w.clone()),
            prim(gy.clone()),
            opts.clone(),
        );
        let gx_burn = B::conv2d_x_backward(
            prim(x.clone()),
            prim(w.clone()),
            prim(gy.clone()),
            opts.clone(),
        );
        close("input gradient", to_data(gx), to_data(gx_burn));
        let gw = B::conv2d_grad_w(
            prim(x.clone()),
            prim(w.clone()),
            prim(gy.clone()),
            opts.clone(),
        );
        let gw_burn = B::conv2d_weight_backward(prim(x), prim(w), prim(gy), opts);
        close("weight gradient", to_data(gw), to_data(gw_burn));
    }
}

#[test]
fn autodiff_gradients_match_burns_module() {
    let device = Default::default();
    for (input, weight, s, p, groups) in CASES {
        let conv = Conv2dConfig::new([input[1], weight[0]], [weight[2], weight[3]])
            .with_stride([s, s])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_groups(groups)
            .with_bias(true)
            .init::<AD>(&device);
        let x = Tensor::<AD, 4>::random(input, Distribution::Default, &device).require_grad();
        let y_ours = cpu_conv::conv2d(&conv, x.clone());
        let y_burn = conv.forward(x.clone());
        close(
            "forward",
            y_ours.clone().into_data(),
            y_burn.clone().into_data(),
        );
        let r = Tensor::<AD, 4>::random(y_burn.dims(), Distribution::Default, &device);
        let g_ours = (y_ours * r.clone()).sum().backward();
        let g_burn = (y_burn * r).sum().backward();
        let pairs = [
            (
                "x",
                x.grad(&g_ours).unwrap().into_data(),
                x.grad(&g_burn).unwrap().into_data(),
            ),
            (
                "weight",
                conv.weight.val().grad(&g_ours).unwrap().into_data(),
                conv.weight.val().grad(&g_burn).unwrap().into_data(),
            ),
        ];
        for (what, a, b) in pairs {
            close(what, a, b);
        }
        let bias = conv.bias.as_ref().unwrap().val();
        close(
            "bias",
            bias.grad(&g_ours).unwrap().into_data(),
            bias.grad(&g_burn).unwrap().into_data(),
        );
    }
}

#[test]
fn same_padding_and_untracked_inputs_still_work() {
    let device = Default::default();
    let conv = Conv2dConfig::new([3, 4], [3, 3])
        .with_padding(PaddingConfig2d::Same)
        .init::<AD>(&device);
    let x = Tensor::<AD, 4>::random([2, 3, 6, 6], Distribution::Default, &device);
    // `Same` goes to Burn's own convolution; for a 3x3 stride-1 kernel it is padding 1 on every
    // side, which the kernels run: the two paths must agree.
    // Burn initialises parameters lazily: read them once so the copy shares these values.
    let _ = (conv.weight.val(), conv.bias.as_ref().map(|b| b.val()));
    let mut explicit = conv.clone();
    explicit.padding = PaddingConfig2d::Explicit(1, 1, 1, 1);
    close(
        "same padding",
        cpu_conv::conv2d(&conv, x.clone()).into_data(),
        cpu_conv::conv2d(&explicit, x.clone()).into_data(),
    );
    // No input gradient is asked for (the kernels' own path): only the weights receive one.
    let conv = explicit;
    let grads = cpu_conv::conv2d(&conv, x.clone()).sum().backward();
    assert!(x.grad(&grads).is_none());
    assert!(conv.weight.val().grad(&grads).is_some());
}
