//! Matching detections against a reference detector's fixture, shared by the parity tests.

use face_detect::Detection;
use serde_json::Value;

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
pub fn compare(
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
