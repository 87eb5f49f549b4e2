//! `arcface quantize`: post-training int8 quantisation of a model file, with its size, speed and
//! accuracy before and after.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use eval::{cosine, embed_normalized, verify_pairs, BurnEmbedder, Embedder, PairSet};
use face_data::{FaceDataset, SyntheticFaces};
use iresnet::Architecture;
use iresnet::ConvBackend;
use quantize::calibrate::Method;
use quantize::{quantize, Engine, Graph, QuantizeOptions, QuantizedModel};
use serde::Serialize;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CalibrationMethod {
    /// The smallest and largest value seen (keeps outliers, coarse steps).
    Minmax,
    /// Clip to the --percentile range (the default).
    Percentile,
    /// TensorRT's KL-divergence threshold.
    Entropy,
}

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Model file (`arcface import` or `arcface train` wrote it).
    #[arg(long)]
    model: PathBuf,
    /// Calibration faces: a folder of aligned 112x112 images (searched recursively), a `.bin`,
    /// or `synthetic` for the built-in synthetic identities.
    #[arg(long, value_name = "DIR_OR_BIN_OR_SYNTHETIC")]
    calib: String,
    /// How each activation's range is chosen.
    #[arg(long, value_enum, default_value_t = CalibrationMethod::Percentile)]
    method: CalibrationMethod,
    /// Percentile kept in range with --method percentile.
    #[arg(long, default_value_t = 99.999)]
    percentile: f64,
    /// Faces used for calibration (the rest of the set, up to --check-faces, checks fidelity).
    #[arg(long, default_value_t = 128)]
    calib_faces: usize,
    /// Faces the int8 embeddings are compared on (cosine to f32), not used in calibration.
    #[arg(long, default_value_t = 64)]
    check_faces: usize,
    /// Quantise the first convolution too (by default it stays f32: it sees raw pixels and
    /// costs little).
    #[arg(long)]
    int8_first: bool,
    /// Keep the embedding's linear layer in f32 (larger file, sometimes more faithful).
    #[arg(long)]
    float_last: bool,
    /// Output file (`.aq8`), loaded by `arcface eval --model` like any model.
    #[arg(long)]
    out: PathBuf,
    /// Verification pairs scored before and after (with `--calib synthetic`: held-out synthetic
    /// identities; 0 skips).
    #[arg(long, default_value_t = 1500)]
    pairs: usize,
    /// Timed batch-1 runs per engine (median reported).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also print the slowest layers of one batch-1 pass on each engine (to stderr).
    #[arg(long)]
    profile: bool,
}

#[derive(Serialize)]
struct Report {
    architecture: String,
    options: QuantizeOptions,
    calibration_faces: usize,
    check_faces: usize,
    size: Sizes,
    batch1_ms: Speeds,
    fidelity: Fidelity,
    #[serde(skip_serializing_if = "Option::is_none")]
    verification: Option<Verification>,
    out: PathBuf,
}

#[derive(Serialize)]
struct Sizes {
    model_file_bytes: u64,
    model_precision: String,
    quantized_file_bytes: u64,
    ratio: f64,
}

#[derive(Serialize)]
struct Speeds {
    burn_f32: f64,
    engine_f32: f64,
    engine_int8: f64,
    int8_vs_burn: f64,
    int8_vs_engine_f32: f64,
}

#[derive(Serialize)]
struct Fidelity {
    mean_cosine: f64,
    min_cosine: f64,
    /// The f32 engine against Burn: largest difference relative to the largest value.
    engine_f32_vs_burn: f64,
}

#[derive(Serialize)]
struct Verification {
    pairs: usize,
    f32_accuracy: f64,
    int8_accuracy: f64,
}

pub fn run<B: ConvBackend>(args: &QuantizeArgs, device: &B::Device) -> Result<()> {
    let (backbone, header) = iresnet::record::load_model::<B>(&args.model, device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let method = match args.method {
        CalibrationMethod::Minmax => Method::MinMax,
        CalibrationMethod::Entropy => Method::Entropy,
        CalibrationMethod::Percentile => {
            if !(50.0..=100.0).contains(&args.percentile) {
                bail!("--percentile must be in 50..=100, got {}", args.percentile);
            }
            Method::Percentile(args.percentile / 100.0)
        }
    };
    let options = QuantizeOptions {
        method,
        float_first: !args.int8_first,
        float_last: args.float_last,
    };
    let (calibration, check) = faces(&args.calib, args.calib_faces, args.check_faces)?;

    let progress = indicatif::ProgressBar::new_spinner().with_message("calibrating");
    progress.enable_steady_tick(std::time::Duration::from_millis(200));
    let graph = Graph::from_backbone(&backbone)?;
    let model = quantize(&graph, &raw(&calibration), options)?;
    model.save(&args.out)?;
    progress.set_message("checking");
    // What was written is what is measured.
    let int8 = QuantizedModel::load(&args.out)?.engine()?;
    let float = Engine::float(&graph)?;
    let burn = BurnEmbedder::new(backbone.clone(), device.clone());

    let burn_check = burn.embed(&check)?;
    let int8_check = Embedder::embed(&int8, &check)?;
    let float_check = Embedder::embed(&float, &check)?;
    let cosines: Vec<f64> = int8_check
        .iter()
        .zip(&burn_check)
        .map(|(a, b)| cosine(a, b))
        .collect();
    let scale = burn_check
        .iter()
        .flatten()
        .fold(0f32, |m, v| m.max(v.abs()));
    let engine_vs_burn = float_check
        .iter()
        .flatten()
        .zip(burn_check.iter().flatten())
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale.max(f32::MIN_POSITIVE);
    let fidelity = Fidelity {
        mean_cosine: cosines.iter().sum::<f64>() / cosines.len().max(1) as f64,
        min_cosine: cosines.iter().copied().fold(f64::INFINITY, f64::min),
        engine_f32_vs_burn: engine_vs_burn as f64,
    };

    // Batch 1, each from the aligned image (pixels to input included, for all three).
    progress.set_message("timing batch-1 forward passes");
    let one = &check[..1];
    let time = |e: &dyn Embedder| median_ms(args.runs, || Ok(e.embed(one).map(|_| ())?));
    let (burn_ms, float_ms, int8_ms) = (time(&burn)?, time(&float)?, time(&int8)?);

    if args.profile {
        for (name, engine) in [("f32", &float), ("int8", &int8)] {
            let mut layers = engine.profile(&raw(one))?;
            let total: f64 = layers.iter().map(|l| l.1).sum();
            layers.sort_by(|a, b| b.1.total_cmp(&a.1));
            eprintln!(
                "{name} engine, one face: {:.2} ms; slowest layers:",
                1e3 * total
            );
            for (layer, seconds) in layers.iter().take(12) {
                eprintln!("  {:>7.3} ms  {layer}", 1e3 * seconds);
            }
        }
    }
    let verification = if args.calib == "synthetic" && args.pairs > 0 {
        progress.set_message("verification pairs");
        let held = SyntheticFaces::held_out(crate::eval_cmd::synthetic_config())?;
        let set = PairSet::synthetic(&held, args.pairs, 1)?;
        let accuracy = |e: &dyn Embedder| -> Result<f64> {
            let embeddings = embed_normalized(e, &set.faces, true, |_| ())?;
            Ok(verify_pairs(&embeddings, &set.same, None)?
                .ten_fold
                .accuracy_mean)
        };
        Some(Verification {
            pairs: set.same.len(),
            f32_accuracy: accuracy(&burn)?,
            int8_accuracy: accuracy(&int8)?,
        })
    } else {
        None
    };
    progress.finish_and_clear();

    let file_bytes = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (before, after) = (file_bytes(&args.model), file_bytes(&args.out));
    let report = Report {
        architecture: backbone.spec().describe(),
        options,
        calibration_faces: calibration.len(),
        check_faces: check.len(),
        size: Sizes {
            model_file_bytes: before,
            model_precision: format!("{:?}", header.precision),
            quantized_file_bytes: after,
            ratio: before as f64 / after.max(1) as f64,
        },
        batch1_ms: Speeds {
            burn_f32: burn_ms,
            engine_f32: float_ms,
            engine_int8: int8_ms,
            int8_vs_burn: burn_ms / int8_ms,
            int8_vs_engine_f32: float_ms / int8_ms,
        },
        fidelity,
        verification,
        out: args.out.clone(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("{}", r.architecture);
    let method = match r.options.method {
        Method::MinMax => "min-max".to_string(),
        Method::Entropy => "entropy".to_string(),
        Method::Percentile(p) => format!("percentile {:.4}%", 100.0 * p),
    };
    println!(
        "calibration: {} faces, {method}; first conv {}, embedding layer {}",
        r.calibration_faces,
        if r.options.float_first { "f32" } else { "int8" },
        if r.options.float_last { "f32" } else { "int8" },
    );
    println!("                      before (f32)      after (int8)");
    println!(
        "file size             {:>9.2} MiB     {:>9.2} MiB   ({:.2}x smaller; input stored as {})",
        mib(r.size.model_file_bytes),
        mib(r.size.quantized_file_bytes),
        r.size.ratio,
        r.size.model_precision
    );
    println!(
        "batch-1 latency       {:>9.2} ms      {:>9.2} ms    ({:.2}x faster than Burn; f32 engine {:.2} ms, {:.2}x)",
        r.batch1_ms.burn_f32,
        r.batch1_ms.engine_int8,
        r.batch1_ms.int8_vs_burn,
        r.batch1_ms.engine_f32,
        r.batch1_ms.int8_vs_engine_f32
    );
    println!(
        "embedding cosine      int8 vs f32 on {} faces: mean {:.5}, min {:.5}",
        r.check_faces, r.fidelity.mean_cosine, r.fidelity.min_cosine
    );
    if let Some(v) = &r.verification {
        println!(
            "verification          {:>9.2}%         {:>9.2}%      ({} pairs, 10-fold, flip test)",
            100.0 * v.f32_accuracy,
            100.0 * v.int8_accuracy,
            v.pairs
        );
    }
    println!("wrote {}", r.out.display());
}

/// Calibration and check faces: from the synthetic training identities (check faces from the
/// held-out ones), or split from one folder / `.bin` (calibration first).
fn faces(
    source: &str,
    calibration: usize,
    check: usize,
) -> Result<(Vec<image::RgbImage>, Vec<image::RgbImage>)> {
    if calibration == 0 {
        bail!("--calib-faces must be at least 1");
    }
    if source == "synthetic" {
        let config = crate::eval_cmd::synthetic_config();
        let train = SyntheticFaces::train(config.clone())?;
        let held = SyntheticFaces::held_out(config)?;
        let step = (train.len() / calibration).max(1);
        let calib = (0..calibration.min(train.len()))
            .map(|i| train.get(i * step).map(|s| s.image))
            .collect::<Result<_, _>>()?;
        let check = (0..check.min(held.len()))
            .map(|i| held.get(i).map(|s| s.image))
            .collect::<Result<_, _>>()?;
        return Ok((calib, check));
    }
    let path = Path::new(source);
    if !path.exists() {
        bail!("--calib {source}: no such folder or file (or say `synthetic`)");
    }
    let mut all = crate::eval_cmd::faces_from(path, calibration + check)?;
    if all.len() < 2 {
        bail!(
            "--calib {source}: found {} aligned faces, need at least 2",
            all.len()
        );
    }
    let check = all.split_off(calibration.min(all.len() - 1));
    Ok((all, check))
}

fn median_ms(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    let mut times = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The faces' pixels as the engine takes them (no copies).
fn raw(faces: &[image::RgbImage]) -> Vec<&[u8]> {
    faces.iter().map(|f| f.as_raw().as_slice()).collect()
}
