//! The int8 GEMM kernels on convolution-sized products, beside flex's f32 matmul of the same
//! shape: IResNet-50's first-stage 3x3 convolution as im2col (3136 pixels x 576 x 64 channels),
//! MobileFaceNet's 1x1 layers at 56x56 and 28x28 (3136 x 128 x 128, 784 x 256 x 256) and
//! IResNet-50's last-stage 3x3 (49 x 4608 x 512); then whole layers (`conv_layer`). Throughput in
//! multiply-adds per second.
//!
//! cargo bench -p arcface-benches --bench int8_gemm

use burn::tensor::{Distribution, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use iresnet::CpuBackend as B;
use quantize::gemm::{gemm_u8i8, pad_rows, Kernel, PackedWeights};

fn gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("int8_gemm");
    group.sample_size(20);
    let device = Default::default();
    for (m, k, n) in [
        (3136usize, 576usize, 64usize),
        (3136, 128, 128),
        (784, 256, 256),
        (49, 4608, 512),
    ] {
        let name = format!("{m}x{k}x{n}");
        group.throughput(Throughput::Elements((m * k * n) as u64));
        let a: Vec<u8> = (0..m * k).map(|i| (i * 7 % 251) as u8).collect();
        let b: Vec<i8> = (0..k * n).map(|i| (i * 13 % 255) as i8).collect();
        let w = PackedWeights::pack(&b, k, n);
        let a = pad_rows(&a, m, k, w.lda());
        let mut out = vec![0i32; m * n];
        for kernel in [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512Vnni] {
            if !kernel.available() {
                continue;
            }
            group.bench_function(BenchmarkId::new(format!("{kernel:?}"), &name), |bench| {
                bench.iter(|| gemm_u8i8(&a, m, &w, &mut out, kernel).unwrap())
            });
        }
        let x = Tensor::<B, 2>::random([m, k], Distribution::Default, &device);
        let y = Tensor::<B, 2>::random([k, n], Distribution::Default, &device);
        group.bench_function(BenchmarkId::new("flex_f32_matmul", &name), |bench| {
            bench.iter(|| x.clone().matmul(y.clone()).into_data())
        });
    }
    group.finish();
}

/// Whole convolution layers at batch 1: IResNet-50's stage-1 3x3 (56x56x64 -> 64), a
/// MobileFaceNet 1x1 (56x56x128 -> 128) and its depthwise 3x3 (groups 128). `QConv2d` (im2col or
/// direct, best kernel, fused epilogue, u8 out) against flex's f32 `conv2d`.
fn conv_layer(c: &mut Criterion) {
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use quantize::{Output, QConv2d, QTensor};
    for (h, cin, cout, k, groups) in [
        (56usize, 64usize, 64usize, 3usize, 1usize),
        (56, 128, 128, 1, 1),
        (56, 128, 128, 3, 128),
    ] {
        let name = format!("conv{k}x{k}_{h}x{h}x{cin}_g{groups}");
        let mut group = c.benchmark_group(name);
        group.sample_size(20);
        let cpg = cin / groups;
        let pad = k / 2;
        group.throughput(Throughput::Elements((h * h * cpg * cout * k * k) as u64));
        let weights: Vec<f32> = (0..cout * cpg * k * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
            .collect();
        let conv =
            QConv2d::new_grouped(&weights, [cout, cpg, k, k], groups, None, None, 1, pad).unwrap();
        let x = QTensor {
            data: (0..h * h * cin).map(|i| (i * 11 % 256) as u8).collect(),
            shape: [1, h, h, cin],
            scale: 0.02,
            zero: 128,
        };
        let kernel = Kernel::detect();
        group.bench_function(format!("int8_{kernel:?}"), |b| {
            b.iter(|| {
                conv.forward(
                    &x,
                    Output::U8 {
                        scale: 0.05,
                        zero: 128,
                    },
                    kernel,
                )
                .unwrap()
            })
        });
        let device = Default::default();
        let xf = Tensor::<B, 4>::random([1, cin, h, h], Distribution::Default, &device);
        let wf = Tensor::<B, 4>::random([cout, cpg, k, k], Distribution::Default, &device);
        group.bench_function("flex_f32_conv2d", |b| {
            b.iter(|| {
                conv2d(
                    xf.clone(),
                    wf.clone(),
                    None,
                    ConvOptions::new([1, 1], [pad, pad], [1, 1], groups),
                )
                .into_data()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, gemm, conv_layer);
criterion_main!(benches);
