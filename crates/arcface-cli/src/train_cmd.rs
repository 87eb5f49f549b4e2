//! `arcface train`: the project's main command.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use iresnet::burn::tensor::backend::{Device, DeviceId};
use iresnet::ConvAutodiffBackend;
use trainer::{resume, train, StepInfo, TrainConfig};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Training config (TOML). Without it: the built-in run, a small IResNet on the synthetic
    /// identities, evaluated on held-out ones (`--print-default-config` shows every setting).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output directory: config.toml, metrics.jsonl, checkpoints/, model.arcface, loss.png,
    /// lr.png, accuracy.png, report.json.
    #[arg(long, default_value = "runs/default")]
    out: PathBuf,
    /// Continue the run in DIR from its newest intact checkpoint, with the config it started
    /// with (after a crash, a kill or a time limit); the curve continues as if never stopped.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "print_default_config", "epochs", "time_limit", "teacher", "from", "add"])]
    resume: Option<PathBuf>,
    /// Data-parallel replicas: each batch is split over this many devices (GPUs 0..N with
    /// --device cuda; threads sharing the CPU with --device cpu). The batch size and learning
    /// rate stay the config's: the gradient is the whole batch's mean either way.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    devices: u16,
    /// Train across N processes (on this host or several; docs/training.md "Several
    /// machines"): every process runs this command with the same config, --nodes and
    /// --coordinator, and its own --node-rank. Each trains on its part of every batch and the
    /// gradients are summed over all of them after each backward pass (a ring all-reduce over
    /// Burn's WebSocket transport), so the batch and learning rate stay the config's. tools/launch_nodes.sh starts N on one host.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    nodes: u16,
    /// This process's rank, 0..N-1. Rank 0 runs the rendezvous at --coordinator and writes
    /// into --out; rank R > 0 writes into OUT/node-R (its checkpoints, metrics and report).
    #[arg(long, default_value_t = 0, requires = "coordinator")]
    node_rank: u16,
    /// HOST:PORT of rank 0's rendezvous, which every node connects to (e.g. 10.0.0.1:29500).
    #[arg(long, value_name = "HOST:PORT")]
    coordinator: Option<String>,
    /// HOST:PORT where this node serves its tensors to the others (default: the coordinator's
    /// host and its port + 1 + rank, right for nodes on one host; give this machine's own
    /// address when the nodes are on several).
    #[arg(long, value_name = "HOST:PORT", requires = "coordinator")]
    node_address: Option<String>,
    /// Seconds any exchange between nodes may wait for the others (joining included) before
    /// this node stops with an error: more than the slowest node's step plus an evaluation.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    node_timeout: u64,
    /// Print the default config as TOML and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Override the config's epochs.
    #[arg(long)]
    epochs: Option<f64>,
    /// Override the config's wall-time limit (seconds; 0 = none).
    #[arg(long)]
    time_limit: Option<u64>,
    /// Distil this teacher into the run (knowledge distillation, docs/distillation.md): a
    /// training run's folder (backbone and head) or a model file (`.arcface`, `.onnx`, `.pth`).
    /// Sets the config's `[distill] teacher`, adding the section with its default weights
    /// (embedding term 1) when the config has none.
    #[arg(long, value_name = "RUN_OR_MODEL")]
    teacher: Option<PathBuf>,
    /// Continual learning (docs/continual.md): continue the trained run in this folder on new
    /// identities instead of starting afresh. Its head grows by the new people (imprinted
    /// from their mean embedding); by default only the head trains. Without --config the old
    /// run's config is used; the config's `[continual]` section sets what trains, the replay
    /// buffer and distillation from the old model.
    #[arg(long, value_name = "RUN")]
    from: Option<PathBuf>,
    /// The new data for --from: an identity-per-folder image tree, or a `.rec` (with its
    /// `names.json`, so known people are recognised by name).
    #[arg(long, value_name = "DATA", requires = "from")]
    add: Option<PathBuf>,
    /// Print the final report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run<B: ConvAutodiffBackend>(args: &TrainArgs, device: &B::Device) -> Result<()> {
    if args.print_default_config {
        print!("{}", TrainConfig::default().to_toml());
        return Ok(());
    }
    let base = device.to_id();
    let devices: Vec<B::Device> = (0..args.devices)
        .map(|i| B::Device::from_id(DeviceId::new(base.type_id, base.index_id + i)))
        .collect();
    if let Some(cluster) = cluster(args)? {
        return run_node::<B>(args, &cluster, &devices);
    }
    let (bar, mut show) = progress();
    let (report, out) = match &args.resume {
        Some(dir) => (resume::<B>(dir, &devices, &mut show)?, dir.clone()),
        None => {
            let config = config_from(args)?;
            (
                train::<B>(&config, &args.out, &devices, &mut show)?,
                args.out.clone(),
            )
        }
    };
    bar.finish_and_clear();
    print_report(&report, &out, args.json)
}

/// The multi-node settings, when --nodes or --coordinator asks for them.
fn cluster(args: &TrainArgs) -> Result<Option<trainer::ClusterConfig>> {
    let Some(coordinator) = &args.coordinator else {
        if args.nodes > 1 {
            anyhow::bail!("--nodes {} needs --coordinator HOST:PORT (rank 0's address, which every node connects to)", args.nodes);
        }
        return Ok(None);
    };
    let resolve = |flag: &str, text: &str| -> Result<std::net::SocketAddr> {
        use std::net::ToSocketAddrs;
        text.to_socket_addrs()
            .with_context(|| format!("{flag} {text}: not a HOST:PORT address"))?
            .next()
            .with_context(|| format!("{flag} {text}: the host has no address"))
    };
    let coordinator = resolve("--coordinator", coordinator)?;
    let (nodes, rank) = (args.nodes as usize, args.node_rank as usize);
    if rank >= nodes {
        anyhow::bail!(
            "--node-rank {rank} with --nodes {nodes}: ranks run from 0 to {}",
            nodes - 1
        );
    }
    let mut cluster = trainer::ClusterConfig::local(nodes, rank, coordinator);
    if let Some(addr) = &args.node_address {
        cluster.node_address = resolve("--node-address", addr)?;
    }
    cluster.timeout = std::time::Duration::from_secs(args.node_timeout.max(1));
    Ok(Some(cluster))
}

/// One node of a multi-node run: rank 0 in --out (or the --resume folder), rank R in its node-R.
fn run_node<B: ConvAutodiffBackend>(
    args: &TrainArgs,
    cluster: &trainer::ClusterConfig,
    devices: &[B::Device],
) -> Result<()> {
    let base = args.resume.as_ref().unwrap_or(&args.out);
    let out = match cluster.rank {
        0 => base.clone(),
        r => base.join(format!("node-{r}")),
    };
    let config = match args.resume {
        Some(_) => TrainConfig::default(),
        None => config_from(args)?,
    };
    let (bar, mut show) = progress();
    let report = trainer::train_nodes::<B>(
        &config,
        &out,
        devices,
        cluster,
        args.resume.is_some(),
        &mut show,
    )?;
    bar.finish_and_clear();
    print_report(&report, &out, args.json)
}

/// A progress bar over the run's steps and the callback that moves it (loss, rate, and the
/// accuracies of each evaluation).
pub(crate) fn progress() -> (indicatif::ProgressBar, impl FnMut(&StepInfo)) {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed}/{eta} {msg}")
            .expect("valid template"),
    );
    let shown = bar.clone();
    let mut accuracy = String::new();
    let show = move |s: &StepInfo| {
        shown.set_length(s.total_steps);
        shown.set_position(s.step);
        if s.accuracy.is_some() || !s.evals.is_empty() {
            accuracy = s.accuracy.map_or(String::new(), |a| {
                format!(" verification {:.2}%", 100.0 * a)
            });
            for (name, v) in &s.evals {
                accuracy += &format!(" {name} {:.2}%", 100.0 * v);
            }
        }
        shown.set_message(format!(
            "epoch {:.2} loss {:.3} lr {:.4} {:.0} img/s{accuracy}",
            s.epoch, s.loss, s.lr, s.images_per_sec
        ));
    };
    (bar, show)
}

fn config_from(args: &TrainArgs) -> Result<TrainConfig> {
    let mut config = match (&args.config, &args.from) {
        (Some(path), _) => read_config(path)?,
        (None, Some(from)) => {
            if !from.is_dir() {
                anyhow::bail!(
                    "--from {}: not a training run folder: growing a model needs its head (the class centres), which only a run's checkpoints hold; name the folder `arcface train --out` wrote",
                    from.display()
                );
            }
            if args.add.is_none() {
                anyhow::bail!(
                    "--from {} without --config: name the new identities with --add DATA",
                    from.display()
                );
            }
            read_config(&from.join("config.toml"))?
        }
        (None, None) => TrainConfig::default(),
    };
    if let Some(from) = &args.from {
        let continual = config.continual.get_or_insert_with(Default::default);
        // Absolute, so the run resumes from any directory.
        continual.from = std::path::absolute(from).unwrap_or_else(|_| from.clone());
        // A continual round distils from its old run, not from the old run's own teacher.
        config.distill = None;
    }
    if let Some(add) = &args.add {
        config.data = data_source(add)?;
        if config.eval.data == trainer::EvalData::HeldOut {
            // Held-out identities come with synthetic data only: the old/new report (and any
            // pairs the config names) is what a round on real data evaluates.
            config.early_stopping.metric = trainer::StopMetric::Off;
        }
    }
    if let Some(e) = args.epochs {
        config.epochs = e;
    }
    if let Some(t) = args.time_limit {
        config.time_limit_secs = t;
    }
    if let Some(teacher) = &args.teacher {
        config.distill.get_or_insert_with(Default::default).teacher = teacher.clone();
    }
    Ok(config)
}

fn read_config(path: &std::path::Path) -> Result<TrainConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    TrainConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))
}

/// `--add`'s data: a `.rec` file or an image folder.
fn data_source(path: &std::path::Path) -> Result<trainer::DataSource> {
    match (path.is_dir(), path.extension().and_then(|e| e.to_str())) {
        (true, _) => Ok(trainer::DataSource::Folder { path: path.into() }),
        (false, Some("rec")) if path.is_file() => {
            Ok(trainer::DataSource::Rec { path: path.into() })
        }
        _ => anyhow::bail!(
            "--add {}: not an image folder (root/<identity>/*.jpg) or a .rec file",
            path.display()
        ),
    }
}

fn print_report(report: &trainer::TrainReport, out: &std::path::Path, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let stop = if report.stopped_early {
            " (early stopping)"
        } else if report.stopped_by_time_limit {
            " (time limit)"
        } else {
            ""
        };
        println!(
            "trained {} steps ({:.2} epochs, {} images, batch {} on {} device(s)) in {:.0} s{stop}",
            report.steps,
            report.epochs,
            report.images,
            report.effective_batch,
            report.devices,
            report.wall_secs,
        );
        if let Some(from) = report.resumed_from_step {
            println!("resumed from the checkpoint of step {from}");
        }
        match (report.final_accuracy, report.best_accuracy) {
            (Some(last), Some(best)) => println!(
                "verification accuracy: {:.2}% (best {:.2}%), final loss {:.3}",
                100.0 * last,
                100.0 * best,
                report.final_loss
            ),
            _ => println!(
                "final loss {:.3} (no verification pairs configured)",
                report.final_loss
            ),
        }
        for (name, value) in &report.evals {
            println!("{name}: {:.2}%", 100.0 * value);
        }
        if let Some(share) = report.collapse_share {
            println!(
                "top-10 singular values: {:.0}% of the embedding spectrum",
                100.0 * share
            );
        }
        if let Some(model) = &report.model {
            println!("model: {}", model.display());
        }
        println!(
            "checkpoints: {} (best: {})",
            report.checkpoints.display(),
            report
                .best_checkpoint
                .as_ref()
                .map_or("none".into(), |p| p.display().to_string())
        );
        let plots: Vec<String> = report
            .plots
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        println!("plots: {}", plots.join(", "));
        println!(
            "metrics: {}, report: {}",
            report.metrics.display(),
            out.join("report.json").display()
        );
    }
    Ok(())
}
