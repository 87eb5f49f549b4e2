//! `arcface train --nodes`: processes on loopback train the weights one process with as many
//! devices trains; a killed node stops the others at once, a frozen one within the timeout;
//! a restart with `--resume` continues every node from their last common checkpoint.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iresnet::burn::backend::{Autodiff, Flex};
use iresnet::burn::module::{Module, ModuleVisitor, Param};
use iresnet::burn::tensor::{backend::Backend, Tensor};
use test_support::net::free_ports;
use test_support::tiny_training;

type Ad = Autodiff<Flex>;

/// A tiny run of `steps` optimiser steps (3 per epoch), checkpointing every step.
fn config(dir: &Path, steps: u32) -> PathBuf {
    let mut config = tiny_training::tiny_training();
    config.epochs = f64::from(steps) / 3.0;
    config.checkpoint.every_steps = 1;
    config.checkpoint.keep_last = 3;
    let path = dir.join(format!("tiny-{steps}.toml"));
    std::fs::write(&path, config.to_toml()).unwrap();
    path
}

/// Node `rank` of `nodes`, training per `args` (`--config ...` or `--resume ...`).
fn node(args: &[&str], nodes: u16, rank: u16, port: u16, timeout: u32) -> Child {
    Command::new(env!("CARGO_BIN_EXE_arcface"))
        .arg("train")
        .args(args)
        .args([
            "--nodes",
            &nodes.to_string(),
            "--node-rank",
            &rank.to_string(),
        ])
        .args(["--coordinator", &format!("127.0.0.1:{port}")])
        .args(["--node-timeout", &timeout.to_string(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "a node failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Trains `nodes` processes to the end; their reports.
fn run_nodes(args: &[&str], nodes: u16) -> Vec<serde_json::Value> {
    let port = free_ports(nodes);
    let children: Vec<Child> = (0..nodes)
        .map(|r| node(args, nodes, r, port, 120))
        .collect();
    children.into_iter().map(finish).collect()
}

/// Every float of the run's newest checkpoint (backbone, head, BatchNorm statistics), in order.
fn weights(run: &Path) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.val().into_data().to_vec().unwrap());
        }
    }
    let saved = trainer::load_run::<Ad>(run, &Default::default()).unwrap();
    let mut all = Collect(vec![]);
    saved.model.visit(&mut all);
    all.0
}

/// The largest |a - b| over the largest |a|, over every tensor.
fn relative_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    let (mut diff, mut scale) = (0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len());
        for (p, q) in x.iter().zip(y) {
            diff = diff.max((p - q).abs());
            scale = scale.max(p.abs());
        }
    }
    diff / scale
}

/// One process training per `args`, to the end.
fn train_alone(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .arg("train")
        .args(args)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "arcface train {args:?}: {said}");
}

#[test]
fn two_nodes_train_the_weights_of_one_process_with_two_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path(), 8);
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let config = config.to_str().unwrap();
    train_alone(&[
        "--config",
        config,
        "--devices",
        "2",
        "--out",
        one.to_str().unwrap(),
    ]);

    let reports = run_nodes(&["--config", config, "--out", two.to_str().unwrap()], 2);
    for report in &reports {
        assert_eq!(report["steps"], 8);
    }
    let expected = weights(&one);
    let (rank0, rank1) = (weights(&two), weights(&two.join("node-1")));
    assert_eq!(rank0, rank1, "every node holds the same bits");
    let rel = relative_difference(&expected, &rank0);
    assert!(
        rel <= 1e-5,
        "two processes vs one with two devices: {rel:e}"
    );
    // Not trivially equal: training moved the weights.
    let fresh = tmp.path().join("fresh");
    let zero = self::config(tmp.path(), 0);
    train_alone(&[
        "--config",
        zero.to_str().unwrap(),
        "--out",
        fresh.to_str().unwrap(),
    ]);
    assert!(relative_difference(&expected, &weights(&fresh)) > 1e-2);
}

/// Waits until `path` exists (the node writing it is still running).
fn wait_for(path: &Path, child: &mut Child) {
    let start = Instant::now();
    while !path.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended first");
        assert!(start.elapsed() < Duration::from_secs(120), "no {path:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Rank 0's exit after its peer was killed or frozen: failed, how long after, and what it said.
fn failed_within(rank0: Child, since: Instant) -> (Duration, String) {
    let out = rank0.wait_with_output().unwrap();
    let elapsed = since.elapsed();
    assert!(!out.status.success(), "rank 0 finished without its peer");
    (elapsed, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Two nodes training into `out` (node timeout `timeout` s), once node 1 has checkpointed `step`.
fn two_nodes_past(config: &str, out: &Path, step: u32, timeout: u32) -> (Child, Child) {
    let args = ["--config", config, "--out", out.to_str().unwrap()];
    let port = free_ports(2);
    let rank0 = node(&args, 2, 0, port, timeout);
    let mut rank1 = node(&args, 2, 1, port, timeout);
    wait_for(
        &out.join(format!("node-1/checkpoints/step-{step:06}")),
        &mut rank1,
    );
    (rank0, rank1)
}

#[test]
fn a_lost_node_stops_the_others_and_all_resume_from_their_last_common_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path(), 60);
    let config = config.to_str().unwrap();
    let whole = tmp.path().join("whole");
    run_nodes(&["--config", config, "--out", whole.to_str().unwrap()], 2);

    // Killed: its connection closes, and rank 0 stops at its next exchange.
    let cut = tmp.path().join("cut");
    let (rank0, mut rank1) = two_nodes_past(config, &cut, 20, 60);
    rank1.kill().unwrap();
    let killed = Instant::now();
    rank1.wait().unwrap();
    let (elapsed, said) = failed_within(rank0, killed);
    println!("rank 0 stopped {elapsed:?} after its peer was killed");
    assert!(elapsed < Duration::from_secs(10), "rank 0 took {elapsed:?}");
    assert!(
        said.contains("multi-node run") && said.contains("--resume"),
        "{said}"
    );

    // Resumed: both continue from the newest step both hold, to the uninterrupted weights.
    let resume = ["--resume", cut.to_str().unwrap()];
    let reports = run_nodes(&resume, 2);
    let from = reports[0]["resumed_from_step"].as_u64().unwrap();
    assert_eq!(reports[1]["resumed_from_step"].as_u64(), Some(from));
    assert!((20..60).contains(&from), "resumed from {from}");
    let rel = relative_difference(&weights(&whole), &weights(&cut));
    assert!(rel <= 1e-5, "resumed vs uninterrupted: {rel:e}");

    // Frozen (SIGSTOP): its connection stays open, and rank 0 gives up after the timeout.
    let frozen = tmp.path().join("frozen");
    let (rank0, mut rank1) = two_nodes_past(config, &frozen, 5, 8);
    let stop = Command::new("kill")
        .args(["-STOP", &rank1.id().to_string()])
        .status()
        .unwrap();
    assert!(stop.success());
    let stopped = Instant::now();
    let (elapsed, said) = failed_within(rank0, stopped);
    println!("rank 0 stopped {elapsed:?} after its peer froze (timeout 8 s)");
    rank1.kill().unwrap();
    rank1.wait().unwrap();
    assert!(
        elapsed >= Duration::from_secs(7) && elapsed < Duration::from_secs(30),
        "rank 0 took {elapsed:?} with an 8 s timeout"
    );
    assert!(said.contains("did not answer within 8 s"), "{said}");
}

#[test]
fn nodes_with_several_devices_each_stay_in_step() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path(), 6);
    let run = tmp.path().join("two-by-two");
    let args = ["--config", config.to_str().unwrap(), "--devices", "2"];
    let reports = run_nodes(&[&args[..], &["--out", run.to_str().unwrap()]].concat(), 2);
    for report in &reports {
        assert_eq!(
            (report["steps"].as_u64(), report["devices"].as_u64()),
            (Some(6), Some(2))
        );
    }
    assert_eq!(weights(&run), weights(&run.join("node-1")));
}
