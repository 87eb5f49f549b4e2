//! `arcface export`: a model out to ONNX, a PyTorch state dict or safetensors.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use iresnet::export::{self, OnnxOptions};
use iresnet::{import, ConvBackend, Describe};
use serde::Serialize;

/// Output formats.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// ONNX (opset 13), laid out as insightface's model packs: input `input.1`
    /// [batch, 3, 112, 112] RGB normalised (x - 127.5) / 127.5, output `embedding` [batch, 512].
    Onnx,
    /// arcface_torch's state dict (`get_model(name)` + `load_state_dict`), as `torch.save` writes it.
    Pth,
    /// The same state dict as safetensors.
    Safetensors,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    arcface export --model runs/demo/model.arcface --format onnx --out demo.onnx\n  \
    arcface export --model w600k_mbf.arcface --format pth --out backbone.pth\n\n\
    The ONNX file loads in insightface's model_zoo (ArcFaceONNX), ONNX Runtime, TensorRT and \
    Triton; the .pth in arcface_torch: get_model(arch).load_state_dict(torch.load(path)). \
    docs/formats.md describes both.")]
pub struct ExportArgs {
    /// The model: a file from `arcface train` or `arcface import` (`.arcface`), or insightface
    /// weights (`.onnx`, `.pth`) to convert.
    #[arg(long)]
    model: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    format: ExportFormat,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// ONNX only: store weights as float16 (half the file; computed in float32).
    #[arg(long)]
    f16: bool,
    /// Print one JSON object instead of a line.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    model: &'a Path,
    out: &'a Path,
    format: ExportFormat,
    architecture: String,
    bytes: u64,
    seconds: f64,
}

pub fn run<B: ConvBackend>(args: &ExportArgs, device: &B::Device) -> Result<()> {
    if args.f16 && args.format != ExportFormat::Onnx {
        bail!("--f16 applies to ONNX only (state dicts keep float32, as arcface_torch saves them)");
    }
    let net = import::load_any::<B>(&args.model, device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let started = Instant::now();
    let flow = net.dataflow();
    let architecture = net.name();
    let source = args.model.display().to_string();
    match args.format {
        ExportFormat::Onnx => {
            let options = OnnxOptions {
                f16: args.f16,
                metadata: vec![
                    ("architecture".into(), architecture.clone()),
                    ("source".into(), source),
                    (
                        "input".into(),
                        "RGB, (x - 127.5) / 127.5, NCHW 112x112".into(),
                    ),
                ],
            };
            let bytes = export::to_onnx(&flow, &architecture, &options)?;
            atomic_file::write(&args.out, &bytes)
                .with_context(|| format!("writing {}", args.out.display()))?;
        }
        ExportFormat::Pth => export::write_pth(&args.out, &export::state_dict(&flow))?,
        ExportFormat::Safetensors => export::write_safetensors(
            &args.out,
            &export::state_dict(&flow),
            &[("architecture", architecture.clone()), ("source", source)],
        )?,
    }
    let report = Report {
        model: &args.model,
        out: &args.out,
        format: args.format,
        architecture,
        bytes: std::fs::metadata(&args.out)?.len(),
        seconds: started.elapsed().as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} ({}) -> {} ({:.1} MiB, {:.2} s)",
            report.model.display(),
            report.architecture,
            report.out.display(),
            report.bytes as f64 / (1024.0 * 1024.0),
            report.seconds
        );
    }
    Ok(())
}
