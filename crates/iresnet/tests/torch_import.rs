//! arcface_torch `.pth` import against PyTorch: a reduced-width IResNet and a small MobileFaceNet
//! (same code paths) saved by tools/make_backbone_fixtures.py with torch 2.15.0, seed 0, and their
//! eval-mode outputs; plus the IResNet through PyTorch's ONNX exporter.

mod common;
use common::*;

use iresnet::burn::tensor::{Tensor, TensorData};
use iresnet::import::{import_auto, import_file, infer_arch, torch::load_pth};
use iresnet::{Backbone, BackboneConfig, BackboneError, IResNetConfig, MobileFaceNetConfig};

fn tiny_config() -> BackboneConfig {
    let io = read_json("backbones/tiny_iresnet_io.json");
    let arr = |k: &str| -> [usize; 4] {
        let v: Vec<usize> = io[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        v.try_into().unwrap()
    };
    BackboneConfig::IResNet(
        IResNetConfig::new(arr("layers"))
            .with_widths(arr("widths"))
            .with_embedding_dim(io["embedding_dim"].as_u64().unwrap() as usize),
    )
}

/// The fixture's family with other blocks or widths (D stays 24).
fn tiny_variant(layers: [usize; 4], widths: [usize; 4]) -> BackboneConfig {
    BackboneConfig::IResNet(
        IResNetConfig::new(layers)
            .with_widths(widths)
            .with_embedding_dim(24),
    )
}

/// Imports a file of datasets/fixtures/backbones into `spec` on the CPU.
fn import_fixture(file: &str, spec: &BackboneConfig) -> iresnet::Result<iresnet::AnyBackbone<B>> {
    import_file::<B>(
        &fixture(&format!("backbones/{file}")),
        spec,
        &Default::default(),
    )
}

/// PyTorch's outputs on the fixed input, flattened.
fn expected_outputs(io: &str) -> Vec<f32> {
    read_json(io)["output"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect()
}

/// Largest |ours - theirs| relative to the reference's largest magnitude, against the tiny IResNet.
fn assert_matches_reference(model: &impl Backbone<B>, what: &str) {
    assert_matches(model, "backbones/tiny_iresnet_io.json", what)
}

fn assert_matches(model: &impl Backbone<B>, io: &str, what: &str) {
    let device = Default::default();
    let input =
        Tensor::<B, 4>::from_data(TensorData::new(fixed_input(2), [2, 3, 112, 112]), &device);
    let ours = to_vec(model.embed(input));
    let theirs = expected_outputs(io);
    let worst = max_relative_error(&ours, &theirs);
    assert!(
        worst < 1e-4,
        "{what}: relative error {worst:e} against PyTorch"
    );
}

#[test]
fn pth_import_matches_pytorch_forward() {
    let model = import_fixture("tiny_iresnet.pth", &tiny_config()).unwrap();
    assert_matches_reference(&model, "tiny IResNet from .pth");
}

#[test]
fn mobilefacenet_pth_in_float16_matches_pytorch_forward() {
    // GDC head, a residual first stage (blocks (2,1,1,1)), weights stored as float16.
    let model = import_fixture("tiny_mbf.pth", &tiny_mbf_config()).unwrap();
    assert_matches(
        &model,
        "backbones/tiny_mbf_io.json",
        "tiny MobileFaceNet from .pth",
    );
}

#[test]
fn onnx_export_of_the_same_network_matches_too() {
    // PyTorch's exporter folded most BatchNorms into biased convolutions and kept the
    // pre-convolution ones as nodes: the importer must untangle both.
    let model = import_fixture("tiny_iresnet.onnx", &tiny_config()).unwrap();
    assert_matches_reference(&model, "tiny IResNet from .onnx");
}

#[test]
fn matmul_heads_and_explicit_batch_norms_after_biased_convs_import_too() {
    // The same function written as MatMul + Add, and with a BatchNormalization node (epsilon 0.1)
    // after a conv that already carries a folded bias: the bias must move into the BN's mean and the
    // epsilon into its variance; and the embedding BN on an Unsqueeze/Squeeze view of the linear
    // layer's output.
    let model = import_fixture("tiny_iresnet_variant.onnx", &tiny_config()).unwrap();
    assert_matches_reference(&model, "tiny IResNet from the rewritten .onnx");
}

#[test]
fn a_tensor_that_does_not_fit_names_itself_and_both_shapes() {
    let wrong = tiny_variant([2, 1, 2, 1], [8, 16, 24, 40]);
    let err = import_fixture("tiny_iresnet.pth", &wrong).unwrap_err();
    match &err {
        BackboneError::ShapeMismatch {
            source_name,
            expected,
            found,
            ..
        } => {
            assert!(source_name.starts_with("layer4.0"), "{err}");
            assert_ne!(expected, found);
        }
        other => panic!("expected a shape mismatch, got: {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("layer4.0") && msg.contains('['), "{msg}");
}

#[test]
fn missing_and_extra_tensors_are_reported() {
    // One block more than the file has in stage 2: `layer2.1.*` is missing.
    let more = tiny_variant([2, 2, 2, 1], [8, 16, 24, 32]);
    let err = import_fixture("tiny_iresnet.pth", &more).unwrap_err();
    assert!(
        matches!(err, BackboneError::MissingWeight(ref k) if k.starts_with("layer2.1")),
        "{err}"
    );
    // One block fewer: the file's `layer1.1.*` has no place.
    let fewer = tiny_variant([1, 1, 2, 1], [8, 16, 24, 32]);
    let err = import_fixture("tiny_iresnet.pth", &fewer).unwrap_err();
    assert!(
        matches!(err, BackboneError::UnusedWeights(ref k) if k.contains("layer1.1")),
        "{err}"
    );
}

#[test]
fn bad_files_are_errors() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pth");
    assert!(matches!(
        import_file::<B>(&missing, &tiny_config(), &device),
        Err(BackboneError::Io { .. })
    ));
    let garbage = dir.path().join("garbage.pth");
    std::fs::write(&garbage, b"this is not a checkpoint").unwrap();
    let model = tiny_config().init::<B>(&device).unwrap();
    let mut m = match model {
        iresnet::AnyBackbone::IResNet(m) => m,
        _ => unreachable!(),
    };
    assert!(matches!(
        load_pth(&mut m, &garbage),
        Err(BackboneError::Torch { .. })
    ));
    let garbage_onnx = dir.path().join("garbage.onnx");
    std::fs::write(&garbage_onnx, [0xffu8; 64]).unwrap();
    assert!(matches!(
        import_file::<B>(&garbage_onnx, &tiny_config(), &device),
        Err(BackboneError::Onnx { .. })
    ));
    let unknown = dir.path().join("weights.h5");
    std::fs::write(&unknown, b"x").unwrap();
    assert!(import_file::<B>(&unknown, &tiny_config(), &device).is_err());
}

fn tiny_mbf_config() -> BackboneConfig {
    BackboneConfig::MobileFaceNet(
        MobileFaceNetConfig::new()
            .with_blocks([2, 1, 1, 1])
            .with_scale(1)
            .with_embedding_dim(32),
    )
}

#[test]
fn the_architecture_is_read_off_the_file() {
    for file in [
        "tiny_iresnet.pth",
        "tiny_iresnet.onnx",
        "tiny_iresnet_variant.onnx",
    ] {
        let found = infer_arch(&fixture(&format!("backbones/{file}"))).unwrap();
        assert_eq!(found, tiny_config(), "{file}");
    }
    assert_eq!(
        infer_arch(&fixture("backbones/tiny_mbf.pth")).unwrap(),
        tiny_mbf_config()
    );
    let device = Default::default();
    let model = import_auto::<B>(&fixture("backbones/tiny_mbf.pth"), &device).unwrap();
    assert_matches(
        &model,
        "backbones/tiny_mbf_io.json",
        "tiny MobileFaceNet, architecture inferred",
    );
}
