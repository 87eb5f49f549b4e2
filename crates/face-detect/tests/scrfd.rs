//! SCRFD-500M against insightface's own detector: insightface 0.7.3's `model_zoo/scrfd.py` on
//! ONNX Runtime (versions in the fixture), from `tools/make_scrfd_fixture.py`, on the registry
//! photos (group photos of 5 to 29 faces included): boxes and landmarks within 0.5 px.

mod common;

use common::compare;
use face_detect::{resize_linear, DetectError, FaceDetector, Scrfd, ScrfdConfig};
use test_support::{fixture, read_json, real_data};

type B = burn::backend::Flex;

fn detector() -> Scrfd<B> {
    let model = real_data().join("models/scrfd_500m_bnkps.onnx");
    Scrfd::load(&model, ScrfdConfig::default(), &Default::default()).expect("SCRFD loads")
}

fn decoded(name: &str) -> image::RgbImage {
    image::open(real_data().join("decoded").join(name))
        .unwrap()
        .to_rgb8()
}

#[test]
fn detections_match_insightface_on_real_photos() {
    let fx = read_json("detect/scrfd_500m.json");
    let threshold = fx["det_thresh"].as_f64().unwrap() as f32;
    let det = detector();
    let mut total = 0;
    for photo in fx["photos"].as_array().unwrap() {
        let name = photo["photo"].as_str().unwrap();
        let ours = det.detect(&decoded(name)).unwrap();
        let theirs = photo["faces"].as_array().unwrap();
        let (b, l, s) = compare(name, &ours, theirs, threshold, 5e-3);
        eprintln!(
            "{name}: {} faces (insightface {}), worst box {b:.3} px, landmark {l:.3} px, score {s:.2e}",
            ours.len(),
            theirs.len()
        );
        assert!(b <= 0.5 && l <= 0.5, "{name}: box {b} px, landmarks {l} px");
        assert!(s <= 5e-3, "{name}: score differs by {s}");
        total += theirs.len();
    }
    assert!(total >= 60, "only {total} reference faces");
}

/// The network alone, on the letterbox insightface builds: the resize's bytes and the raw
/// outputs at the most confident anchors of every stride.
#[test]
fn raw_outputs_match_onnx_runtime() {
    let fx = read_json("detect/scrfd_500m.json");
    let raw = &fx["raw"];
    let image = decoded(raw["photo"].as_str().unwrap());
    let size: Vec<u32> = raw["resized"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let small = resize_linear(&image, size[0], size[1]);
    let sum: i64 = small.as_raw().iter().map(|&v| i64::from(v)).sum();
    let want = raw["resized_sum"].as_i64().unwrap();
    assert_eq!(sum, want, "the resize is OpenCV's to the byte");
    let (outs, _) = detector().raw_outputs(&image).unwrap();
    let shapes: Vec<Vec<usize>> = outs.iter().map(|o| o.shape.clone()).collect();
    let want_shapes: Vec<Vec<usize>> = serde_json::from_value(raw["outputs"].clone()).unwrap();
    assert_eq!(shapes, want_shapes);
    let mut worst = 0.0f32;
    for pick in raw["picks"].as_array().unwrap() {
        let (level, k) = (
            pick["level"].as_u64().unwrap() as usize,
            pick["anchor"].as_u64().unwrap() as usize,
        );
        let close =
            |ours: f32, theirs: &serde_json::Value| (ours - theirs.as_f64().unwrap() as f32).abs();
        worst = worst.max(close(outs[level].data[k], &pick["score"]));
        for (i, v) in pick["bbox"].as_array().unwrap().iter().enumerate() {
            worst = worst.max(close(outs[level + 3].data[4 * k + i], v));
        }
        for (i, v) in pick["kps"].as_array().unwrap().iter().enumerate() {
            worst = worst.max(close(outs[level + 6].data[10 * k + i], v));
        }
    }
    eprintln!("raw outputs: worst difference {worst:.2e}, resize byte sum {sum} vs {want}");
    assert!(worst < 2e-2, "raw outputs differ by {worst} (stride units)");
}

#[test]
fn bad_models_and_settings_are_clear_errors() {
    let dev = Default::default();
    let missing = Scrfd::<B>::load("no/such.onnx".as_ref(), ScrfdConfig::default(), &dev);
    assert!(matches!(missing, Err(DetectError::Model { .. })));
    // A recogniser is an ONNX file too, but not a detector: refused by its outputs or operators.
    let other = fixture("backbones/tiny_iresnet.onnx");
    let err = Scrfd::<B>::load(&other, ScrfdConfig::default(), &dev)
        .err()
        .unwrap();
    assert!(matches!(err, DetectError::Model { .. }), "{err}");
    for config in [
        ScrfdConfig {
            det_thresh: 1.0,
            ..Default::default()
        },
        ScrfdConfig {
            nms_iou: 0.0,
            ..Default::default()
        },
        ScrfdConfig {
            input_size: [640, 100],
            ..Default::default()
        },
    ] {
        let model = real_data().join("models/scrfd_500m_bnkps.onnx");
        assert!(matches!(
            Scrfd::<B>::load(&model, config, &dev),
            Err(DetectError::Config(_))
        ));
    }
    let det = detector();
    assert!(matches!(
        det.detect(&image::RgbImage::new(0, 3)),
        Err(DetectError::ImageSize(0, 3))
    ));
    // Tiny and extreme aspect ratios run and find nothing in flat grey.
    for (w, h) in [(1, 1), (5000, 3), (3, 900)] {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([120, 110, 100]));
        match det.detect(&img) {
            Ok(faces) => assert!(faces.is_empty(), "{w}x{h}: {faces:?}"),
            Err(e) => assert!(matches!(e, DetectError::ImageSize(..)), "{w}x{h}: {e}"),
        }
    }
}
