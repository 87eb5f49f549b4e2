//! `arcface train`: the project's main command.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use iresnet::burn::tensor::backend::AutodiffBackend;
use trainer::{train, TrainConfig};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Training config (TOML). Without it: the built-in run, a small IResNet on the synthetic
    /// identities, evaluated on held-out ones (`--print-default-config` shows every setting).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output directory: config.toml, metrics.jsonl, model.arcface, report.json.
    #[arg(long, default_value = "runs/default")]
    out: PathBuf,
    /// Print the default config as TOML and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Override the config's epochs.
    #[arg(long)]
    epochs: Option<f64>,
    /// Override the config's wall-time limit (seconds; 0 = none).
    #[arg(long)]
    time_limit: Option<u64>,
    /// Print the final report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run<B: AutodiffBackend>(args: &TrainArgs, device: &B::Device) -> Result<()> {
    if args.print_default_config {
        print!("{}", TrainConfig::default().to_toml());
        return Ok(());
    }
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            TrainConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => TrainConfig::default(),
    };
    if let Some(e) = args.epochs {
        config.epochs = e;
    }
    if let Some(t) = args.time_limit {
        config.time_limit_secs = t;
    }
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed}/{eta} {msg}")
            .expect("valid template"),
    );
    let mut accuracy = String::new();
    let report = train::<B>(&config, &args.out, device, |s| {
        bar.set_length(s.total_steps);
        bar.set_position(s.step);
        if let Some(a) = s.accuracy {
            accuracy = format!(" verification {:.2}%", 100.0 * a);
        }
        bar.set_message(format!(
            "epoch {:.2} loss {:.3} lr {:.4} {:.0} img/s{accuracy}",
            s.epoch, s.loss, s.lr, s.images_per_sec
        ));
    })?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "trained {} steps ({:.2} epochs, {} images, batch {}) in {:.0} s{}",
            report.steps,
            report.epochs,
            report.images,
            report.effective_batch,
            report.wall_secs,
            if report.stopped_by_time_limit {
                " (time limit)"
            } else {
                ""
            }
        );
        println!(
            "held-out verification accuracy: {:.2}% (best {:.2}%), final loss {:.3}",
            100.0 * report.final_accuracy,
            100.0 * report.best_accuracy,
            report.final_loss
        );
        println!("model: {}", report.model.display());
        println!(
            "metrics: {}, report: {}",
            report.metrics.display(),
            args.out.join("report.json").display()
        );
    }
    Ok(())
}
