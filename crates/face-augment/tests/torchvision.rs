//! The deterministic cores against torchvision 0.29.2's functional outputs on real aligned faces
//! (`tools/make_augment_fixtures.py`, torch 2.15.0): every output is recomputed whole and checked
//! at the fixture's 512 positions (within 1 grey level for uint8 outputs, 1e-5 for tensors), its
//! mean, and, for uint8 outputs, how many of the sampled values are exact.

use face_augment::functional as f;
use face_augment::Chw;
use serde_json::Value;
use test_support::{read_json, real_data};

const IMAGENET: ([f32; 3], [f32; 3]) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);

/// Our output in torchvision's layout (CHW, flattened) as f64.
fn chw_u8(img: &image::RgbImage) -> Vec<f64> {
    let n = (img.width() * img.height()) as usize;
    let mut out = vec![0.0; 3 * n];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * n + i] = p[c] as f64;
        }
    }
    out
}

fn chw_f32(t: &Chw) -> Vec<f64> {
    t.data.iter().map(|&v| v as f64).collect()
}

fn ours(op: &str, img: &image::RgbImage, erase: [usize; 4]) -> (Vec<f64>, bool) {
    let normalized = |mean, std| {
        let mut t = f::to_tensor(img);
        f::normalize(&mut t, mean, std);
        t
    };
    let u8 = |out: image::RgbImage| (chw_u8(&out), true);
    match op {
        "hflip" => u8(f::hflip(img)),
        "greyscale" => u8(f::greyscale(img)),
        "to_tensor_normalize_imagenet" => (chw_f32(&normalized(IMAGENET.0, IMAGENET.1)), false),
        "to_tensor_normalize_insightface" => (chw_f32(&normalized([0.5; 3], [0.5; 3])), false),
        "normalize_imagenet_erase" => {
            let mut t = normalized(IMAGENET.0, IMAGENET.1);
            f::erase(&mut t, erase[0], erase[1], erase[2], erase[3], || 0.0);
            (chw_f32(&t), false)
        }
        _ => {
            let (kind, value) = op.split_once('_').unwrap();
            let v: f64 = value.parse().unwrap();
            u8(match kind {
                "rotate" => f::rotate(img, v),
                "brightness" => f::adjust_brightness(img, v),
                "contrast" => f::adjust_contrast(img, v),
                "saturation" => f::adjust_saturation(img, v),
                "hue" => f::adjust_hue(img, v as f32),
                other => panic!("unknown op {other}"),
            })
        }
    }
}

#[test]
fn deterministic_cores_match_torchvision_on_real_faces() {
    let faces = real_data().join("faces");
    let fx = read_json("augment/torchvision_functional.json");
    let positions: Vec<usize> = fx["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let erase: Vec<usize> = fx["erase"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let mut checked = 0;
    for (name, outputs) in fx["faces"].as_object().unwrap() {
        let img = image::open(faces.join(name)).unwrap().to_rgb8();
        for (op, expected) in outputs.as_object().unwrap() {
            let (out, is_u8) = ours(op, &img, [erase[0], erase[1], erase[2], erase[3]]);
            let values: Vec<f64> = expected["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(Value::as_f64)
                .map(Option::unwrap)
                .collect();
            let tol = if is_u8 { 1.0 } else { 1e-5 };
            let mut exact = 0;
            for (&p, &want) in positions.iter().zip(&values) {
                let got = out[p];
                assert!(
                    (got - want).abs() <= tol,
                    "{name} {op}: value {got} at {p}, torchvision {want}"
                );
                exact += (got == want) as usize;
            }
            let mean = out.iter().sum::<f64>() / out.len() as f64;
            let want_mean = expected["mean"].as_f64().unwrap();
            let mean_tol = if is_u8 { 0.05 } else { 1e-5 };
            assert!(
                (mean - want_mean).abs() <= mean_tol,
                "{name} {op}: mean {mean}, torchvision {want_mean}"
            );
            if is_u8 && exact < values.len() {
                eprintln!(
                    "{name} {op}: {} of {} sampled values off by one",
                    values.len() - exact,
                    values.len()
                );
            }
            if is_u8 {
                // Off-by-one values are float32 rounding at .5 boundaries: rare.
                assert!(
                    exact * 100 >= values.len() * 98,
                    "{name} {op}: only {exact} of {} exact",
                    values.len()
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * 16);
}
