//! Degenerate input, the quality gate on real aligned faces, and the parallel batch API.

use face_align::{
    align_batch, align_face, assess, estimate_similarity, quality::landmark_problem, sharpness,
    AlignError, BBox, Interpolation, Point, QualityConfig, Rejection, Template,
};
use image::RgbImage;
use test_support::real_data;

fn face_points() -> [Point; 5] {
    [
        Point::new(300.0, 200.0),
        Point::new(340.0, 201.0),
        Point::new(320.0, 225.0),
        Point::new(303.0, 250.0),
        Point::new(337.0, 251.0),
    ]
}

#[test]
fn degenerate_landmarks_are_errors() {
    let t = Template::arcface(112).unwrap();
    let same = [Point::new(5.0, 5.0); 5];
    assert_eq!(
        estimate_similarity(&same, &t.points),
        Err(AlignError::Degenerate("source"))
    );
    let mut nan = face_points();
    nan[2].x = f32::NAN;
    assert!(matches!(
        estimate_similarity(&nan, &t.points),
        Err(AlignError::NonFinite {
            which: "source",
            index: 2,
            ..
        })
    ));
    assert_eq!(
        estimate_similarity(&face_points()[..1], &t.points[..1]),
        Err(AlignError::TooFewPoints(1))
    );
    assert!(matches!(
        estimate_similarity(&face_points(), &t.points[..4]),
        Err(AlignError::LengthMismatch { src: 5, dst: 4 })
    ));
    assert_eq!(
        estimate_similarity(&face_points(), &same),
        Err(AlignError::Degenerate("destination"))
    );
    let img = RgbImage::new(64, 64);
    assert!(align_face(&img, &same, &t, Interpolation::Bilinear).is_err());
}

#[test]
fn similarity_recovers_a_known_transform() {
    // Rotate by 0.3 rad, scale 1.7, shift (12, -4): the estimate must give it back exactly.
    let (c, s, k) = (0.3f64.cos(), 0.3f64.sin(), 1.7);
    let src = face_points();
    let dst: Vec<Point> = src
        .iter()
        .map(|p| {
            let (x, y) = (p.x as f64, p.y as f64);
            Point::new(
                (k * (c * x - s * y) + 12.0) as f32,
                (k * (s * x + c * y) - 4.0) as f32,
            )
        })
        .collect();
    let m = estimate_similarity(&src, &dst).unwrap();
    assert!((m.scale() - 1.7).abs() < 1e-5, "{}", m.scale());
    assert!((m.rotation() - 0.3).abs() < 1e-5);
    for (p, q) in src.iter().zip(&dst) {
        assert!(m.apply(*p).distance(*q) < 1e-2);
    }
    let back = m.inverse().unwrap();
    assert!(back.apply(m.apply(src[0])).distance(src[0]) < 1e-3);
}

fn blur(img: &RgbImage, passes: usize) -> RgbImage {
    let mut out = img.clone();
    for _ in 0..passes {
        let prev = out.clone();
        for y in 1..img.height() - 1 {
            for x in 1..img.width() - 1 {
                let mut acc = [0u32; 3];
                for dy in 0..3 {
                    for dx in 0..3 {
                        let p = prev.get_pixel(x + dx - 1, y + dy - 1);
                        for c in 0..3 {
                            acc[c] += p[c] as u32;
                        }
                    }
                }
                out.put_pixel(x, y, image::Rgb(acc.map(|v| (v / 9) as u8)));
            }
        }
    }
    out
}

/// The real aligned faces (insightface's norm_crop of the registry photos) are mostly sharp;
/// blurring them drops every one below the default 0.7 and the gate says so with the value.
#[test]
fn sharpness_separates_real_faces_from_blurred_ones() {
    let faces = real_data().join("faces");
    let (mut modern, mut solvay) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(&faces).unwrap() {
        let path = entry.unwrap().path();
        let img = image::open(&path).unwrap().to_rgb8();
        let original = sharpness(&img);
        let blurred = sharpness(&blur(&img, 3));
        assert!(
            blurred < original,
            "{}: blur raised sharpness",
            path.display()
        );
        assert!(
            blurred < 0.7,
            "{}: blurred face still scores {blurred}",
            path.display()
        );
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("solvay") {
            solvay.push(original);
        } else {
            modern.push(original);
        }
        let report = assess(
            None,
            None,
            &face_points(),
            &blur(&img, 3),
            &QualityConfig::default(),
        );
        assert!(report
            .rejections
            .iter()
            .any(|r| matches!(r, Rejection::Blurry { sharpness, min } if *sharpness == report.sharpness && *min == 0.7)));
    }
    let median = |v: &mut Vec<f32>| {
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    };
    let (m, s) = (median(&mut modern), median(&mut solvay));
    eprintln!("sharpness: modern photos {modern:?}, 1927 group photo {solvay:?}");
    // Faces from modern photos pass the default gate; the 1927 photo's small faces mostly do not.
    assert!(m >= 0.7, "median sharpness of modern-photo faces {m}");
    assert!(
        s < 0.7,
        "median sharpness of the 1927 group photo's faces {s}"
    );
    assert!(modern.iter().all(|&v| v > 0.6), "{modern:?}");
}

#[test]
fn every_rule_reports_what_it_measured() {
    let crop = RgbImage::from_fn(112, 112, |x, y| {
        image::Rgb([((x * 37 + y * 91) % 256) as u8; 3])
    });
    let config = QualityConfig {
        min_interocular: Some(60.0),
        ..QualityConfig::default()
    };
    let small = BBox::new(280.0, 170.0, 360.0, 270.0);
    let report = assess(Some(small), Some(0.5), &face_points(), &crop, &config);
    let rules: Vec<&str> = report.rejections.iter().map(Rejection::rule).collect();
    assert_eq!(
        rules,
        ["box_too_small", "eyes_too_close", "low_score"],
        "{report:?}"
    );
    assert_eq!(report.box_side, Some(80.0));
    assert!(report.rejections[0].to_string().contains("80.0 px < 128"));
    assert!(report.rejections[1].to_string().contains("40.0 px < 60"));
    assert!(report.rejections[2].to_string().contains("0.500 < 0.8"));

    let big = BBox::new(0.0, 0.0, 200.0, 240.0);
    let ok = assess(
        Some(big),
        Some(0.99),
        &face_points(),
        &crop,
        &QualityConfig::default(),
    );
    assert!(ok.accepted(), "{ok:?}");
}

#[test]
fn flipped_or_scrambled_landmarks_are_rejected() {
    let good = face_points();
    assert_eq!(landmark_problem(&good), None);
    let mut upside_down = good;
    for p in &mut upside_down {
        p.y = 500.0 - p.y;
    }
    assert!(landmark_problem(&upside_down)
        .unwrap()
        .contains("mirrored or upside-down"));
    let mut swapped_eyes = good;
    swapped_eyes.swap(0, 1);
    assert!(landmark_problem(&swapped_eyes).is_some());
    let mut swapped_mouth = good;
    swapped_mouth.swap(3, 4);
    assert!(landmark_problem(&swapped_mouth)
        .unwrap()
        .contains("opposite order"));
    let mut nose_below = good;
    nose_below[2].y = 300.0;
    assert!(landmark_problem(&nose_below).unwrap().contains("nose"));
    // A rotated but valid face passes.
    let m = face_align::Affine::new([[0.8, -0.6, 100.0], [0.6, 0.8, -50.0]]);
    assert_eq!(landmark_problem(&good.map(|p| m.apply(p))), None);
}

#[test]
fn batch_alignment_equals_one_by_one_and_keeps_errors_local() {
    let photo = RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8])
    });
    let t = Template::arcface(112).unwrap();
    let mut faces: Vec<(&RgbImage, Vec<Point>)> = (0..16)
        .map(|i| {
            let shift = i as f32 * 9.0;
            (
                &photo,
                face_points()
                    .iter()
                    .map(|p| Point::new(p.x + shift, p.y - shift / 2.0))
                    .collect(),
            )
        })
        .collect();
    faces[5].1 = vec![Point::new(1.0, 1.0); 5];
    let batch = align_batch(&faces, &t, Interpolation::Bilinear);
    for (i, (result, (img, lm))) in batch.iter().zip(&faces).enumerate() {
        if i == 5 {
            assert_eq!(
                result.as_ref().unwrap_err(),
                &AlignError::Degenerate("source")
            );
            continue;
        }
        let single = align_face(img, lm, &t, Interpolation::Bilinear).unwrap();
        assert_eq!(result.as_ref().unwrap().image, single.image, "face {i}");
    }
}
