//! Model files: f32 and f16 round trips, self-description, and refusal of damaged files.

mod common;
use common::*;

use iresnet::burn::tensor::{Tensor, TensorData};
use iresnet::record::{load_model, load_model_as, read_header, save_model, Precision};
use iresnet::{Backbone, BackboneConfig, BackboneError, IResNetConfig, MobileFaceNetConfig};

fn input() -> Tensor<B, 4> {
    Tensor::from_data(
        TensorData::new(fixed_input(2), [2, 3, 112, 112]),
        &Default::default(),
    )
}

fn small_specs() -> Vec<BackboneConfig> {
    vec![
        BackboneConfig::IResNet(
            IResNetConfig::r18()
                .with_width_multiplier(0.125)
                .with_embedding_dim(32),
        ),
        BackboneConfig::MobileFaceNet(MobileFaceNetConfig::mbf().with_embedding_dim(64)),
    ]
}

#[test]
fn f32_round_trip_is_exact_and_f16_is_close() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    for spec in small_specs() {
        let model = spec.init::<B>(&device).unwrap();
        let before = to_vec(model.embed(input()));
        for (precision, tol) in [(Precision::F32, 0.0), (Precision::F16, 2e-2)] {
            let path = dir.path().join(format!("m-{precision:?}.arcface"));
            save_model(&model, &path, precision, "test").unwrap();
            let header = read_header(&path).unwrap();
            assert_eq!(header.backbone, spec);
            assert_eq!(header.precision, precision);
            let (loaded, _) = load_model::<B>(&path, &device).unwrap();
            let after = to_vec(loaded.embed(input()));
            let worst = max_relative_error(&after, &before);
            assert!(
                worst <= tol,
                "{} {precision:?}: relative error {worst}",
                spec.describe()
            );
        }
        let f32_size = std::fs::metadata(dir.path().join("m-F32.arcface"))
            .unwrap()
            .len();
        let f16_size = std::fs::metadata(dir.path().join("m-F16.arcface"))
            .unwrap()
            .len();
        assert!(
            f16_size * 10 < f32_size * 6,
            "f16 file {f16_size} vs f32 {f32_size}"
        );
    }
}

#[test]
fn damaged_or_foreign_files_are_refused() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let spec = small_specs().remove(0);
    let model = spec.init::<B>(&device).unwrap();
    let path = dir.path().join("m.arcface");
    save_model(&model, &path, Precision::F32, "test").unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let mut flipped = bytes.clone();
    let last = flipped.len() - 100;
    flipped[last] ^= 0x55;
    let corrupt = dir.path().join("corrupt.arcface");
    std::fs::write(&corrupt, &flipped).unwrap();
    let err = load_model::<B>(&corrupt, &device).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");

    let truncated = dir.path().join("truncated.arcface");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_model::<B>(&truncated, &device).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");

    let foreign = dir.path().join("foreign.arcface");
    std::fs::write(&foreign, b"PK\x03\x04 a zip file").unwrap();
    assert!(matches!(
        load_model::<B>(&foreign, &device),
        Err(BackboneError::BadModelFile { .. })
    ));

    let other = BackboneConfig::from_name("mbf").unwrap();
    let err = load_model_as::<B>(&path, &other, &device).unwrap_err();
    assert!(
        matches!(err, BackboneError::WrongArchitecture { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("IResNet") && err.to_string().contains("MobileFaceNet"),
        "{err}"
    );

    // A header that does not describe its weights: the same payload under another header.
    let forge = |edit: &dyn Fn(&mut IResNetConfig)| {
        let mut header = read_header(&path).unwrap();
        if let BackboneConfig::IResNet(c) = &mut header.backbone {
            edit(c);
        }
        header.embedding_dim = header.backbone.embedding_dim();
        let json = serde_json::to_vec(&header).unwrap();
        let mut forged = b"ARCFRSM1".to_vec();
        forged.extend_from_slice(&(json.len() as u32).to_le_bytes());
        forged.extend_from_slice(&json);
        let payload_start = 12 + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        forged.extend_from_slice(&bytes[payload_start..]);
        let forged_path = dir.path().join("forged.arcface");
        std::fs::write(&forged_path, forged).unwrap();
        load_model::<B>(&forged_path, &device).map(|_| ())
    };
    // An absurd architecture is refused before anything is allocated.
    let err = forge(&|c| c.widths = [1 << 30; 4]).unwrap_err();
    assert!(matches!(err, BackboneError::InvalidConfig(_)), "{err}");
    // A plausible one whose shapes differ from the weights' is refused by tensor name.
    let err = forge(&|c| c.widths[3] += 8).unwrap_err();
    assert!(
        matches!(&err, BackboneError::BadModelFile { message, .. } if message.contains("shape")),
        "{err}"
    );
    let err = forge(&|c| c.embedding_dim += 1).unwrap_err();
    assert!(matches!(err, BackboneError::BadModelFile { .. }), "{err}");
    // The header's summary disagreeing with its own architecture.
    let mut header = read_header(&path).unwrap();
    header.embedding_dim = 256;
    let json = serde_json::to_vec(&header).unwrap();
    let mut summary = b"ARCFRSM1".to_vec();
    summary.extend_from_slice(&(json.len() as u32).to_le_bytes());
    summary.extend_from_slice(&json);
    summary.extend_from_slice(
        &bytes[12 + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize..],
    );
    let summary_path = dir.path().join("summary.arcface");
    std::fs::write(&summary_path, summary).unwrap();
    let err = load_model::<B>(&summary_path, &device).unwrap_err();
    assert!(err.to_string().contains("256-d"), "{err}");
    // A zero embedding size (issue 20 reports a "chunk size must be non-zero" panic in
    // `arcface embed`).
    let err = forge(&|c| c.embedding_dim = 0).unwrap_err();
    assert!(matches!(err, BackboneError::InvalidConfig(_)), "{err}");

    assert!(matches!(
        load_model::<B>(&dir.path().join("absent.arcface"), &device),
        Err(BackboneError::Io { .. })
    ));
    // No temporary file is left behind by a successful save.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}
