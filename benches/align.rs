//! Face alignment: per-face similarity estimate + 112x112 bilinear warp from a 640x480 image,
//! the pair insightface's `norm_crop` runs (skimage + OpenCV); and a batch of 64 faces on rayon.
//!
//! cargo bench -p arcface-benches --bench align
//! Side by side with skimage + OpenCV (tools/bench_peers_align.py): docs/performance.md.

use arcface_benches::{synthetic_photo, FACE_LANDMARKS};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use face_align::{
    align_batch, align_face, estimate_similarity, warp_affine, Interpolation, Point, Template,
};

fn align(c: &mut Criterion) {
    let photo = synthetic_photo(640, 480);
    let landmarks: Vec<Point> = FACE_LANDMARKS.iter().map(|&p| p.into()).collect();
    let template = Template::arcface(112).unwrap();
    let m = estimate_similarity(&landmarks, &template.points).unwrap();
    let mut group = c.benchmark_group("align_640x480");
    group.bench_function("estimate_and_warp", |b| {
        b.iter(|| align_face(&photo, &landmarks, &template, Interpolation::Bilinear).unwrap())
    });
    group.bench_function("estimate", |b| {
        b.iter(|| estimate_similarity(&landmarks, &template.points).unwrap())
    });
    group.bench_function("warp_bilinear", |b| {
        b.iter(|| warp_affine(&photo, &m, 112, 112, Interpolation::Bilinear).unwrap())
    });
    group.bench_function("warp_bicubic", |b| {
        b.iter(|| warp_affine(&photo, &m, 112, 112, Interpolation::Bicubic).unwrap())
    });
    let faces: Vec<(&image::RgbImage, Vec<Point>)> = (0..64)
        .map(|i| {
            let d = (i % 8) as f32 * 20.0;
            (
                &photo,
                landmarks
                    .iter()
                    .map(|p| Point::new(p.x + d, p.y - d / 2.0))
                    .collect(),
            )
        })
        .collect();
    group.throughput(Throughput::Elements(64));
    group.bench_function("batch_64_rayon", |b| {
        b.iter(|| align_batch(&faces, &template, Interpolation::Bilinear))
    });
    group.finish();
}

criterion_group!(benches, align);
criterion_main!(benches);
