//! `Pipeline::arcface_default()` on 112x112 faces: one thread (one image after another) and all
//! threads (`run_batch` of 256 on rayon). Images per second.
//!
//! cargo bench -p arcface-benches --bench augment
//! Side by side with torchvision (tools/bench_peers_augment.py): docs/performance.md.

use arcface_benches::synthetic_photo;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use face_augment::Pipeline;

fn augment(c: &mut Criterion) {
    let pipeline = Pipeline::arcface_default();
    let minimal = Pipeline::insightface_minimal();
    let faces: Vec<image::RgbImage> = (0..256).map(|_| synthetic_photo(112, 112)).collect();
    let mut group = c.benchmark_group("augment_112");
    group.throughput(Throughput::Elements(1));
    let mut index = 0u64;
    group.bench_function("arcface_default_1_thread", |b| {
        b.iter(|| {
            index += 1;
            pipeline.run_tensor(faces[0].clone(), 7, 0, index).unwrap()
        })
    });
    group.bench_function("insightface_minimal_1_thread", |b| {
        b.iter(|| {
            index += 1;
            minimal.run_tensor(faces[0].clone(), 7, 0, index).unwrap()
        })
    });
    group.throughput(Throughput::Elements(faces.len() as u64));
    group.bench_function("arcface_default_all_threads_batch_256", |b| {
        b.iter(|| {
            index += 256;
            pipeline.run_batch(&faces, 7, 0, index)
        })
    });
    group.finish();
}

criterion_group!(benches, augment);
criterion_main!(benches);
