//! Export round trips. ONNX: ONNX Runtime 1.32.0 (tools/ort_run.py, in the venv
//! datasets/fetch_real.py makes) runs the exported w600k_mbf on the 24 real aligned faces and an
//! exported IResNet on the fixed input, against our own forward; insightface 0.7.3's loader rule
//! picks the right normalisation; our importer reads every file back to the same weights.
//! PyTorch: the `.pth` of a network imported from a state dict PyTorch 2.15 saved
//! (tools/make_backbone_fixtures.py) holds exactly that state dict again, and our state dicts carry
//! arcface_torch's keys and shapes for r18 and mbf (the PyTorch-made key fixture).

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use iresnet::export::{self, OnnxOptions, TorchTensor};
use iresnet::import::import_auto;
use iresnet::preprocess::faces_to_tensor;
use iresnet::{AnyBackbone, Architecture, Backbone, BackboneConfig, Describe};
use test_support::reference_python;

/// Runs `model` on ONNX Runtime over `[n, 3, 112, 112]` input; returns its output and report.
fn onnx_runtime(model: &Path, input: &[f32], n: usize) -> (Vec<f32>, serde_json::Value) {
    let dir = model.parent().unwrap();
    let (x, y) = (dir.join("input.f32"), dir.join("output.f32"));
    let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&x, bytes).unwrap();
    let out = std::process::Command::new(reference_python())
        .arg(repo_root().join("tools/ort_run.py"))
        .arg(model)
        .arg(&x)
        .args([n.to_string(), "3".into(), "112".into(), "112".into()])
        .arg(&y)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tools/ort_run.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values = std::fs::read(&y)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (values, serde_json::from_slice(&out.stdout).unwrap())
}

fn state(net: &AnyBackbone<B>) -> Vec<TorchTensor> {
    export::state_dict(&net.dataflow())
}

fn export_onnx(net: &AnyBackbone<B>, path: &Path, f16: bool) {
    let options = OnnxOptions {
        f16,
        ..OnnxOptions::default()
    };
    let bytes = export::to_onnx(&net.dataflow(), &net.name(), &options).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn real_faces() -> (Vec<f32>, usize) {
    let dir = real_data().join("faces");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let pixels: Vec<Vec<u8>> = names
        .iter()
        .map(|p| image::open(p).unwrap().to_rgb8().into_raw())
        .collect();
    assert!(pixels.len() >= 20, "the real aligned faces are missing");
    let slices: Vec<&[u8]> = pixels.iter().map(Vec::as_slice).collect();
    let x = faces_to_tensor::<B>(&slices, &Default::default()).unwrap();
    (x.into_data().to_vec::<f32>().unwrap(), pixels.len())
}

fn ours(net: &AnyBackbone<B>, x: &[f32], n: usize) -> Vec<f32> {
    let t = Tensor::<B, 4>::from_data(
        TensorData::new(x.to_vec(), [n, 3, 112, 112]),
        &Default::default(),
    );
    to_vec(net.embed(t))
}

fn worst_cosine(a: &[f32], b: &[f32], dim: usize) -> f64 {
    a.chunks(dim)
        .zip(b.chunks(dim))
        .map(|(x, y)| cosine(x, y))
        .fold(1.0, f64::min)
}

#[test]
fn onnx_export_runs_on_onnx_runtime_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let (x, n) = real_faces();
    let mbf = import_auto::<B>(
        &real_data().join("models/w600k_mbf.onnx"),
        &Default::default(),
    )
    .unwrap();
    let expected = ours(&mbf, &x, n);
    for (f16, floor) in [(false, 0.99999), (true, 0.9999)] {
        let path = dir.path().join(format!("mbf_{f16}.onnx"));
        export_onnx(&mbf, &path, f16);
        let (theirs, report) = onnx_runtime(&path, &x, n);
        let worst = worst_cosine(&theirs, &expected, 512);
        eprintln!(
            "w600k_mbf exported (f16 weights: {f16}): worst cosine vs ours {worst:.7}; {report}"
        );
        assert!(worst >= floor, "f16 {f16}: cosine {worst}");
        assert_eq!(report["input"], "input.1");
        assert_eq!(
            report["input_shape"],
            serde_json::json!(["batch", "3", "112", "112"])
        );
        assert_eq!(report["output_shape"], serde_json::json!([n, 512]));
        assert_eq!(report["opset"], export::ONNX_OPSET);
        assert_eq!(report["insightface_mean"], 127.5);
        assert_eq!(report["insightface_std"], 127.5);
        if !f16 {
            let back = import_auto::<B>(&path, &Default::default()).unwrap();
            assert_eq!(back.spec(), mbf.spec());
            assert_eq!(state(&back), state(&mbf), "read back to the same weights");
        }
    }
    // An IResNet with non-trivial BatchNorm statistics (a PyTorch-made state dict).
    let tiny =
        import_auto::<B>(&fixture("backbones/tiny_iresnet.pth"), &Default::default()).unwrap();
    let path = dir.path().join("tiny.onnx");
    export_onnx(&tiny, &path, false);
    let x = fixed_input(2);
    let (theirs, _) = onnx_runtime(&path, &x, 2);
    let expected = ours(&tiny, &x, 2);
    assert!(max_relative_error(&theirs, &expected) < 1e-4);
    let back = import_auto::<B>(&path, &Default::default()).unwrap();
    assert_eq!(
        state(&back),
        state(&tiny),
        "IResNet read back to the same weights"
    );
}

/// The tensors of a `.pth` file as our PyTorch reader sees them, by key.
fn read_pth(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    burn_store::pytorch::PytorchReader::new(path)
        .unwrap()
        .into_tensors()
        .into_iter()
        .map(|(k, t)| {
            let data = t.to_data().unwrap();
            (
                k,
                (
                    t.shape.to_vec(),
                    data.convert::<f32>().to_vec::<f32>().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn pth_export_is_the_state_dict_pytorch_saved() {
    let dir = tempfile::tempdir().unwrap();
    let original = fixture("backbones/tiny_iresnet.pth");
    let net = import_auto::<B>(&original, &Default::default()).unwrap();
    let path = dir.path().join("tiny.pth");
    export::write_pth(&path, &state(&net)).unwrap();
    let (ours, theirs) = (read_pth(&path), read_pth(&original));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (key, (shape, values)) in &theirs {
        assert_eq!(&ours[key].0, shape, "{key}");
        if !key.ends_with("num_batches_tracked") {
            assert_eq!(&ours[key].1, values, "{key}: values differ");
        }
    }
    let back = import_auto::<B>(&path, &Default::default()).unwrap();
    assert_eq!(state(&back), state(&net));
}

#[test]
fn safetensors_export_has_the_same_names_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let net = import_auto::<B>(&fixture("backbones/tiny_mbf.pth"), &Default::default()).unwrap();
    let tensors = state(&net);
    let path = dir.path().join("tiny.safetensors");
    export::write_safetensors(&path, &tensors, &[("architecture", net.name())]).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let data = &bytes[8 + len..];
    assert_eq!(header["__metadata__"]["architecture"], net.name());
    assert_eq!(header.as_object().unwrap().len(), tensors.len() + 1);
    for t in &tensors {
        let entry = &header[&t.key];
        assert_eq!(entry["shape"], serde_json::json!(t.shape), "{}", t.key);
        let [a, b] = [0, 1].map(|i| entry["data_offsets"][i].as_u64().unwrap() as usize);
        match &t.values {
            Some(v) => {
                assert_eq!(entry["dtype"], "F32");
                let stored: Vec<f32> = data[a..b]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                assert_eq!(&stored, v, "{}", t.key);
            }
            None => assert_eq!(entry["dtype"], "I64"),
        }
    }
}

#[test]
fn state_dicts_carry_arcface_torch_keys_and_shapes() {
    let fx = read_json("backbones/state_dict_keys.json");
    for name in ["r18", "mbf"] {
        let spec = BackboneConfig::from_name(name).unwrap();
        let net = spec.init::<B>(&Default::default()).unwrap();
        let mut ours: Vec<(String, Vec<usize>)> =
            state(&net).into_iter().map(|t| (t.key, t.shape)).collect();
        let mut theirs: Vec<(String, Vec<usize>)> =
            serde_json::from_value(fx["keys"][name].clone()).unwrap();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{name}");
    }
}

/// PyTorch 2.15 loaded these exact exported bytes strictly into arcface_torch's architectures
/// (tools/make_torch_export_fixture.py): today's exporter writes the same bytes, and our forward
/// matches what PyTorch computed from them.
#[test]
fn pytorch_loads_the_exported_pth_and_computes_our_embeddings() {
    let fx = read_json("backbones/torch_export.json");
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let cases = [
        ("w600k_mbf", real_data().join("models/w600k_mbf.onnx")),
        ("tiny_iresnet", fixture("backbones/tiny_iresnet.pth")),
    ];
    for (name, source) in cases {
        let case = &fx["cases"][name];
        let net = import_auto::<B>(&source, &device).unwrap();
        let path = dir.path().join(format!("{name}.pth"));
        export::write_pth(&path, &state(&net)).unwrap();
        assert_eq!(
            sha256_hex(&std::fs::read(&path).unwrap()),
            case["sha256"].as_str().unwrap(),
            "{name}: the exporter's bytes changed since PyTorch checked them; re-run tools/make_torch_export_fixture.py"
        );
        let theirs: Vec<f32> = case["output"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
            })
            .collect();
        let (x, n, dim) = if name == "w600k_mbf" {
            let pixels: Vec<Vec<u8>> = case["faces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    let p = real_data().join("faces").join(f.as_str().unwrap());
                    image::open(p).unwrap().to_rgb8().into_raw()
                })
                .collect();
            let slices: Vec<&[u8]> = pixels.iter().map(Vec::as_slice).collect();
            let x = faces_to_tensor::<B>(&slices, &device).unwrap();
            (x.into_data().to_vec::<f32>().unwrap(), pixels.len(), 512)
        } else {
            (fixed_input(2), 2, 24)
        };
        let ours = ours(&net, &x, n);
        let worst = worst_cosine(&ours, &theirs, dim);
        eprintln!("{name}: PyTorch on our .pth vs our forward, worst cosine {worst:.8}");
        assert!(worst >= 0.99999, "{name}: cosine {worst}");
    }
}
