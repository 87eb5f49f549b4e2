//! One convolution layer's three training passes (forward, input gradient, weight gradient) at
//! batch 32: cpu-conv's kernels beside Burn 0.21 flex's own (its forward, its generic
//! `conv2d_x_backward` / `conv2d_weight_backward`), on the layer shapes IResNet and MobileFaceNet
//! spend their time in.
//!
//! cargo bench -p arcface-benches --bench conv

use burn::backend::Flex;
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};
use burn::tensor::{Distribution, Tensor};
use cpu_conv::ConvBackend;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

type B = Flex;

fn random(shape: [usize; 4]) -> FloatTensor<B> {
    Tensor::<B, 4>::random(shape, Distribution::Default, &Default::default())
        .into_primitive()
        .tensor()
}

fn conv(c: &mut Criterion) {
    // (name, input, weight, stride, padding, groups)
    let layers = [
        ("r18_layer1_3x3", [32, 64, 56, 56], [64, 64, 3, 3], 1, 1, 1),
        (
            "r18_layer2_3x3s2",
            [32, 128, 56, 56],
            [128, 128, 3, 3],
            2,
            1,
            1,
        ),
        ("r18_down_1x1s2", [32, 64, 56, 56], [128, 64, 1, 1], 2, 0, 1),
        ("mbf_1x1", [32, 64, 56, 56], [128, 64, 1, 1], 1, 0, 1),
        ("mbf_dw3x3", [32, 128, 56, 56], [128, 1, 3, 3], 1, 1, 128),
        ("mbf_dw3x3s2", [32, 128, 56, 56], [128, 1, 3, 3], 2, 1, 128),
    ];
    let mut group = c.benchmark_group("conv_train_passes");
    group.sample_size(10);
    for (name, input, weight, s, p, groups) in layers {
        let opts = ConvOptions::new([s, s], [p, p], [1, 1], groups);
        let (x, w) = (random(input), random(weight));
        let y = B::conv2d(x.clone(), w.clone(), None, opts.clone());
        let gy = random(burn::tensor::TensorMetadata::shape(&y).dims());
        for (side, ours) in [("burn", false), ("cpu_conv", true)] {
            let id = |pass: &str| BenchmarkId::new(format!("{name}/{pass}"), side);
            group.bench_function(id("forward"), |b| {
                b.iter(|| match ours {
                    true => B::conv2d_fwd(x.clone(), w.clone(), None, opts.clone()),
                    false => B::conv2d(x.clone(), w.clone(), None, opts.clone()),
                })
            });
            group.bench_function(id("grad_x"), |b| {
                b.iter(|| match ours {
                    true => B::conv2d_grad_x(x.clone(), w.clone(), gy.clone(), opts.clone()),
                    false => B::conv2d_x_backward(x.clone(), w.clone(), gy.clone(), opts.clone()),
                })
            });
            group.bench_function(id("grad_w"), |b| {
                b.iter(|| match ours {
                    true => B::conv2d_grad_w(x.clone(), w.clone(), gy.clone(), opts.clone()),
                    false => {
                        B::conv2d_weight_backward(x.clone(), w.clone(), gy.clone(), opts.clone())
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, conv);
criterion_main!(benches);
