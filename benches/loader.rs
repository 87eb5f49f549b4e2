//! The training input pipeline: decode from `.rec` + `arcface_default()` augmentation + batching
//! (128), on all cores and on one. Images per second; docs/performance.md turns the one-core rate
//! into the cores needed to feed a GPU at 3,000 images/s.
//!
//! cargo bench -p arcface-benches --bench loader

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use face_augment::Pipeline;
use face_data::{
    pack_dataset, Loader, LoaderConfig, RecordDataset, SyntheticConfig, SyntheticFaces,
};

const IMAGES: usize = 1024;

fn loader(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("arcface-bench-loader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join("train.rec");
    // The synthetic set, JPEG-like in size would be fairer to real data; PNG is what we pack.
    let faces = SyntheticFaces::train(SyntheticConfig {
        identities: 64,
        per_identity: IMAGES / 64,
        ..Default::default()
    })
    .unwrap();
    pack_dataset(&faces, &rec, |_| {}).unwrap();
    let make = |workers| {
        Loader::new(
            RecordDataset::open(&rec).unwrap(),
            Pipeline::arcface_default(),
            LoaderConfig {
                batch_size: 128,
                prefetch: 4,
                workers,
                ..LoaderConfig::default()
            },
        )
        .unwrap()
    };
    let mut group = c.benchmark_group("loader_rec_arcface_default");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(IMAGES as u64));
    let all = make(0);
    let mut epoch = 0;
    group.bench_function("all_cores", |b| {
        b.iter(|| {
            epoch += 1;
            all.epoch(epoch)
                .map(|b| b.unwrap().labels.len())
                .sum::<usize>()
        })
    });
    let single = make(1);
    group.bench_function("one_core", |b| {
        b.iter(|| {
            epoch += 1;
            single
                .epoch(epoch)
                .map(|b| b.unwrap().labels.len())
                .sum::<usize>()
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, loader);
criterion_main!(benches);
