//! The random parts: parameter distributions over many draws, determinism across thread counts,
//! and bad input as errors.

use face_augment::{
    rgb_from_raw, sample_rng, AugmentError, Drawn, EraseValue, Pipeline, PipelineConfig, Sample,
    Transform, TransformConfig,
};
use image::RgbImage;

const DRAWS: usize = 20_000;

fn face(seed: u32) -> RgbImage {
    RgbImage::from_fn(112, 112, |x, y| {
        image::Rgb([
            ((x * 3 + y + seed) % 256) as u8,
            ((x * y + seed * 7) % 251) as u8,
            ((x + y * 5) % 241) as u8,
        ])
    })
}

fn draws(t: &TransformConfig) -> Vec<Drawn> {
    (0..DRAWS as u64)
        .map(|i| t.draw(&mut sample_rng(1, 0, i), 112, 112))
        .collect()
}

#[test]
fn flip_fires_half_the_time() {
    let fired = draws(&TransformConfig::HorizontalFlip { p: 0.5 })
        .iter()
        .filter(|d| **d == Drawn::Fires(true))
        .count() as f64
        / DRAWS as f64;
    // 20k Bernoulli(0.5): standard error 0.0035.
    assert!((fired - 0.5).abs() < 0.015, "flip rate {fired}");
    // And the image really is mirrored when it fires.
    let img = face(0);
    let t = TransformConfig::HorizontalFlip { p: 1.0 };
    let out = t
        .apply(Sample::Image(img.clone()), &mut sample_rng(0, 0, 0))
        .unwrap();
    assert_eq!(out, Sample::Image(image::imageops::flip_horizontal(&img)));
}

#[test]
fn rotation_angles_fill_the_range_uniformly() {
    let angles: Vec<f64> = draws(&TransformConfig::Rotation { degrees: 15.0 })
        .into_iter()
        .map(|d| match d {
            Drawn::Angle(a) => a,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(angles.iter().all(|a| (-15.0..=15.0).contains(a)));
    let (min, max) = angles
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &a| (lo.min(a), hi.max(a)));
    assert!(min < -14.9 && max > 14.9, "{min}..{max}");
    let mean = angles.iter().sum::<f64>() / angles.len() as f64;
    let var = angles.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / angles.len() as f64;
    // Uniform(-15, 15): mean 0, variance 30^2 / 12 = 75.
    assert!(
        mean.abs() < 0.3 && (var - 75.0).abs() < 3.0,
        "mean {mean}, variance {var}"
    );
}

#[test]
fn jitter_factors_and_orders() {
    let t = TransformConfig::ColorJitter {
        brightness: 0.2,
        contrast: 0.2,
        saturation: 0.2,
        hue: 0.05,
    };
    let mut first = [0usize; 4];
    for d in draws(&t) {
        let Drawn::Jitter {
            order,
            brightness,
            contrast,
            saturation,
            hue,
        } = d
        else {
            panic!()
        };
        for f in [brightness, contrast, saturation] {
            let f = f.unwrap();
            assert!((0.8..1.2).contains(&f), "{f}");
        }
        assert!((-0.05..0.05).contains(&hue.unwrap()));
        let mut sorted = order;
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2, 3]);
        first[order[0]] += 1;
    }
    // Each adjustment goes first about a quarter of the time.
    for n in first {
        assert!((n as f64 / DRAWS as f64 - 0.25).abs() < 0.015, "{first:?}");
    }
    // A zero strength turns an adjustment off, as torchvision's None.
    let off = TransformConfig::ColorJitter {
        brightness: 0.0,
        contrast: 0.3,
        saturation: 0.0,
        hue: 0.0,
    };
    let Drawn::Jitter {
        brightness,
        contrast,
        saturation,
        hue,
        ..
    } = off.draw(&mut sample_rng(3, 0, 0), 112, 112)
    else {
        panic!()
    };
    assert!(brightness.is_none() && saturation.is_none() && hue.is_none());
    assert!((0.7..1.3).contains(&contrast.unwrap()));
}

#[test]
fn erasing_boxes_have_the_configured_area_and_aspect() {
    let t = TransformConfig::RandomErasing {
        p: 0.3,
        scale: (0.02, 0.1),
        ratio: (0.3, 3.3),
        value: EraseValue::Constant(0.0),
    };
    let mut fired = 0;
    let mut log_aspects = Vec::new();
    for d in draws(&t) {
        let Drawn::Erase(b) = d else { panic!() };
        let Some((i, j, h, w)) = b else { continue };
        fired += 1;
        assert!(i + h <= 112 && j + w <= 112, "box outside");
        // Rounding h and w to whole pixels moves area and aspect a little off the drawn values.
        let area = (h * w) as f64 / (112.0 * 112.0);
        assert!((0.015..=0.115).contains(&area), "area {area}");
        let aspect = h as f64 / w as f64;
        assert!((0.25..=3.6).contains(&aspect), "aspect {aspect}");
        log_aspects.push(aspect.ln());
    }
    let rate = fired as f64 / DRAWS as f64;
    assert!((rate - 0.3).abs() < 0.015, "erasing rate {rate}");
    // log-aspect is uniform on [ln 0.3, ln 3.3]: its mean is about 0.0.
    let mean = log_aspects.iter().sum::<f64>() / log_aspects.len() as f64;
    assert!(mean.abs() < 0.05, "mean log aspect {mean}");
}

#[test]
fn erasing_writes_the_box_after_normalisation() {
    let pipeline = Pipeline::from_config(&PipelineConfig {
        transforms: vec![
            TransformConfig::ToTensor,
            TransformConfig::imagenet_normalize(),
            TransformConfig::RandomErasing {
                p: 1.0,
                scale: (0.05, 0.05),
                ratio: (1.0, 1.0),
                value: EraseValue::Constant(0.0),
            },
        ],
    })
    .unwrap();
    let t = pipeline
        .run_tensor(
            RgbImage::from_pixel(112, 112, image::Rgb([255, 255, 255])),
            0,
            0,
            0,
        )
        .unwrap();
    let zeros = t.data.iter().filter(|&&v| v == 0.0).count();
    // A 25x25 square (sqrt(0.05 * 112^2) = 25.04) in all three channels.
    assert_eq!(zeros, 3 * 25 * 25);
}

#[test]
fn same_seed_same_output_on_any_number_of_threads() {
    let pipeline = Pipeline::arcface_default();
    let images: Vec<RgbImage> = (0..24).map(face).collect();
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| pipeline.run_batch(&images, 1234, 3, 100))
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    };
    let one = run(1);
    assert_eq!(one, run(4));
    // One by one, in reverse order: the same again.
    for (k, img) in images.iter().enumerate().rev() {
        assert_eq!(
            pipeline
                .run_tensor(img.clone(), 1234, 3, 100 + k as u64)
                .unwrap(),
            one[k]
        );
    }
    // Another epoch or seed changes the augmentation.
    let other_epoch = pipeline
        .run_tensor(images[0].clone(), 1234, 4, 100)
        .unwrap();
    let other_seed = pipeline
        .run_tensor(images[0].clone(), 1235, 3, 100)
        .unwrap();
    assert!(other_epoch != one[0] && other_seed != one[0]);
}

#[test]
fn presets_produce_normalised_tensors() {
    let white = RgbImage::from_pixel(112, 112, image::Rgb([255, 255, 255]));
    let t = Pipeline::insightface_minimal()
        .run_tensor(white, 0, 0, 0)
        .unwrap();
    assert!(
        t.data.iter().all(|&v| v == 1.0),
        "(255 - 127.5) / 127.5 = 1"
    );
    let t = Pipeline::arcface_default()
        .run_tensor(face(1), 9, 0, 0)
        .unwrap();
    assert_eq!((t.height, t.width), (112, 112));
    assert!(t
        .data
        .iter()
        .all(|v| v.is_finite() && (-2.2..=2.7).contains(v)));
}

#[test]
fn bad_input_is_an_error() {
    let pipeline = Pipeline::arcface_default();
    assert_eq!(
        pipeline.run(RgbImage::new(0, 0), 0, 0, 0).unwrap_err(),
        AugmentError::EmptyImage(0, 0)
    );
    assert_eq!(
        rgb_from_raw(2, 2, 4, vec![0; 16]).unwrap_err(),
        AugmentError::Channels(4)
    );
    assert_eq!(
        rgb_from_raw(2, 2, 1, vec![0; 4]).unwrap_err(),
        AugmentError::Channels(1)
    );
    assert!(matches!(
        rgb_from_raw(2, 2, 3, vec![0; 11]),
        Err(AugmentError::TensorShape { .. })
    ));
    assert!(matches!(
        rgb_from_raw(0, 5, 3, vec![]),
        Err(AugmentError::EmptyImage(0, 5))
    ));
    // Transforms out of order, or on the wrong kind of sample.
    let erase_first = PipelineConfig {
        transforms: vec![
            TransformConfig::RandomErasing {
                p: 0.5,
                scale: (0.02, 0.1),
                ratio: (0.3, 3.3),
                value: EraseValue::Random,
            },
            TransformConfig::ToTensor,
        ],
    };
    assert!(matches!(
        Pipeline::from_config(&erase_first),
        Err(AugmentError::Stage {
            transform: "ToTensor",
            ..
        })
    ));
    let no_to_tensor = PipelineConfig {
        transforms: vec![TransformConfig::imagenet_normalize()],
    };
    assert!(matches!(
        Pipeline::from_config(&no_to_tensor),
        Err(AugmentError::Stage { .. })
    ));
    let flip_after = PipelineConfig {
        transforms: vec![
            TransformConfig::ToTensor,
            TransformConfig::HorizontalFlip { p: 0.5 },
        ],
    };
    assert!(Pipeline::from_config(&flip_after).is_err());
    let bad = PipelineConfig {
        transforms: vec![TransformConfig::HorizontalFlip { p: 1.5 }],
    };
    assert!(matches!(
        Pipeline::from_config(&bad),
        Err(AugmentError::Param { name: "p", .. })
    ));
    let flip = TransformConfig::HorizontalFlip { p: 0.5 };
    let tensor = face_augment::functional::to_tensor(&face(0));
    assert!(matches!(
        flip.apply(Sample::Tensor(tensor), &mut sample_rng(0, 0, 0)),
        Err(AugmentError::Stage { .. })
    ));
}

#[test]
fn pipelines_round_trip_through_config_files() {
    let config = PipelineConfig::arcface_default();
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(
        serde_json::from_str::<PipelineConfig>(&json).unwrap(),
        config
    );
    let custom: PipelineConfig = serde_json::from_str(
        r#"{"transforms": [
            {"kind": "horizontal_flip", "p": 0.5},
            {"kind": "down_up_resize", "p": 0.2, "min_size": 56, "max_size": 90},
            {"kind": "gaussian_blur", "p": 0.1, "sigma_min": 0.5, "sigma_max": 1.5},
            {"kind": "greyscale", "p": 0.1},
            {"kind": "hsv_shift", "p": 0.2, "hue": 0.05, "saturation": 0.2, "value": 0.2},
            {"kind": "to_tensor"},
            {"kind": "normalize", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
        ]}"#,
    )
    .unwrap();
    let pipeline = Pipeline::from_config(&custom).unwrap();
    for i in 0..50 {
        let t = pipeline.run_tensor(face(i), 5, 0, i as u64).unwrap();
        assert!(t.data.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
    let typo = serde_json::from_str::<PipelineConfig>(
        r#"{"transforms": [{"kind": "horizontal_flip", "prob": 0.5}]}"#,
    );
    assert!(typo.unwrap_err().to_string().contains("prob"));
}
