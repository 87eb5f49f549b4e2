//! The engine against Burn: the float engine (BatchNorm folded, channels last) must compute what
//! Burn's modules compute, for IResNet and both MobileFaceNet heads; the int8 engine must stay
//! close to the float one, give the same bits on every GEMM kernel, and survive its file.

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::{Distribution, Tensor};
use eval::{cosine, BurnEmbedder, Embedder};
use face_data::{render, SyntheticConfig};
use image::RgbImage;
use iresnet::{AnyBackbone, Backbone, BackboneConfig, IResNetConfig, MbfHead, MobileFaceNetConfig};
use quantize::calibrate::Method;
use quantize::gemm::Kernel;
use quantize::{quantize, Engine, Graph, ModelError, QuantizeOptions, QuantizedModel};

type B = burn::backend::Flex;
type AD = Autodiff<B>;

/// A small backbone whose BatchNorms hold non-trivial running statistics: a few training-mode
/// forward passes over random inputs update them as training would.
/// Seeded, under a lock: Burn's generator is global to the backend and this binary's tests run
/// in parallel, so without both each run drew other weights (and the entropy case, the weakest
/// calibration, now and then fell below its floor: 0.958 once, 0.999 on the next run).
fn trained_stats(config: BackboneConfig) -> AnyBackbone<B> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _lock = RNG.lock().unwrap_or_else(|p| p.into_inner());
    let device = Default::default();
    <AD as burn::tensor::backend::Backend>::seed(&device, 7);
    let model: AnyBackbone<AD> = config.init(&device).unwrap();
    for _ in 0..3 {
        let x = Tensor::<AD, 4>::random([4, 3, 112, 112], Distribution::Normal(0.2, 0.8), &device);
        let _ = model.embed(x);
    }
    model.valid()
}

fn small_iresnet() -> BackboneConfig {
    BackboneConfig::IResNet(
        IResNetConfig::new([1, 2, 1, 1])
            .with_widths([8, 16, 16, 32])
            .with_embedding_dim(64),
    )
}

fn faces(n: u64) -> Vec<RgbImage> {
    let config = SyntheticConfig::default();
    (0..n)
        .map(|i| render(&config, i % 7, i, None).image)
        .collect()
}

fn refs(faces: &[RgbImage]) -> Vec<&[u8]> {
    faces.iter().map(|f| f.as_raw().as_slice()).collect()
}

fn assert_close(ours: &[Vec<f32>], reference: &[Vec<f32>], tolerance: f32, what: &str) {
    let scale = reference.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    for (a, b) in ours.iter().flatten().zip(reference.iter().flatten()) {
        assert!(
            (a - b).abs() <= tolerance * scale,
            "{what}: {a} vs {b} (scale {scale})"
        );
    }
}

#[test]
fn float_engine_computes_what_burn_computes() {
    let images = faces(3);
    let faces = refs(&images);
    let configs = [
        small_iresnet(),
        // Grouped stem (two channels per group), depthwise blocks, GDC head.
        BackboneConfig::MobileFaceNet(
            MobileFaceNetConfig::new()
                .with_blocks([1, 1, 2, 1])
                .with_embedding_dim(64),
        ),
        // Residual first stage, insightface's released conv + fc head.
        BackboneConfig::MobileFaceNet(
            MobileFaceNetConfig::new()
                .with_blocks([2, 1, 1, 1])
                .with_scale(1)
                .with_head(MbfHead::ConvFc),
        ),
    ];
    for config in configs {
        let model = trained_stats(config.clone());
        let graph = Graph::from_backbone(&model).unwrap();
        let engine = Engine::float(&graph).unwrap();
        let ours = engine.embed(&faces).unwrap();
        let theirs = BurnEmbedder::new(model, Default::default())
            .embed(&images)
            .unwrap();
        assert_eq!(ours.len(), 3);
        assert_close(&ours, &theirs, 2e-5, &config.describe());
    }
}

#[test]
fn int8_engine_stays_close_to_float_and_is_bit_identical_across_kernels() {
    let calibration = faces(24);
    let probes = faces(40);
    let (calibration, probes) = (refs(&calibration), refs(&probes[24..]));
    for config in [
        small_iresnet(),
        BackboneConfig::MobileFaceNet(MobileFaceNetConfig::new().with_blocks([1, 1, 2, 1])),
    ] {
        let graph = Graph::from_backbone(&trained_stats(config.clone())).unwrap();
        let float = Engine::float(&graph).unwrap().embed(&probes).unwrap();
        for (options, floor) in [
            (QuantizeOptions::default(), 0.99),
            (
                QuantizeOptions {
                    method: Method::MinMax,
                    float_first: false,
                    float_last: true,
                },
                0.98,
            ),
            (
                QuantizeOptions {
                    method: Method::Entropy,
                    ..QuantizeOptions::default()
                },
                0.98,
            ),
        ] {
            let model = quantize(&graph, &calibration, options).unwrap();
            let engine = model.engine().unwrap();
            assert!(engine.int8_weights() > 0);
            let int8 = engine.embed(&probes).unwrap();
            let cos: Vec<f64> = int8.iter().zip(&float).map(|(a, b)| cosine(a, b)).collect();
            let mean = cos.iter().sum::<f64>() / cos.len() as f64;
            eprintln!("{} {options:?}: mean cosine {mean:.5}", config.describe());
            assert!(mean >= floor, "{options:?}: mean cosine {mean}");
            // Every kernel this machine has gives the same bits.
            for kernel in [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512Vnni] {
                if kernel.available() {
                    let other = model.engine().unwrap().with_kernel(kernel);
                    assert_eq!(other.embed(&probes).unwrap(), int8, "{kernel:?}");
                }
            }
        }
    }
}

#[test]
fn model_file_round_trips_and_rejects_damage() {
    let calibration = faces(8);
    let calibration = refs(&calibration);
    let graph = Graph::from_backbone(&trained_stats(small_iresnet())).unwrap();
    let model = quantize(&graph, &calibration, QuantizeOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.aq8");
    model.save(&path).unwrap();
    let loaded = QuantizedModel::load(&path).unwrap();
    assert_eq!(loaded, model);
    assert_eq!(
        loaded.engine().unwrap().embed(&calibration).unwrap(),
        model.engine().unwrap().embed(&calibration).unwrap()
    );

    let bytes = std::fs::read(&path).unwrap();
    let load = |b: &[u8]| QuantizedModel::from_bytes(b, "m");
    // One flipped bit in the weights.
    let mut flipped = bytes.clone();
    let at = bytes.len() - 100;
    flipped[at] ^= 0x10;
    assert!(matches!(load(&flipped), Err(ModelError::Corrupt { .. })));
    // Cut short, at several places.
    for keep in [0, 7, 20, bytes.len() / 2, bytes.len() - 1] {
        let err = load(&bytes[..keep]).unwrap_err();
        assert!(
            matches!(
                err,
                ModelError::Truncated { .. } | ModelError::NotAModel { .. }
            ),
            "{keep}: {err}"
        );
    }
    // Not a model; a future version.
    assert!(matches!(
        load(b"PK\x03\x04 a zip file, say"),
        Err(ModelError::NotAModel { .. })
    ));
    let mut future = bytes.clone();
    future[8] = 2;
    assert!(matches!(
        load(&future),
        Err(ModelError::Version { found: 2, .. })
    ));
    // A header that points an array outside the file, under a matching checksum: refused
    // before any weight is read.
    let header = header_of(&bytes);
    assert!(header.contains("\"offset\":0,"));
    let outside = header.replacen("\"offset\":0,", &format!("\"offset\":{},", bytes.len()), 1);
    match load(&forged(&bytes, &outside, |_| {})) {
        Err(ModelError::Corrupt { reason, .. }) => assert!(reason.contains("outside"), "{reason}"),
        other => panic!("expected a corrupt-file error, got {other:?}"),
    }
    // An absurd padding (its shape arithmetic would wrap around in a release build, then index
    // out of bounds in the engine): a shape error, not a panic.
    assert!(header.contains("\"padding\":1,"));
    let padded = header.replacen(
        "\"padding\":1,",
        &format!("\"padding\":{},", usize::MAX / 2),
        1,
    );
    let err = load(&forged(&bytes, &padded, |_| {})).unwrap_err();
    assert!(matches!(err, ModelError::Graph(_)), "{err}");
    // NaN weights under a valid checksum: refused on load, naming the node.
    let nan = forged(&bytes, &header, |blob| {
        blob[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    match load(&nan) {
        Err(ModelError::Corrupt { reason, .. }) => assert!(reason.contains("node 0"), "{reason}"),
        other => panic!("expected NaN weights to be refused, got {other:?}"),
    }
    // A missing file is an I/O error naming the path.
    let err = QuantizedModel::load(&dir.path().join("absent.aq8")).unwrap_err();
    assert!(err.to_string().contains("absent.aq8"), "{err}");
}

/// The JSON header of an `.aq8` file (after the 24-byte preamble and the header's length).
fn header_of(bytes: &[u8]) -> String {
    let payload = &bytes[24..];
    let json_len = u64::from_le_bytes(payload[..8].try_into().unwrap()) as usize;
    String::from_utf8(payload[8..8 + json_len].to_vec()).unwrap()
}

/// `bytes` with another header and its weight blob edited by `edit`, under a recomputed
/// checksum: what a careless tool or a forger would write.
fn forged(bytes: &[u8], header: &str, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let payload = &bytes[24..];
    let json_len = u64::from_le_bytes(payload[..8].try_into().unwrap()) as usize;
    let mut blob = payload[8 + json_len..].to_vec();
    edit(&mut blob);
    let mut forged_payload = (header.len() as u64).to_le_bytes().to_vec();
    forged_payload.extend(header.bytes());
    forged_payload.extend(blob);
    let mut out = bytes[..12].to_vec();
    out.extend((forged_payload.len() as u64).to_le_bytes());
    out.extend(crc32fast::hash(&forged_payload).to_le_bytes());
    out.extend(forged_payload);
    out
}

#[test]
fn bad_faces_are_refused_with_their_index() {
    let graph = Graph::from_backbone(&trained_stats(small_iresnet())).unwrap();
    let engine = Engine::float(&graph).unwrap();
    let good = vec![0u8; 112 * 112 * 3];
    let err = engine.embed(&[&good, &good[..100]]).unwrap_err();
    assert!(err.to_string().contains("face 1"), "{err}");
    assert_eq!(engine.embed(&[]).unwrap(), Vec::<Vec<f32>>::new());
}
