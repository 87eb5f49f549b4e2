//! The `arcface` binary end to end: `info`, and `import` of insightface's w600k_mbf.onnx followed
//! by `embed` on real aligned faces, against ONNX Runtime's embeddings
//! (datasets/fixtures/faces/w600k_mbf_reference.json, ONNX Runtime 1.32.0).

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn arcface(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "arcface {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn info_reports_the_exact_parameter_count_as_json() {
    let counts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("datasets/fixtures/backbones/param_counts.json"))
            .unwrap(),
    )
    .unwrap();
    for arch in ["r50", "mbf"] {
        let report = json(&arcface(&["info", "--backbone", arch, "--json"]));
        assert_eq!(report["params"], counts["params"][arch], "{arch}");
        assert!(
            report["flops"].as_u64().unwrap() > 0
                && report["record_bytes_f32"].as_u64().unwrap() > 0
        );
    }
    let table = arcface(&["info", "--backbone", "r18"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("24025600"));
}

#[test]
fn import_then_embed_reproduces_onnx_runtime() {
    let status = Command::new("python3")
        .arg(root().join("datasets/fetch_real.py"))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "datasets/fetch_real.py failed; the test needs the real faces and weights"
    );
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mbf.arcface");
    let onnx = root().join("datasets/cache/models/w600k_mbf.onnx");
    // With --arch, and with the architecture read off the graph.
    let import = |out: &std::path::Path, precision: &str, arch: &[&str]| {
        let mut args = vec![
            "import",
            "--from",
            onnx.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(["--precision", precision]);
        args.extend(arch);
        arcface(&args)
    };
    import(&model, "f32", &["--arch", "mbf"]);

    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("datasets/fixtures/faces/w600k_mbf_reference.json"))
            .unwrap(),
    )
    .unwrap();
    let faces: Vec<&serde_json::Value> = reference["faces"]
        .as_array()
        .unwrap()
        .iter()
        .take(4)
        .collect();
    let paths: Vec<String> = faces
        .iter()
        .map(|f| {
            root()
                .join("datasets/cache/faces")
                .join(f["face"].as_str().unwrap())
                .display()
                .to_string()
        })
        .collect();
    let embed = |model: &std::path::Path| -> Vec<Vec<f64>> {
        let mut args = vec!["embed", "--model", model.to_str().unwrap()];
        args.extend(paths.iter().map(String::as_str));
        let out = json(&arcface(&args));
        out["embeddings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| floats(&e["embedding"]))
            .collect()
    };
    let ours = embed(&model);
    assert_eq!(ours.len(), faces.len());
    for (a, face) in ours.iter().zip(&faces) {
        let cos = cosine(a, &floats(&face["embedding"]));
        assert!(cos >= 0.9999, "{}: cosine {cos}", face["face"]);
    }

    // A face that is not aligned to 112x112 is refused, not silently resized.
    let small = dir.path().join("small.png");
    image::RgbImage::new(100, 100).save(&small).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args([
            "embed",
            "--model",
            model.to_str().unwrap(),
            small.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("100x100"), "{stderr}");

    // The same model stored as f16: a smaller file, embeddings still close.
    let half = dir.path().join("mbf16.arcface");
    import(&half, "f16", &[]);
    let info = json(&arcface(&[
        "info",
        "--model",
        half.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(info["precision"], "f16");
    assert!(
        info["file_bytes"].as_u64().unwrap() * 10 < std::fs::metadata(&model).unwrap().len() * 6
    );
    for (a, b) in embed(&half).iter().zip(&ours) {
        assert!(cosine(a, b) >= 0.999, "f16 model: cosine {}", cosine(a, b));
    }
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f64>().sqrt()
        * b.iter().map(|x| x * x).sum::<f64>().sqrt())
}

#[test]
fn bad_inputs_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let not_model = dir.path().join("x.arcface");
    std::fs::write(&not_model, b"nope").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(["embed", "--model", not_model.to_str().unwrap(), "face.png"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an arcface-rs model file"));
    let out = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(["info", "--backbone", "r42"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown architecture"));
}
