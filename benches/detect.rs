//! RetinaFace MobileNet-0.25 and SCRFD-500M on a 640x480 photo, batch 1, on the CPU (flex).
//!
//! cargo bench -p arcface-benches --bench detect   (needs `python3 datasets/fetch_real.py` first)
//! Side by side with the reference PyTorch model (tools/bench_peers_detect.py) and insightface's
//! SCRFD on ONNX Runtime (tools/bench_peers_export.py, via tools/bench_export.sh): docs/performance.md.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use face_detect::{FaceDetector, RetinaFace, RetinaFaceConfig, Scrfd, ScrfdConfig};

type B = burn::backend::Flex;

/// As in the `arcface` binary (and the service): mimalloc, keeping freed memory, so the
/// detectors' large activation buffers are reused rather than page-faulted in on every photo.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn detect(c: &mut Criterion) {
    iresnet::keep_freed_memory();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let weights = root.join("datasets/cache/models/retinaface_mnet025.pth");
    let detector =
        RetinaFace::<B>::load(&weights, RetinaFaceConfig::default(), &Default::default())
            .expect("run python3 datasets/fetch_real.py first");
    // A real group photo (t1.jpg as OpenCV decodes it) resized to 640x480.
    let photo = image::open(root.join("datasets/cache/decoded/t1.png"))
        .expect("fetched photo")
        .to_rgb8();
    let photo = image::imageops::resize(&photo, 640, 480, image::imageops::FilterType::Triangle);
    let faces = detector.detect(&photo).unwrap();
    assert!(faces.len() >= 5, "{} faces", faces.len());
    let mut group = c.benchmark_group("detect_retinaface_mnet025");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("640x480", |b| b.iter(|| detector.detect(&photo).unwrap()));
    group.finish();

    // SCRFD as insightface runs it: the photo letterboxed into a 640x640 input.
    let scrfd = Scrfd::<B>::load(
        &root.join("datasets/cache/models/scrfd_500m_bnkps.onnx"),
        ScrfdConfig::default(),
        &Default::default(),
    )
    .expect("run python3 datasets/fetch_real.py first");
    let faces = scrfd.detect(&photo).unwrap();
    assert!(faces.len() >= 5, "{} faces", faces.len());
    let mut group = c.benchmark_group("detect_scrfd_500m");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("640x480_in_640x640", |b| {
        b.iter(|| scrfd.detect(&photo).unwrap())
    });
    group.finish();
}

criterion_group!(benches, detect);
criterion_main!(benches);
