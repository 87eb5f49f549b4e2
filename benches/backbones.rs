//! Backbone forward pass on the CPU (flex): batch-1 latency and batch-32 throughput.
//!
//! cargo bench -p arcface-benches --bench backbones
//! Side-by-side figures with PyTorch and ONNX Runtime: docs/performance.md.

use arcface_benches::face_batch;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use iresnet::{Backbone, BackboneConfig, CpuBackend as B};

fn backbones(c: &mut Criterion) {
    let device = Default::default();
    let archs = [
        ("r18", BackboneConfig::from_name("r18").unwrap()),
        ("r50", BackboneConfig::from_name("r50").unwrap()),
        // The released w600k_mbf's architecture (conv-fc head), which ONNX Runtime is timed on.
        ("mbf_w600k", BackboneConfig::from_name("mbf_w600k").unwrap()),
    ];
    let mut group = c.benchmark_group("backbone_forward");
    group.sample_size(10);
    for (name, spec) in archs {
        let model = spec.init::<B>(&device).unwrap();
        for batch in [1usize, 32] {
            let input = face_batch::<B>(batch, &device);
            // Warm-up outside the measurement (first calls allocate and tune).
            let _ = model.embed(input.clone()).into_data();
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::new(name, batch), &input, |b, input| {
                b.iter(|| model.embed(input.clone()).into_data())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, backbones);
criterion_main!(benches);
