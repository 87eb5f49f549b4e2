//! Against the reference PyTorch RetinaFace (facesdk 0.0.8's code and weights, torch 2.15.0),
//! from `tools/make_retinaface_fixture.py`, on real registry photos: boxes and landmarks within
//! 1 px, scores within 1e-3.

use face_detect::{num_priors, Detection, FaceDetector, RetinaFace, RetinaFaceConfig};
use serde_json::Value;
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

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
}

fn corners(d: &Detection) -> [f32; 4] {
    [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2]
}

fn reference_box(face: &Value) -> [f32; 4] {
    std::array::from_fn(|i| face["box"][i].as_f64().unwrap() as f32)
}

/// Matches reference and our detections one to one; faces within `margin` of the threshold
/// may exist on one side only (a score difference of 1e-3 can move them across it).
fn compare(
    name: &str,
    ours: &[Detection],
    theirs: &[Value],
    threshold: f32,
    margin: f32,
) -> (f32, f32, f32) {
    let (mut worst_box, mut worst_lm, mut worst_score) = (0.0f32, 0.0f32, 0.0f32);
    let mut used = vec![false; ours.len()];
    for face in theirs {
        let score = face["score"].as_f64().unwrap() as f32;
        let rb = reference_box(face);
        let best = ours
            .iter()
            .enumerate()
            .filter(|(i, _)| !used[*i])
            .max_by(|a, b| iou(&corners(a.1), &rb).total_cmp(&iou(&corners(b.1), &rb)));
        let Some((i, d)) = best.filter(|(_, d)| iou(&corners(d), &rb) > 0.5) else {
            assert!(
                score < threshold + margin,
                "{name}: reference face {rb:?} ({score}) not found"
            );
            continue;
        };
        used[i] = true;
        for (a, b) in corners(d).iter().zip(&rb) {
            worst_box = worst_box.max((a - b).abs());
        }
        for (p, q) in d
            .landmarks
            .iter()
            .zip(face["landmarks"].as_array().unwrap())
        {
            worst_lm = worst_lm
                .max((p.x - q[0].as_f64().unwrap() as f32).abs())
                .max((p.y - q[1].as_f64().unwrap() as f32).abs());
        }
        worst_score = worst_score.max((d.score - score).abs());
    }
    for (d, used) in ours.iter().zip(&used) {
        assert!(
            *used || d.score < threshold + margin,
            "{name}: extra face {:?} ({})",
            d.bbox,
            d.score
        );
    }
    (worst_box, worst_lm, worst_score)
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
