//! Against skimage 0.26.0 (similarity estimates) and OpenCV 5.0.0 (warps), from
//! `tools/make_align_fixtures.py`; the OpenCV crops are rewritten into datasets/cache/warps by
//! `datasets/fetch_real.py` (hash-checked) so no photo pixels live in the repository.

use face_align::{estimate_similarity_f64, warp_affine, Affine, Interpolation, Template};
use serde_json::Value;
use test_support::{read_json, real_data};

fn points(v: &Value) -> Vec<[f64; 2]> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| [p[0].as_f64().unwrap(), p[1].as_f64().unwrap()])
        .collect()
}

fn matrix(v: &Value) -> [[f64; 3]; 2] {
    let row = |r: usize| {
        let r = &v[r];
        [
            r[0].as_f64().unwrap(),
            r[1].as_f64().unwrap(),
            r[2].as_f64().unwrap(),
        ]
    };
    [row(0), row(1)]
}

fn assert_close(ours: &Affine, theirs: [[f64; 3]; 2], what: &str) {
    for (r, (row_ours, row_theirs)) in ours.m.iter().zip(&theirs).enumerate() {
        for (c, (&a, &b)) in row_ours.iter().zip(row_theirs).enumerate() {
            let tol = 1e-6 * b.abs().max(1.0);
            assert!(
                (a - b).abs() <= tol,
                "{what}: [{r}][{c}] ours {a}, skimage {b}"
            );
        }
    }
}

#[test]
fn similarity_matches_skimage_on_random_points() {
    let fx = read_json("align/similarity.json");
    let cases = fx["random"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let ours = estimate_similarity_f64(&points(&case["src"]), &points(&case["dst"]))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_close(&ours, matrix(&case["matrix"]), name);
    }
}

#[test]
fn similarity_matches_skimage_on_real_landmarks() {
    let fx = read_json("align/similarity.json");
    for case in fx["real"].as_array().unwrap() {
        let what = format!(
            "{} face {} at {}",
            case["photo"], case["face"], case["size"]
        );
        let ours = estimate_similarity_f64(&points(&case["landmarks"]), &points(&case["template"]))
            .unwrap();
        assert_close(&ours, matrix(&case["matrix"]), &what);
    }
}

#[test]
fn templates_match_insightface_estimate_norm() {
    let fx = read_json("align/similarity.json");
    for size in [112u32, 224, 128] {
        let case = fx["real"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["size"] == size)
            .unwrap();
        let theirs = points(&case["template"]);
        let ours = Template::arcface(size).unwrap();
        assert_eq!((ours.width, ours.height), (size, size));
        for (p, q) in ours.points.iter().zip(&theirs) {
            assert!(
                (p.x as f64 - q[0]).abs() < 1e-4 && (p.y as f64 - q[1]).abs() < 1e-4,
                "{size}: {p:?} vs {q:?}"
            );
        }
    }
    assert!(Template::arcface(100).is_err());
    assert!(Template::arcface(0).is_err());
}

fn rgb_sha256(img: &image::RgbImage) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(img.as_raw()))
}

struct Diff {
    mean: f64,
    max: i32,
    /// Share of values that differ at all.
    changed: f64,
}

fn diff(a: &image::RgbImage, b: &image::RgbImage) -> Diff {
    let d: Vec<i32> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (x as i32 - y as i32).abs())
        .collect();
    Diff {
        mean: d.iter().sum::<i32>() as f64 / d.len() as f64,
        max: *d.iter().max().unwrap(),
        changed: d.iter().filter(|&&v| v != 0).count() as f64 / d.len() as f64,
    }
}

/// Our warps against OpenCV's crops of the real photos. From the pixels OpenCV decoded, the warp
/// itself must agree to 1 grey level everywhere; from the photo files as our `image` decoder reads
/// them (its JPEG decoder rounds some pixels differently from libjpeg-turbo), the mean difference
/// must stay under 1 grey level and the max under 4 for the interpolating filters (nearest copies
/// single pixels, so it shows the decoder's own differences, up to 8 levels on t1.jpg).
#[test]
fn warps_match_opencv_on_real_photos() {
    let cache = real_data();
    let fx = read_json("align/similarity.json");
    let warps = fx["warps"].as_array().unwrap();
    let mut identical = 0;
    for w in warps {
        let file = w["file"].as_str().unwrap();
        let photo_name = w["photo"].as_str().unwrap();
        let reference = image::open(cache.join("warps").join(file))
            .unwrap_or_else(|e| panic!("{file}: {e} (datasets/fetch_real.py makes it)"))
            .to_rgb8();
        assert_eq!(
            rgb_sha256(&reference),
            w["sha256"].as_str().unwrap(),
            "{file} is not the fixture's OpenCV crop"
        );
        let interpolation = match w["interpolation"].as_str().unwrap() {
            "bilinear" => Interpolation::Bilinear,
            "nearest" => Interpolation::Nearest,
            _ => Interpolation::Bicubic,
        };
        let m = Affine::new(matrix(&w["matrix"]));
        let stem = photo_name.rsplit_once('.').unwrap().0;
        let decoded = image::open(cache.join("decoded").join(format!("{stem}.png")))
            .unwrap()
            .to_rgb8();
        let same_pixels = diff(
            &warp_affine(&decoded, &m, 112, 112, interpolation).unwrap(),
            &reference,
        );
        let photo = image::open(cache.join("photos").join(photo_name))
            .unwrap()
            .to_rgb8();
        let from_file = diff(
            &warp_affine(&photo, &m, 112, 112, interpolation).unwrap(),
            &reference,
        );
        eprintln!(
            "{file}: same source pixels mean {:.5} max {}; from the file mean {:.4} max {}",
            same_pixels.mean, same_pixels.max, from_file.mean, from_file.max
        );
        if interpolation == Interpolation::Nearest {
            // A source coordinate exactly half-way between pixels may round the other way.
            assert!(
                same_pixels.changed < 1e-3,
                "{file}: {} of values differ",
                same_pixels.changed
            );
        } else {
            assert!(
                same_pixels.max <= 1 && same_pixels.mean < 0.01,
                "{file}: warp differs from OpenCV's"
            );
        }
        assert!(from_file.mean <= 1.0, "{file}: mean {}", from_file.mean);
        if interpolation != Interpolation::Nearest {
            assert!(from_file.max <= 4, "{file}: max {}", from_file.max);
        }
        identical += (same_pixels.max == 0) as usize;
    }
    eprintln!("{identical} of {} crops identical to OpenCV's", warps.len());
}
