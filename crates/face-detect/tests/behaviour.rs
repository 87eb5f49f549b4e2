//! Bad weights, odd image sizes and the resize option.

use face_detect::{DetectError, FaceDetector, RetinaFace, RetinaFaceConfig};
use test_support::{fixture, real_data};

type B = burn::backend::Flex;

fn load(config: RetinaFaceConfig) -> Result<RetinaFace<B>, DetectError> {
    RetinaFace::load(
        &real_data().join("models/retinaface_mnet025.pth"),
        config,
        &Default::default(),
    )
}

#[test]
fn bad_weight_files_are_clear_errors() {
    let dev = Default::default();
    let missing = RetinaFace::<B>::load("no/such.pth".as_ref(), RetinaFaceConfig::default(), &dev);
    assert!(matches!(missing, Err(DetectError::Weights { .. })));
    let dir = std::env::temp_dir().join(format!("face-detect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.pth");
    std::fs::write(&garbage, b"this is not a checkpoint").unwrap();
    let err = RetinaFace::<B>::load(&garbage, RetinaFaceConfig::default(), &dev)
        .err()
        .unwrap();
    assert!(matches!(err, DetectError::Weights { .. }), "{err}");
    // A real PyTorch checkpoint of another network: the first RetinaFace tensor is missing.
    let other = fixture("backbones/tiny_iresnet.pth");
    let err = RetinaFace::<B>::load(&other, RetinaFaceConfig::default(), &dev)
        .err()
        .unwrap();
    assert!(
        matches!(&err, DetectError::MissingWeight(name) if name == "body.stage1.0.0.weight"),
        "{err}"
    );
}

#[test]
fn impossible_configs_are_rejected() {
    for config in [
        RetinaFaceConfig {
            confidence: 1.5,
            ..Default::default()
        },
        RetinaFaceConfig {
            nms_iou: 0.0,
            ..Default::default()
        },
        RetinaFaceConfig {
            top_k: 0,
            ..Default::default()
        },
        RetinaFaceConfig {
            max_side: Some(0),
            ..Default::default()
        },
    ] {
        assert!(matches!(load(config), Err(DetectError::Config(_))));
    }
}

#[test]
fn any_image_size_runs_and_empty_images_are_errors() {
    let det = load(RetinaFaceConfig::default()).unwrap();
    assert!(matches!(
        det.detect(&image::RgbImage::new(0, 0)),
        Err(DetectError::ImageSize(0, 0))
    ));
    for (w, h) in [(1, 1), (7, 5), (33, 17), (101, 250)] {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([120, 110, 100]));
        let faces = det.detect(&img).unwrap();
        assert!(faces.is_empty(), "{w}x{h}: {faces:?}");
    }
}

/// Downscaling for speed finds the same faces, mapped back to the original pixels.
#[test]
fn resizing_finds_the_same_faces() {
    let photo = image::open(real_data().join("decoded/t1.png"))
        .unwrap()
        .to_rgb8();
    let full = load(RetinaFaceConfig::default())
        .unwrap()
        .detect(&photo)
        .unwrap();
    let small = load(RetinaFaceConfig {
        max_side: Some(640),
        ..Default::default()
    })
    .unwrap()
    .detect(&photo)
    .unwrap();
    assert_eq!(full.len(), small.len());
    for a in &full {
        // Scores are close, so the order may differ: pair by the nearest box.
        let b = small
            .iter()
            .min_by(|p, q| {
                let d = |d: &&face_detect::Detection| {
                    (d.bbox.x1 - a.bbox.x1).abs() + (d.bbox.y1 - a.bbox.y1).abs()
                };
                d(p).total_cmp(&d(q))
            })
            .unwrap();
        // Half resolution: agreement to within a tenth of the face's size.
        let tol = 0.1 * a.bbox.width();
        assert!(
            (a.bbox.x1 - b.bbox.x1).abs() < tol && (a.bbox.y2 - b.bbox.y2).abs() < tol,
            "{a:?} vs {b:?}"
        );
        for (p, q) in a.landmarks.iter().zip(&b.landmarks) {
            assert!(p.distance(*q) < tol, "{p:?} vs {q:?}");
        }
    }
}
