//! The synthetic faces' near-infrared and depth images and the night condition: deterministic,
//! of the same face and moment as the RGB image, and night changing the colour camera alone.

use face_data::{render, Modality, SyntheticConfig};
use image::GrayImage;

fn config(night: f32) -> SyntheticConfig {
    SyntheticConfig {
        modalities: vec![Modality::Rgb, Modality::Nir, Modality::Depth],
        night,
        seed: 3,
        ..Default::default()
    }
}

#[test]
fn every_modality_is_a_pure_function_and_rgb_is_the_same_with_or_without_them() {
    let c = config(0.0);
    let (a, b) = (render(&c, 5, 2, None), render(&c, 5, 2, None));
    assert_eq!((&a.nir, &a.depth), (&b.nir, &b.depth));
    assert!(a.nir.is_some() && a.depth.is_some());
    let other = render(&c, 5, 3, None);
    assert_ne!(a.nir, other.nir);
    assert_ne!(a.depth, other.depth);
    // Adding modalities renders the RGB image it always was.
    let rgb_only = SyntheticConfig {
        modalities: vec![Modality::Rgb],
        ..c.clone()
    };
    let plain = render(&rgb_only, 5, 2, None);
    assert_eq!(plain.image, a.image);
    assert!(plain.nir.is_none() && plain.depth.is_none());
}

/// Mean absolute difference between horizontal neighbours: the sensor noise's share.
fn roughness(pixels: &[u8], width: usize, stride: usize) -> f64 {
    let rows = pixels.chunks(width * stride);
    let mut sum = 0.0;
    let mut n = 0;
    for row in rows {
        for x in 1..width {
            for c in 0..stride {
                sum += (row[x * stride + c] as f64 - row[(x - 1) * stride + c] as f64).abs();
                n += 1;
            }
        }
    }
    sum / n as f64
}

#[test]
fn night_darkens_and_drowns_the_colour_camera_alone() {
    let (day, night) = (config(0.0), config(1.0));
    let mut rougher = 0;
    for id in 0..10 {
        let (d, n) = (render(&day, id, 0, None), render(&night, id, 0, None));
        assert!(!d.night && n.night);
        assert_eq!(
            d.nir, n.nir,
            "night changes the infrared image of identity {id}"
        );
        assert_eq!(
            d.depth, n.depth,
            "night changes the depth map of identity {id}"
        );
        assert_ne!(d.image, n.image);
        let (rd, rn) = (
            roughness(d.image.as_raw(), 112, 3),
            roughness(n.image.as_raw(), 112, 3),
        );
        let diff: f64 = (d.image.as_raw().iter().zip(n.image.as_raw()))
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / d.image.as_raw().len() as f64;
        assert!(
            diff > 12.0,
            "identity {id}: night differs by {diff:.1} levels on average"
        );
        rougher += usize::from(rn > 3.0 * rd);
    }
    // Blur and JPEG smooth some nights' noise; most stay far noisier than the day.
    assert!(
        rougher >= 6,
        "night noise at least 3x the day's in {rougher}/10 images"
    );
    // A share of 0.5 takes about half the images at night.
    let half = config(0.5);
    let nights = (0..200)
        .filter(|&i| render(&half, 1, i, None).night)
        .count();
    assert!((70..=130).contains(&nights), "{nights}/200 at night");
}

/// The brightest reading within `r` pixels of `p` (holes read 0).
fn nearest(depth: &GrayImage, p: [f32; 2], r: i64) -> u8 {
    let mut best = 0;
    for dy in -r..=r {
        for dx in -r..=r {
            let (x, y) = (p[0] as i64 + dx, p[1] as i64 + dy);
            if (0..depth.width() as i64).contains(&x) && (0..depth.height() as i64).contains(&y) {
                best = best.max(depth.get_pixel(x as u32, y as u32).0[0]);
            }
        }
    }
    best
}

#[test]
fn depth_follows_the_face_geometry_of_the_rgb_image() {
    let c = SyntheticConfig {
        nuisance: 1.0,
        ..config(0.0)
    };
    let mut in_front = 0;
    for (id, index) in (0..12).flat_map(|id| (0..3).map(move |i| (id, i))) {
        let face = render(&c, id, index, Some(160));
        let depth = face.depth.as_ref().unwrap();
        let [left_eye, right_eye, nose, ..] = face.landmarks;
        let tip = nearest(depth, nose, 2);
        // The nose tip is nearer (brighter) than the eye sockets, wherever the face landed
        // (counted below: an occluder held in front of the eyes is nearer still).
        in_front +=
            usize::from(tip > nearest(depth, left_eye, 1) && tip > nearest(depth, right_eye, 1));
        // The face region sits where the RGB face is: readings around the landmarks' centre,
        // none far from it (the unaligned canvas moves both).
        let centre = [
            (left_eye[0] + right_eye[0] + 2.0 * nose[0]) / 4.0,
            (left_eye[1] + right_eye[1] + 2.0 * nose[1]) / 4.0,
        ];
        let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
        for (x, y, p) in depth.enumerate_pixels() {
            if p.0[0] > 40 {
                (sx, sy, n) = (sx + x as f32, sy + y as f32, n + 1.0);
            }
        }
        let (cx, cy) = (sx / n, sy / n);
        assert!(
            (cx - centre[0]).abs() < 10.0 && (cy - centre[1]).abs() < 10.0,
            "identity {id} image {index}: depth centre ({cx}, {cy}), landmarks ({}, {})",
            centre[0],
            centre[1]
        );
    }
    assert!(
        in_front >= 30,
        "the nose is in front of the eyes in {in_front}/36 images"
    );
}

#[test]
fn the_same_person_has_the_same_relief_and_different_people_differ() {
    // Nose height over the eyes, read at the landmarks of frontal, unoccluded renders.
    let c = SyntheticConfig {
        nuisance: 0.0,
        ..config(0.0)
    };
    let relief = |id: u64, index: u64| {
        let f = render(&c, id, index, None);
        let d = f.depth.as_ref().unwrap();
        nearest(d, f.landmarks[2], 2) as f64 - nearest(d, f.landmarks[0], 1) as f64
    };
    let same: Vec<f64> = (0..4).map(|i| relief(2, i)).collect();
    let spread = same.iter().cloned().fold(f64::MIN, f64::max)
        - same.iter().cloned().fold(f64::MAX, f64::min);
    let people: Vec<f64> = (0..12).map(|id| relief(id, 0)).collect();
    let range = people.iter().cloned().fold(f64::MIN, f64::max)
        - people.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        range > 3.0 * spread.max(2.0),
        "within {spread}, across {range}: {people:?}"
    );
}

/// The plane `k` of `[C, 112, 112]` values, mirrored left to right when `mirror`.
fn plane(values: &[f32], k: usize, mirror: bool) -> Vec<f32> {
    let area = 112 * 112;
    let p = &values[k * area..(k + 1) * area];
    if !mirror {
        return p.to_vec();
    }
    p.chunks(112)
        .flat_map(|row| row.iter().rev().copied())
        .collect()
}

#[test]
fn batches_stack_the_modalities_with_one_augmentation_draw_and_drop_some() {
    use face_augment::Pipeline;
    use face_data::{FaceDataset, Loader, LoaderConfig, SyntheticFaces};
    let data = SyntheticFaces::train(SyntheticConfig {
        identities: 4,
        per_identity: 4,
        ..config(0.0)
    })
    .unwrap();
    let all = vec![Modality::Rgb, Modality::Nir, Modality::Depth];
    let loader = |dropout: f32| {
        let config = LoaderConfig {
            batch_size: 16,
            modalities: all.clone(),
            modality_dropout: dropout,
            ..Default::default()
        };
        Loader::new(data.clone(), Pipeline::insightface_minimal(), config).unwrap()
    };
    let batch = loader(0.0).epoch(0).next().unwrap().unwrap();
    assert_eq!(batch.shape, [16, 5, 112, 112]);
    let mut flips = 0;
    for (k, &index) in batch.indices.iter().enumerate() {
        let got = &batch.images[k * 5 * 112 * 112..(k + 1) * 5 * 112 * 112];
        let plain = data.get(index).unwrap().planes(&all, &[], index).unwrap();
        // The flip the RGB image got (insightface's augmentation), the NIR and depth got too.
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        let mirror = !close(&plane(got, 0, false), &plane(&plain, 0, false));
        flips += usize::from(mirror);
        for p in 0..5 {
            let same = close(&plane(got, p, false), &plane(&plain, p, mirror));
            assert!(same, "sample {index} plane {p} (mirrored: {mirror})");
        }
    }
    assert!((2..=14).contains(&flips), "{flips}/16 flipped");
    // Dropout zeroes whole modalities, never all of a sample's.
    let dropped = loader(0.5).epoch(0).next().unwrap().unwrap();
    let mut zeroed = 0;
    for k in 0..16 {
        let got = &dropped.images[k * 5 * 112 * 112..(k + 1) * 5 * 112 * 112];
        let zero: Vec<bool> = face_data::plane_ranges(&all)
            .into_iter()
            .map(|(_, r)| {
                got[r.start * 112 * 112..r.end * 112 * 112]
                    .iter()
                    .all(|&v| v == 0.0)
            })
            .collect();
        assert!(zero.contains(&false), "sample {k} lost every modality");
        zeroed += zero.iter().filter(|&&z| z).count();
    }
    assert!(
        (8..=40).contains(&zeroed),
        "{zeroed} of 48 modalities dropped at 0.5"
    );
    // Dropout limited to depth blanks depth alone.
    let config = LoaderConfig {
        batch_size: 16,
        modalities: all.clone(),
        modality_dropout: 0.9,
        dropout_modalities: vec![Modality::Depth],
        ..Default::default()
    };
    let only_depth = Loader::new(data.clone(), Pipeline::insightface_minimal(), config).unwrap();
    let batch = only_depth.epoch(0).next().unwrap().unwrap();
    let mut depth_gone = 0;
    for k in 0..16 {
        let got = &batch.images[k * 5 * 112 * 112..(k + 1) * 5 * 112 * 112];
        let zero = |p: std::ops::Range<usize>| {
            got[p.start * 12544..p.end * 12544]
                .iter()
                .all(|&v| v == 0.0)
        };
        assert!(!zero(0..3) && !zero(3..4), "sample {k} lost RGB or NIR");
        depth_gone += usize::from(zero(4..5));
    }
    assert!(depth_gone >= 10, "depth dropped in {depth_gone}/16 at 0.9");
    // A dataset without a modality the loader wants fails, naming it.
    let rgb_only = SyntheticFaces::train(SyntheticConfig {
        identities: 2,
        per_identity: 2,
        ..Default::default()
    })
    .unwrap();
    let config = LoaderConfig {
        batch_size: 2,
        modalities: all.clone(),
        ..Default::default()
    };
    let err = Loader::new(rgb_only, Pipeline::arcface_default(), config)
        .unwrap()
        .epoch(0)
        .next()
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("nir"), "{err}");
}

#[test]
fn folders_and_record_files_carry_nir_and_depth_beside_the_rgb_data() {
    use face_data::{
        companion, pack_dataset, write_companions, FaceDataset, ImageFolder, RecordDataset,
        SyntheticFaces,
    };
    let data = SyntheticFaces::train(SyntheticConfig {
        identities: 3,
        per_identity: 2,
        ..config(0.5)
    })
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // An image folder: RGB as always, NIR and depth in `faces.nir/` and `faces.depth/`.
    let root = tmp.path().join("faces");
    for i in 0..data.len() {
        let sample = data.get(i).unwrap();
        let relative =
            std::path::PathBuf::from(format!("p{}", sample.label)).join(format!("{i}.png"));
        std::fs::create_dir_all(root.join(&relative).parent().unwrap()).unwrap();
        std::fs::write(
            root.join(&relative),
            face_data::encode_png(&sample.image).unwrap(),
        )
        .unwrap();
        write_companions(&root, &relative, &sample).unwrap();
    }
    assert!(companion(&root, Modality::Nir).is_dir() && companion(&root, Modality::Depth).is_dir());
    let folder = ImageFolder::open(&root).unwrap();
    // A record file: `train.rec` RGB, `train.nir.rec` and `train.depth.rec` with the same keys.
    let rec = tmp.path().join("train.rec");
    pack_dataset(&data, &rec, |_| {}).unwrap();
    let records = RecordDataset::open(&rec).unwrap();
    for i in 0..data.len() {
        let want = data.get(i).unwrap();
        for (name, got) in [
            ("folder", folder.get(i).unwrap()),
            ("rec", records.get(i).unwrap()),
        ] {
            assert_eq!(got.image, want.image, "{name} {i}");
            assert_eq!(got.nir, want.nir, "{name} {i}");
            assert_eq!(got.depth, want.depth, "{name} {i}");
        }
    }
    // RGB-only readers see the same files: without the companions, the data is plain RGB.
    std::fs::rename(
        companion(&root, Modality::Nir),
        tmp.path().join("elsewhere"),
    )
    .unwrap();
    let rgb_only = ImageFolder::open(&root).unwrap().get(0).unwrap();
    assert!(rgb_only.nir.is_none() && rgb_only.depth.is_some());
    assert_eq!(rgb_only.image, data.get(0).unwrap().image);
    assert_eq!(
        face_data::RecordFile::open(&rec).unwrap().keys(),
        face_data::RecordFile::open(companion(&rec, Modality::Depth))
            .unwrap()
            .keys()
    );
}
