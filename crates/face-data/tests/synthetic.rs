//! The synthetic identities: deterministic, distinct identities, known landmarks, and a hard
//! raw-pixel baseline on held-out identities.

use face_data::{render, verification_pairs, FaceDataset, SyntheticConfig, SyntheticFaces};

fn config() -> SyntheticConfig {
    SyntheticConfig {
        identities: 20,
        per_identity: 5,
        held_out: 200,
        ..Default::default()
    }
}

#[test]
fn rendering_is_a_pure_function_of_seed_identity_and_index() {
    let c = config();
    assert_eq!(render(&c, 3, 1, None).image, render(&c, 3, 1, None).image);
    assert_ne!(render(&c, 3, 1, None).image, render(&c, 3, 2, None).image);
    assert_ne!(render(&c, 3, 1, None).image, render(&c, 4, 1, None).image);
    let other_seed = SyntheticConfig {
        seed: 9,
        ..c.clone()
    };
    assert_ne!(
        render(&c, 3, 1, None).image,
        render(&other_seed, 3, 1, None).image
    );
    let train = SyntheticFaces::train(c.clone()).unwrap();
    assert_eq!(
        (train.len(), train.num_identities(), train.label(7).unwrap()),
        (100, 20, 1)
    );
    assert!(train.get(100).is_err());
}

#[test]
fn held_out_identities_never_appear_in_training() {
    let c = config();
    let train = SyntheticFaces::train(c.clone()).unwrap();
    let held = SyntheticFaces::held_out(c).unwrap();
    for i in 0..5 {
        for j in 0..20 {
            assert_ne!(
                held.get(i * 5).unwrap().image,
                train.get(j * 5).unwrap().image
            );
        }
    }
}

#[test]
fn landmarks_sit_on_the_arcface_template_and_follow_unaligned_faces() {
    let c = config();
    let template = [
        [38.29, 51.70],
        [73.53, 51.50],
        [56.03, 71.74],
        [41.55, 92.37],
        [70.73, 92.20],
    ];
    let mut mean_error = 0.0;
    for i in 0..40 {
        let face = render(&c, i, 0, None);
        for (p, t) in face.landmarks.iter().zip(&template) {
            mean_error += ((p[0] - t[0]).powi(2) + (p[1] - t[1]).powi(2)).sqrt() / 200.0;
        }
    }
    // Identities vary around the template by design; the mean stays close to it.
    assert!(
        mean_error < 12.0,
        "mean landmark distance to the template {mean_error}"
    );
    // Unaligned on a 256 canvas: same face, moved; the landmarks say where.
    let on_canvas = render(&c, 5, 2, Some(256));
    assert_eq!(on_canvas.image.dimensions(), (256, 256));
    let aligned = render(&c, 5, 2, None);
    let shift = [
        on_canvas.landmarks[0][0] - aligned.landmarks[0][0],
        on_canvas.landmarks[0][1] - aligned.landmarks[0][1],
    ];
    for (a, b) in on_canvas.landmarks.iter().zip(&aligned.landmarks) {
        assert!((a[0] - b[0] - shift[0]).abs() < 1e-3 && (a[1] - b[1] - shift[1]).abs() < 1e-3);
    }
}

/// insightface's protocol on raw pixels: cosine of L2-normalized pixel vectors, 10 contiguous
/// folds, best threshold on nine applied to the tenth.
fn raw_pixel_accuracy(bin: &face_data::VerificationBin) -> f64 {
    let vectors: Vec<Vec<f32>> = bin
        .images
        .iter()
        .map(|b| {
            let img = image::load_from_memory(b).unwrap().to_rgb8();
            let v: Vec<f32> = img.as_raw().iter().map(|&p| p as f32).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect()
        })
        .collect();
    let scores: Vec<f32> = (0..bin.num_pairs())
        .map(|k| {
            vectors[2 * k]
                .iter()
                .zip(&vectors[2 * k + 1])
                .map(|(a, b)| a * b)
                .sum()
        })
        .collect();
    let n = scores.len();
    let fold = n / 10;
    let mut total = 0.0;
    for f in 0..10 {
        let test = f * fold..(f + 1) * fold;
        let accuracy = |t: f32, range: &mut dyn Iterator<Item = usize>| {
            let (mut right, mut count) = (0, 0);
            for i in range {
                right += ((scores[i] > t) == bin.issame[i]) as usize;
                count += 1;
            }
            right as f64 / count as f64
        };
        // First best threshold on the other nine folds (ties to the lowest, as insightface).
        let mut best = (f64::MIN, 0.0f32);
        for k in 0..=400 {
            let t = k as f32 / 400.0;
            let a = accuracy(t, &mut (0..n).filter(|i| !test.contains(i)));
            if a > best.0 {
                best = (a, t);
            }
        }
        let best = best.1;
        total += accuracy(best, &mut test.clone());
    }
    total / 10.0
}

#[test]
fn raw_pixels_are_a_poor_verifier_on_held_out_identities() {
    let held = SyntheticFaces::held_out(SyntheticConfig {
        per_identity: 10,
        ..config()
    })
    .unwrap();
    let bin = verification_pairs(&held, 300, 7).unwrap();
    assert_eq!(bin.num_pairs(), 600);
    let accuracy = raw_pixel_accuracy(&bin);
    eprintln!("raw-pixel verification accuracy on held-out synthetic identities: {accuracy:.3}");
    assert!(
        accuracy <= 0.75,
        "raw pixels already verify {accuracy:.3}: the set would be too easy"
    );
    assert!(accuracy >= 0.5, "{accuracy}");
}
