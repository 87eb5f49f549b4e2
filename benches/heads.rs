//! Margin head forward + backward on the CPU (flex): batch 128, D = 512, 10k and 100k classes,
//! full and Partial FC (sample rate 0.1).
//!
//! cargo bench -p arcface-benches --bench heads
//! Side-by-side with PyTorch (tools/bench_peers_heads.py): docs/performance.md.

use std::time::Duration;

use arcface_loss::{MarginFcConfig, MarginHead, SampledSgdConfig};
use burn::{
    backend::{Autodiff, Flex},
    tensor::{Distribution, Tensor},
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

type B = Autodiff<Flex>;
/// As in the `arcface` binary: with glibc's allocator every freed `[K, 512]` buffer goes back to
/// the OS and the next one is page-faulted in again, which doubled these times (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn heads(c: &mut Criterion) {
    let device = Default::default();
    let (batch, dim) = (128, 512);
    let mut group = c.benchmark_group("head_forward_backward");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for classes in [10_000usize, 100_000] {
        for rate in [1.0, 0.1] {
            let head = MarginFcConfig::new(classes, dim)
                .with_sample_rate(rate)
                .init::<B>(&device)
                .unwrap();
            let embeddings =
                Tensor::<B, 2>::random([batch, dim], Distribution::Normal(0.0, 1.0), &device);
            let labels: Vec<usize> = (0..batch).map(|i| (i * 7919) % classes).collect();
            let run = |step: u64| {
                let x = embeddings.clone().require_grad();
                let out = head.forward(x.clone(), &labels, step).unwrap();
                let grads = out.loss.backward();
                // Flex is eager: backward() has computed every gradient. Read back only the
                // embeddings' (the centres' is [K, 512], and copying it out is not the head's cost).
                let _ = x.grad(&grads).unwrap().into_data();
            };
            run(0);
            let name = if rate < 1.0 { "partial_fc_0.1" } else { "full" };
            let mut step = 0;
            group.bench_function(BenchmarkId::new(name, classes), |b| {
                b.iter(|| {
                    step += 1;
                    run(step)
                })
            });
        }
    }
    group.finish();
}

/// Partial FC's optimiser step on the centres (rows of a [K, 512] matrix and its velocity).
fn sampled_step(c: &mut Criterion) {
    let device = Default::default();
    let mut group = c.benchmark_group("head_sampled_sgd_step");
    group.sample_size(10);
    for classes in [10_000usize, 100_000] {
        let head = MarginFcConfig::new(classes, 512)
            .with_sample_rate(0.1)
            .init::<B>(&device)
            .unwrap();
        let embeddings =
            Tensor::<B, 2>::random([128, 512], Distribution::Normal(0.0, 1.0), &device);
        let labels: Vec<usize> = (0..128).map(|i| (i * 7919) % classes).collect();
        let out = head.forward(embeddings, &labels, 0).unwrap();
        let grads = out.loss.backward();
        let mut sgd = SampledSgdConfig::default().init().unwrap();
        let mut current = head.clone();
        group.bench_function(BenchmarkId::new("partial_fc_0.1", classes), |b| {
            b.iter(|| {
                current =
                    current
                        .clone()
                        .step_sampled(&grads, &out.sample, &out.centres, &mut sgd, 0.1);
                let _ = current.centres.val().slice([0..1, 0..1]).into_data();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, heads, sampled_step);
criterion_main!(benches);
