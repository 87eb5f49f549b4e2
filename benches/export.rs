//! Export time and the exported model's latency on our own runtime: w600k_mbf (imported) to
//! ONNX and to `.pth`, and its batch-1 embedding on flex, f32. ONNX Runtime's latency on the
//! exported file is measured beside it by tools/bench_peers_export.py (tools/bench_export.sh).

use std::time::Duration;

use burn::tensor::{Tensor, TensorData};
use criterion::{criterion_group, criterion_main, Criterion};
use iresnet::export::{self, OnnxOptions};
use iresnet::{Backbone, Describe};

type B = burn::backend::Flex;

fn export_and_embed(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let net = iresnet::import::import_auto::<B>(
        &root.join("datasets/cache/models/w600k_mbf.onnx"),
        &Default::default(),
    )
    .expect("run python3 datasets/fetch_real.py first");
    let mut group = c.benchmark_group("export_w600k_mbf");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(6));
    group.bench_function("onnx", |b| {
        b.iter(|| export::to_onnx(&net.dataflow(), "mbf", &OnnxOptions::default()).unwrap())
    });
    group.bench_function("pth", |b| b.iter(|| export::state_dict(&net.dataflow())));
    group.finish();
    let x = Tensor::<B, 4>::from_data(
        TensorData::new(vec![0.1f32; 3 * 112 * 112], [1, 3, 112, 112]),
        &Default::default(),
    );
    let mut group = c.benchmark_group("embed_w600k_mbf");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(6));
    group.bench_function("batch1_flex_f32", |b| b.iter(|| net.embed(x.clone())));
    group.finish();
}

criterion_group!(benches, export_and_embed);
criterion_main!(benches);
