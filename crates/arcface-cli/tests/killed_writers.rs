//! Every kind of file the project writes survives its writer being killed half-way: the target
//! is absent or the old file, never a part, and the work resumes. The kill is `atomic_file`'s
//! failpoint (`ARCFACE_ABORT_WRITING=<file name>`), which aborts the process while that file's
//! temporary copy is half written.

use std::path::Path;
use std::process::Command;

use test_support::tiny_training;

/// Runs `arcface args`, killed while writing a file named `kill` when given.
fn arcface(args: &[&str], kill: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_arcface"));
    command.args(args);
    if let Some(name) = kill {
        command.env("ARCFACE_ABORT_WRITING", name);
    }
    let out = command.output().unwrap();
    let aborted = !out.status.success();
    assert_eq!(
        aborted,
        kill.is_some(),
        "arcface {args:?} (kill {kill:?}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// No temporary copies left to mistake for data, and `path` is absent or equal to `before`.
fn intact(path: &Path, before: Option<&[u8]>) {
    assert_eq!(
        std::fs::read(path).ok().as_deref(),
        before,
        "{}",
        path.display()
    );
}

#[test]
fn datasets_models_and_reports_survive_a_killed_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = dir.to_str().unwrap();
    let synth = |format: &str, kill: Option<&str>| {
        let args = [
            "data",
            "synth",
            "--out",
            d,
            "--identities",
            "6",
            "--per-identity",
            "4",
            "--held-out",
            "10",
            "--pairs",
            "10",
            "--format",
            format,
            "--seed",
        ];
        let mut args = args.to_vec();
        args.push(if kill.is_some() { "1" } else { "0" });
        arcface(&args, kill)
    };
    // RecordIO: a first write killed leaves nothing; over an existing file, the old one.
    let rec = dir.join("train.rec");
    synth("rec", Some("train.rec"));
    intact(&rec, None);
    synth("rec", None);
    let (old_rec, old_idx) = (
        std::fs::read(&rec).unwrap(),
        std::fs::read(dir.join("train.idx")).unwrap(),
    );
    synth("rec", Some("train.rec"));
    intact(&rec, Some(&old_rec));
    intact(&dir.join("train.idx"), Some(&old_idx));
    synth("rec", Some("train.idx"));
    intact(&dir.join("train.idx"), Some(&old_idx));
    // Verification .bin.
    let bin = dir.join("synthetic.bin");
    synth("bin", None);
    let old_bin = std::fs::read(&bin).unwrap();
    synth("bin", Some("synthetic.bin"));
    intact(&bin, Some(&old_bin));

    // A training run killed while writing its model, its report or a plot resumes to the end.
    let mut config = tiny_training::tiny_training();
    config.checkpoint.every_steps = 1;
    let config_path = dir.join("tiny.toml");
    std::fs::write(&config_path, config.to_toml()).unwrap();
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    let train = [
        "train",
        "--config",
        config_path.to_str().unwrap(),
        "--out",
        r,
    ];
    arcface(&train, Some("model.arcface"));
    intact(&run.join("model.arcface"), None);
    intact(&run.join("report.json"), None);
    for kill in ["loss.png", "report.json"] {
        arcface(&["train", "--resume", r], Some(kill));
        intact(&run.join(kill), None);
    }
    arcface(&["train", "--resume", r], None);
    let model = std::fs::read(run.join("model.arcface")).unwrap();
    assert!(run.join("report.json").is_file() && run.join("loss.png").is_file());
    // Checkpoints: the interrupted ones left nothing behind that a resume would trip on.
    let kept = trainer::Checkpointer::new(&run, 2)
        .unwrap()
        .latest()
        .unwrap();
    assert_eq!(kept.step, 6);

    // int8 model: killed while writing over an existing one, the old file stays.
    let aq8 = dir.join("m.aq8");
    let m = run.join("model.arcface");
    let quantize = [
        "quantize",
        "--model",
        m.to_str().unwrap(),
        "--calib",
        "synthetic",
        "--calib-faces",
        "8",
        "--check-faces",
        "4",
        "--pairs",
        "10",
        "--out",
        aq8.to_str().unwrap(),
    ];
    arcface(&quantize, None);
    let old_aq8 = std::fs::read(&aq8).unwrap();
    arcface(&quantize, Some("m.aq8"));
    intact(&aq8, Some(&old_aq8));
    intact(&m, Some(&model));
}
