//! Against the reference PyTorch RetinaFace (facesdk 0.0.8's code and weights, torch 2.15.0),
//! from `tools/make_retinaface_fixture.py`, on real registry photos: boxes and landmarks within
//! 1 px, scores within 1e-3.

mod common;

use common::compare;
use face_detect::{num_priors, FaceDetector, RetinaFace, RetinaFaceConfig};
use test_support::{read_json, real_data};

type B = burn::backend::Flex;

fn detector(confidence: f32) -> RetinaFace<B> {
    let weights = real_data().join("models/retinaface_mnet025.pth");
    let config = RetinaFaceConfig {
        confidence,
        ..RetinaFaceConfig::default()
    };
    RetinaFace::load(&weights, config, &Default::default()).expect("weights load")
}

#[test]
fn detections_match_the_reference_on_real_photos() {
    let cache = real_data();
    let fx = read_json("detect/retinaface_mnet025.json");
    let threshold = fx["threshold"].as_f64().unwrap() as f32;
    let det = detector(threshold);
    let mut total = 0;
    for (name, photo) in fx["photos"].as_object().unwrap() {
        // The pixels the reference saw (OpenCV's decode, saved losslessly by fetch_real.py).
        let stem = name.rsplit_once('.').unwrap().0;
        let image = image::open(cache.join("decoded").join(format!("{stem}.png")))
            .unwrap()
            .to_rgb8();
        let (w, h) = (image.width() as usize, image.height() as usize);
        assert_eq!(
            num_priors(h, w),
            photo["num_priors"].as_u64().unwrap() as usize
        );
        let ours = det.detect(&image).unwrap();
        let theirs = photo["faces"].as_array().unwrap();
        let (b, l, s) = compare(name, &ours, theirs, threshold, 2e-3);
        eprintln!("{name}: {} faces (reference {}), worst box {b:.3} px, landmark {l:.3} px, score {s:.2e}", ours.len(), theirs.len());
        assert!(b <= 1.0 && l <= 1.0, "{name}: box {b} px, landmarks {l} px");
        assert!(s <= 1e-3, "{name}: score differs by {s}");
        total += theirs.len();
    }
    assert!(total > 100, "only {total} reference faces");
}

/// From the photo files as the `image` crate decodes them (its JPEG decoder differs from
/// libjpeg-turbo by a grey level here and there), every confident face is still found.
#[test]
fn detections_from_the_files_agree_too() {
    let cache = real_data();
    let fx = read_json("detect/retinaface_mnet025.json");
    let det = detector(0.5);
    for name in ["gdp.jpg", "t1.jpg"] {
        let image = image::open(cache.join("photos").join(name))
            .unwrap()
            .to_rgb8();
        let ours = det.detect(&image).unwrap();
        let theirs = fx["photos"][name]["faces"].as_array().unwrap();
        let (b, l, _) = compare(name, &ours, theirs, 0.5, 0.05);
        eprintln!("{name} from the JPEG: worst box {b:.3} px, landmarks {l:.3} px");
        assert!(b <= 3.0 && l <= 3.0);
    }
}
