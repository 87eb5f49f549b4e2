//! The `arcface` binary end to end: `info`, and `import` of insightface's w600k_mbf.onnx followed
//! by `embed` on real aligned faces, against ONNX Runtime's embeddings
//! (datasets/fixtures/faces/w600k_mbf_reference.json, ONNX Runtime 1.32.0).

use test_support::real_data as support;
use test_support::tiny_training;

use std::process::Command;

use support::{real_data, repo_root as root};

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

/// Runs a command that must fail and returns its stderr.
fn arcface_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "arcface {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
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
    real_data();
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
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a model file arcface-rs reads"));
    let out = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(["info", "--backbone", "r42"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown architecture"));
}

#[test]
fn embed_takes_int8_models_as_well_as_float_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, tiny_training::tiny_training().to_toml()).unwrap();
    let run = dir.path().join("run");
    let (r, c) = (run.to_str().unwrap(), config.to_str().unwrap());
    arcface(&["train", "--config", c, "--out", r]);
    let model = run.join("model.arcface");
    let aq8 = dir.path().join("m.aq8");
    arcface(&[
        "quantize",
        "--model",
        model.to_str().unwrap(),
        "--calib",
        "synthetic",
        "--calib-faces",
        "16",
        "--check-faces",
        "4",
        "--pairs",
        "10",
        "--out",
        aq8.to_str().unwrap(),
    ]);
    // Three aligned faces of the synthetic set.
    let faces = dir.path().join("faces");
    arcface(&[
        "data",
        "synth",
        "--out",
        faces.to_str().unwrap(),
        "--identities",
        "3",
        "--per-identity",
        "1",
    ]);
    let mut images: Vec<String> = std::fs::read_dir(&faces)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".png"))
        .collect();
    images.sort();
    assert_eq!(images.len(), 3);
    let embed = |m: &std::path::Path| {
        let mut args = vec!["embed", "--l2", "--model", m.to_str().unwrap()];
        args.extend(images.iter().map(String::as_str));
        let out = json(&arcface(&args));
        assert_eq!(out["embedding_dim"], 16);
        out["embeddings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| floats(&e["embedding"]))
            .collect::<Vec<_>>()
    };
    let (float, int8) = (embed(&model), embed(&aq8));
    for (f, q) in float.iter().zip(&int8) {
        assert!(cosine(f, q) > 0.98, "int8 vs f32 cosine {}", cosine(f, q));
    }
}

/// A photo folder with identity sub-folders and a broken file, as `arcface align` meets them.
fn photo_tree(dir: &std::path::Path) {
    let photos = real_data().join("photos");
    for (sub, name) in [
        ("newton", "newton.png"),
        ("gauss", "gauss.png"),
        ("group", "t1.jpg"),
        ("group", "gdp.jpg"),
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::copy(photos.join(name), dir.join(sub).join(name)).unwrap();
    }
    std::fs::write(dir.join("group/broken.jpg"), b"not a jpeg").unwrap();
}

#[test]
fn detect_prints_faces_as_json_with_either_detector() {
    let photo = real_data().join("photos/gdp.jpg");
    for (detector, file) in [
        ("scrfd", "scrfd_500m_bnkps.onnx"),
        ("retinaface", "retinaface_mnet025.pth"),
    ] {
        let weights = real_data().join("models").join(file);
        let out = arcface(&[
            "detect",
            "--json",
            "--detector",
            detector,
            "--detector-weights",
            weights.to_str().unwrap(),
            photo.to_str().unwrap(),
        ]);
        let report = json(&out);
        let faces = report["faces"].as_array().unwrap();
        assert_eq!(faces.len(), 5, "{detector}: gdp.jpg has five faces");
        assert!(faces
            .iter()
            .all(|f| f["landmarks"].as_array().unwrap().len() == 5));
        assert!(faces[0]["score"].as_f64().unwrap() > 0.8, "{detector}");
    }
    // The other detector's weights are refused with the file named.
    let wrong = real_data().join("models/retinaface_mnet025.pth");
    let err = arcface_fails(&[
        "detect",
        "--weights",
        wrong.to_str().unwrap(),
        photo.to_str().unwrap(),
    ]);
    assert!(err.contains("retinaface_mnet025.pth"), "{err}");
}

#[test]
fn align_turns_a_photo_folder_into_crops_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = (tmp.path().join("in"), tmp.path().join("out"));
    photo_tree(&input);
    let weights = real_data().join("models/scrfd_500m_bnkps.onnx");
    let args = [
        "align",
        "--in",
        input.to_str().unwrap(),
        "--out",
        output.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--min-size",
        "40",
        "--min-sharpness",
        "0.5",
        "--json",
    ];
    let summary = json(&arcface(&args));
    assert_eq!(summary["photos"], 5);
    assert_eq!(summary["unreadable"], 1);
    assert!(summary["accepted"].as_u64().unwrap() >= 8, "{summary}");
    // Identity folders are kept; crops are 112x112.
    let newton = output.join("newton/newton_00.png");
    assert_eq!(
        image::open(&newton).unwrap().to_rgb8().dimensions(),
        (112, 112)
    );
    assert!(output.join("gauss/gauss_00.png").exists());
    let crops_in_group = std::fs::read_dir(output.join("group")).unwrap().count();
    assert_eq!(
        crops_in_group as u64 + 2,
        summary["accepted"].as_u64().unwrap()
    );
    // The report explains every rejection with the measured value.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join("align_report.json")).unwrap()).unwrap();
    let photos = report["photos"].as_array().unwrap();
    let broken = photos
        .iter()
        .find(|p| p["photo"] == "group/broken.jpg")
        .unwrap();
    assert!(broken["error"].as_str().unwrap().contains("unreadable"));
    for face in photos.iter().flat_map(|p| p["faces"].as_array().unwrap()) {
        let rejections = face["quality"]["rejections"].as_array().unwrap();
        assert_eq!(face["crop"].is_null(), !rejections.is_empty());
    }
    // Running again resumes: nothing is redone or lost.
    let before = std::fs::metadata(&newton).unwrap().modified().unwrap();
    let again = json(&arcface(&args));
    assert_eq!(again["resumed"], 5);
    assert_eq!(again["accepted"], summary["accepted"]);
    assert_eq!(
        std::fs::metadata(&newton).unwrap().modified().unwrap(),
        before
    );
    // Other options on the same output folder are refused rather than mixed in.
    let mut other = args.to_vec();
    other[8] = "100"; // --min-size
    let refused = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(&other)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("other options"));
}

#[test]
fn data_synth_pack_and_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let s = out.to_str().unwrap();
    arcface(&[
        "data",
        "synth",
        "--out",
        s,
        "--identities",
        "6",
        "--per-identity",
        "4",
        "--format",
        "rec",
    ]);
    let summary = json(&arcface(&[
        "data",
        "inspect",
        "--json",
        out.join("train.rec").to_str().unwrap(),
    ]));
    assert_eq!(
        (summary["images"].as_u64(), summary["identities"].as_u64()),
        (Some(24), Some(6))
    );
    assert_eq!(summary["insightface_layout"], true);
    let grid = image::open(summary["grid"].as_str().unwrap()).unwrap();
    assert_eq!(grid.width(), 8 * 112);

    let folder = out.join("folder");
    arcface(&[
        "data",
        "synth",
        "--out",
        folder.to_str().unwrap(),
        "--identities",
        "3",
        "--per-identity",
        "2",
    ]);
    arcface(&[
        "data",
        "pack",
        "--in",
        folder.to_str().unwrap(),
        "--out",
        out.join("f.rec").to_str().unwrap(),
    ]);
    let packed = json(&arcface(&[
        "data",
        "inspect",
        "--json",
        out.join("f.rec").to_str().unwrap(),
    ]));
    assert_eq!(packed["images"], 6);
    // The default grid already exists now: inspect does not overwrite what it was not asked
    // to write, and writes where --grid says.
    let again = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(["data", "inspect", out.join("f.rec").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--grid"));
    let chosen = out.join("chosen.png");
    arcface(&[
        "data",
        "inspect",
        "--grid",
        chosen.to_str().unwrap(),
        out.join("f.rec").to_str().unwrap(),
    ]);
    assert!(chosen.is_file());

    // A corrupt image fails the pack, naming the file, and leaves no .rec behind.
    let corrupt = folder.join("id_000000/0001.png");
    let mut bytes = std::fs::read(&corrupt).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&corrupt, bytes).unwrap();
    let bad_rec = out.join("bad.rec");
    let refused = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(["data", "pack", "--in", folder.to_str().unwrap(), "--out"])
        .arg(&bad_rec)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("0001.png"));
    assert!(!bad_rec.exists());

    arcface(&[
        "data",
        "synth",
        "--out",
        s,
        "--format",
        "bin",
        "--held-out",
        "10",
        "--pairs",
        "20",
    ]);
    let bin = json(&arcface(&[
        "data",
        "inspect",
        "--json",
        out.join("synthetic.bin").to_str().unwrap(),
    ]));
    assert_eq!(
        (bin["pairs"].as_u64(), bin["matched_pairs"].as_u64()),
        (Some(40), Some(20))
    );
}

#[test]
fn train_prints_its_default_config_and_rejects_bad_ones() {
    let out = arcface(&["train", "--print-default-config"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("family = \"i_res_net\"") && text.contains("kind = \"three_stage\""),
        "{text}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        text.replace("epochs = 2.2", "epochs = 2.2\nlearning_rate = 3"),
    )
    .unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(["train", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("learning_rate") && err.contains("bad.toml"),
        "{err}"
    );
}

/// A run small enough to train in seconds, checkpointing every step.
fn tiny_run_config(dir: &std::path::Path) -> std::path::PathBuf {
    let mut config = tiny_training::tiny_training();
    config.epochs = 40.0;
    config.eval.every_steps = 10;
    config.checkpoint.every_steps = 1;
    config.checkpoint.keep_last = 3;
    let path = dir.join("tiny.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    path
}

fn loss_curve(dir: &std::path::Path) -> Vec<(u64, String, Option<f64>)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            // The loss as written (text), so the comparison is bit for bit.
            let loss = l
                .split("\"loss\":")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            (
                v["step"].as_u64().unwrap(),
                loss.to_string(),
                v["accuracy"].as_f64(),
            )
        })
        .collect()
}

#[test]
fn a_run_killed_with_sigkill_resumes_to_the_same_loss_curve() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tiny_run_config(tmp.path());
    let whole = tmp.path().join("whole");
    arcface(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        whole.to_str().unwrap(),
        "--json",
    ]);
    let expected = loss_curve(&whole);
    assert_eq!(expected.len(), 120);

    let cut = tmp.path().join("cut");
    let mut child = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args([
            "train",
            "--config",
            config.to_str().unwrap(),
            "--out",
            cut.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill (SIGKILL) as soon as a few checkpoints exist: the next one may be half written.
    let marker = cut.join("checkpoints/step-000030");
    let start = std::time::Instant::now();
    while !marker.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(start.elapsed().as_secs() < 120, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!cut.join("report.json").exists(), "killed mid-run");
    let partial = loss_curve(&cut);
    assert!(
        partial.len() < expected.len(),
        "{} lines before the kill",
        partial.len()
    );

    let out = arcface(&["train", "--resume", cut.to_str().unwrap(), "--json"]);
    let report = json(&out);
    let from = report["resumed_from_step"].as_u64().unwrap();
    assert!((30..120).contains(&from), "resumed from {from}");
    assert_eq!(report["steps"], 120);
    assert_eq!(
        loss_curve(&cut),
        expected,
        "the resumed run's curve is the uninterrupted one"
    );
    // The finished run's directory: model, plots, checkpoints (last 3 + best).
    for file in [
        "model.arcface",
        "loss.png",
        "lr.png",
        "accuracy.png",
        "report.json",
    ] {
        assert!(cut.join(file).exists(), "{file}");
    }
    let kept = trainer::Checkpointer::new(&cut, 3)
        .unwrap()
        .steps()
        .unwrap();
    assert!(
        kept.len() <= 4 && kept.ends_with(&[118, 119, 120]),
        "{kept:?}"
    );
    // Resuming a finished run is refused: nothing more to do... or continues to the same end.
    let again = arcface(&["train", "--resume", cut.to_str().unwrap(), "--json"]);
    assert_eq!(json(&again)["steps"], 120);
}

#[test]
fn eval_reports_verification_and_identification_with_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_run_config(tmp.path());
    // A few steps are enough: this checks the command, not the model.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("epochs = 40.0", "epochs = 2.0");
    config = tmp.path().join("short.toml");
    std::fs::write(&config, text).unwrap();
    let run = tmp.path().join("run");
    arcface(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--json",
    ]);
    let model = run.join("model.arcface");
    let plots = tmp.path().join("plots");
    let out = arcface(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--synthetic",
        "--synthetic-pairs",
        "60",
        "--distractors",
        "100",
        "--json",
        "--plots",
        plots.to_str().unwrap(),
    ]);
    let report = json(&out);
    let v = &report["verification"];
    assert_eq!(v["pairs"], 120);
    let acc = v["ten_fold"]["accuracy_mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(v["tar_at_far"].as_array().unwrap().len(), 6);
    let id = &report["identification"];
    assert_eq!(id["gallery_identities"], 250);
    assert_eq!(
        (id["mated_probes"].as_u64(), id["non_mated_probes"].as_u64()),
        (Some(250), Some(250))
    );
    let rank1 = id["closed_set"]["rank1"].as_f64().unwrap();
    assert!(rank1 <= id["closed_set"]["rank5"].as_f64().unwrap());
    assert_eq!(
        id["rank1_by_distractors"].as_array().unwrap().len(),
        2,
        "10 and 100"
    );
    for name in ["roc.png", "scores.png", "cmc.png", "distractors.png"] {
        assert!(image::open(plots.join(name)).is_ok(), "{name}");
    }
    // The table, and a .bin set.
    let held = face_data::SyntheticFaces::held_out(face_data::SyntheticConfig::default()).unwrap();
    let bin = tmp.path().join("set.bin");
    face_data::verification_pairs(&held, 10, 3)
        .unwrap()
        .write(&bin)
        .unwrap();
    let table = arcface(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--bin",
        bin.to_str().unwrap(),
    ]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.contains("accuracy (10-fold)") && text.contains("TAR@FAR=1e-3"),
        "{text}"
    );
    // No pair set: a clear error.
    let none = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(["eval", "--model", model.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("--synthetic"));
}

#[test]
fn export_writes_onnx_pth_and_safetensors_that_import_back() {
    let dir = tempfile::tempdir().unwrap();
    let source = root().join("datasets/fixtures/backbones/tiny_iresnet.pth");
    for format in ["onnx", "pth", "safetensors"] {
        let out = dir.path().join(format!("tiny.{format}"));
        let report = json(&arcface(&[
            "export",
            "--json",
            "--model",
            source.to_str().unwrap(),
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
        ]));
        assert_eq!(report["format"], format);
        assert_eq!(
            report["bytes"].as_u64().unwrap(),
            std::fs::metadata(&out).unwrap().len()
        );
        assert!(report["architecture"]
            .as_str()
            .unwrap()
            .starts_with("IResNet"));
    }
    // The ONNX and .pth files import back as models.
    for format in ["onnx", "pth"] {
        let model = dir.path().join(format!("back_{format}.arcface"));
        let from = dir.path().join(format!("tiny.{format}"));
        arcface(&[
            "import",
            "--from",
            from.to_str().unwrap(),
            "--out",
            model.to_str().unwrap(),
        ]);
    }
    let err = arcface_fails(&[
        "export",
        "--model",
        source.to_str().unwrap(),
        "--format",
        "pth",
        "--f16",
        "--out",
        dir.path().join("x.pth").to_str().unwrap(),
    ]);
    assert!(err.contains("--f16 applies to ONNX only"), "{err}");
    let err = arcface_fails(&[
        "export",
        "--model",
        "no/such.arcface",
        "--format",
        "onnx",
        "--out",
        "x.onnx",
    ]);
    assert!(err.contains("no/such.arcface"), "{err}");
}

#[test]
fn train_with_a_teacher_that_is_not_there_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let err = arcface_fails(&[
        "train",
        "--teacher",
        "no/such/run",
        "--epochs",
        "0.01",
        "--out",
        dir.path().join("run").to_str().unwrap(),
    ]);
    assert!(err.contains("no/such/run"), "{err}");
}

#[test]
fn train_from_a_run_adds_the_people_of_an_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::write(path("tiny.toml"), tiny_training::tiny_training().to_toml()).unwrap();
    arcface(&[
        "train",
        "--config",
        &path("tiny.toml"),
        "--out",
        &path("base"),
    ]);
    // Two new people and one the base run knows by name (its synthetic person 2).
    let people = face_data::SyntheticFaces::train(face_data::SyntheticConfig {
        first_identity: 20,
        identities: 3,
        per_identity: 6,
        ..Default::default()
    })
    .unwrap();
    // 6 images each: 2 kept back for the report, 12 to train on (one batch of 8).
    for (k, name) in ["ann", "bob", "synthetic-0-2"].iter().enumerate() {
        let folder = dir.path().join("new").join(name);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..6 {
            let image = face_data::FaceDataset::get(&people, 6 * k + i)
                .unwrap()
                .image;
            image.save(folder.join(format!("{i}.png"))).unwrap();
        }
    }
    let report = json(&arcface(&[
        "train",
        "--from",
        &path("base"),
        "--add",
        &path("new"),
        "--epochs",
        "1",
        "--out",
        &path("round"),
        "--json",
    ]));
    assert!(report["steps"].as_u64().unwrap() > 0, "{report}");
    for key in ["old_identification", "new_identification"] {
        assert!(report["evals"][key].as_f64().is_some(), "{report}");
    }
    let names = face_data::read_names(&dir.path().join("round/identities.json")).unwrap();
    assert_eq!(names.len(), 8, "{names:?}");
    assert_eq!(names[6..], ["ann", "bob"]);
    assert_eq!(names[2], "synthetic-0-2");

    let err = arcface_fails(&[
        "train",
        "--from",
        &path("base/model.arcface"),
        "--add",
        &path("new"),
        "--out",
        &path("refused"),
    ]);
    assert!(err.contains("not a training run folder"), "{err}");
}
