//! `arcface multimodal`: one row of docs/multimodal.md's table, a model over RGB, near-infrared
//! and depth images trained on the synthetic identities and verified by day, at night and with
//! a modality missing.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use face_data::Modality;
use iresnet::ConvAutodiffBackend;
use trainer::multimodal::{FusionModel, FusionRun};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Model {
    /// One IResNet whose stem takes every plane (with one modality: a model of it alone).
    Early,
    /// One IResNet per modality, embeddings concatenated and fused by a linear layer.
    Late,
    /// One IResNet per modality, embeddings fused by learned per-modality weights.
    LateWeighted,
}

#[derive(Args, Debug)]
pub struct MultimodalArgs {
    /// The model: early fusion (also a single modality's model), late or late-weighted fusion.
    #[arg(long, value_enum, default_value = "early")]
    model: Model,
    /// Its input images, comma-separated, in batch order: rgb, nir, depth.
    #[arg(long, default_value = "rgb")]
    modalities: String,
    /// Modality dropout: the chance each modality of a training image is blanked (never all),
    /// so the model still works when a camera lacks one.
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// The modalities dropout may blank, comma-separated (default: any); `depth` trains for
    /// cameras without depth while RGB and NIR are always there.
    #[arg(long)]
    drop: Option<String>,
    /// Training length in epochs (the table's budget: 2).
    #[arg(long)]
    epochs: Option<f64>,
    /// Share of training images taken at night (the table's: 0.5).
    #[arg(long)]
    night: Option<f32>,
    /// Seed of initialisation, order, augmentation and pairs (another seed measures how much a
    /// row varies from run to run).
    #[arg(long)]
    seed: Option<u64>,
    /// The whole run as TOML (every field of `--print-default-config`); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the default run as TOML and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Output directory: run.toml, metrics.jsonl, checkpoints/, report.json.
    #[arg(long, default_value = "runs/multimodal")]
    out: PathBuf,
    /// Continue the run in --out from its newest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run<B: ConvAutodiffBackend>(args: &MultimodalArgs, device: &B::Device) -> Result<()> {
    if args.print_default_config {
        print!("{}", toml::to_string_pretty(&FusionRun::default())?);
        return Ok(());
    }
    let saved = args.out.join("run.toml");
    let mut run: FusionRun = match (&args.config, args.resume) {
        (_, true) => read(&saved)?,
        (Some(path), false) => read(path)?,
        (None, false) => FusionRun::default(),
    };
    if !args.resume {
        run.model = match args.model {
            Model::Early => FusionModel::Early,
            Model::Late => FusionModel::Late,
            Model::LateWeighted => FusionModel::LateWeighted,
        };
        run.modalities = Modality::parse_list(&args.modalities)?;
        run.modality_dropout = args.dropout;
        run.dropout_modalities = match &args.drop {
            Some(list) => Modality::parse_list(list)?,
            None => Vec::new(),
        };
        run.epochs = args.epochs.unwrap_or(run.epochs);
        run.data.night = args.night.unwrap_or(run.data.night);
        run.seed = args.seed.unwrap_or(run.seed);
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        atomic_file::write(&saved, toml::to_string_pretty(&run)?.as_bytes())?;
    }
    let (bar, show) = crate::train_cmd::progress();
    let report = run.run::<B>(&args.out, device, args.resume, show)?;
    bar.finish_and_clear();
    atomic_file::write(
        &args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let names: Vec<&str> = run.modalities.iter().map(|m| m.name()).collect();
    let droppable: Vec<&str> = run.dropout_modalities.iter().map(|m| m.name()).collect();
    println!(
        "{:?} over {} (dropout {} of {}): {} steps in {:.0} s",
        run.model,
        names.join("+"),
        run.modality_dropout,
        if droppable.is_empty() {
            "any".into()
        } else {
            droppable.join("+")
        },
        report.train.steps,
        report.train.wall_secs
    );
    for (condition, accuracy) in &report.accuracy {
        println!("  {condition:<16} {:.2}%", 100.0 * accuracy);
    }
    Ok(())
}

fn read(path: &std::path::Path) -> Result<FusionRun> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("in {}", path.display()))
}
