//! `arcface data`: make the synthetic set, pack folders into RecordIO, inspect any dataset file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use face_data::{
    pack_dataset, pack_folder, verification_pairs, FaceDataset, ImageFolder, RecordDataset,
    SyntheticConfig, SyntheticFaces, VerificationBin,
};
use serde::Serialize;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Render the built-in synthetic identities (the default training set) to disk.
    Synth(SynthArgs),
    /// Pack an identity-per-folder image tree into insightface's `train.rec` + `train.idx`.
    Pack {
        /// Folder of `<identity>/*.jpg|png|bmp`.
        #[arg(long = "in")]
        input: PathBuf,
        /// Output `.rec` (the `.idx` and `.names.json` go beside it).
        #[arg(long)]
        out: PathBuf,
    },
    /// Counts, identities and a grid of samples for a `.rec`, a `.bin` or an image folder.
    Inspect {
        /// A `.rec`, a verification `.bin`, or an image folder.
        file: PathBuf,
        /// Where to write the sample grid (PNG), replacing what is there; default
        /// `<file>.grid.png`, which is never overwritten (an existing one is an error).
        #[arg(long)]
        grid: Option<PathBuf>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Format {
    /// `<out>/<identity>/<k>.png`
    Folder,
    /// `<out>/train.rec` + `.idx` in insightface's layout
    Rec,
    /// `<out>/synthetic.bin`: verification pairs from held-out identities
    Bin,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    #[arg(long)]
    out: PathBuf,
    /// Training identities (for folder and rec).
    #[arg(long, default_value_t = 1000)]
    identities: usize,
    /// Images per identity.
    #[arg(long, default_value_t = 20)]
    per_identity: usize,
    /// Held-out identities the verification pairs (bin) are drawn from.
    #[arg(long, default_value_t = 200)]
    held_out: usize,
    /// Matched pairs in the bin (as many mismatched ones are added).
    #[arg(long, default_value_t = 3000)]
    pairs: usize,
    #[arg(long, value_enum, default_value = "folder")]
    format: Format,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The images of each face, comma-separated: rgb, nir (near-infrared), depth. NIR and depth
    /// go beside the RGB data where RGB-only readers do not look: `<out>.nir/` next to a folder,
    /// `train.nir.rec` next to `train.rec` (docs/multimodal.md).
    #[arg(long, default_value = "rgb")]
    modalities: String,
    /// Share of images taken at night (0 to 1): the colour camera dark and noisy, NIR and depth
    /// unchanged.
    #[arg(long, default_value_t = 0.0)]
    night: f32,
}

fn bar(n: usize, what: &str) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(n as u64).with_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what} {{elapsed}} (eta {{eta}})"
        ))
        .expect("valid template"),
    )
}

pub fn run(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Synth(args) => synth(&args),
        DataCommand::Pack { input, out } => {
            let folder = ImageFolder::open(&input)?;
            let n = pack_folder(&folder, &out)?;
            println!(
                "packed {n} images of {} identities into {} (+ .idx, .names.json)",
                folder.num_identities(),
                out.display()
            );
            Ok(())
        }
        DataCommand::Inspect { file, grid, json } => inspect(&file, grid, json),
    }
}

fn synth(args: &SynthArgs) -> Result<()> {
    let config = SyntheticConfig {
        identities: args.identities,
        per_identity: args.per_identity,
        held_out: args.held_out,
        seed: args.seed,
        modalities: face_data::Modality::parse_list(&args.modalities)?,
        night: args.night,
        ..SyntheticConfig::default()
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    match args.format {
        Format::Folder => {
            let data = SyntheticFaces::train(config)?;
            let progress = bar(data.len(), "images");
            for i in 0..data.len() {
                let sample = data.get(i)?;
                let relative = PathBuf::from(format!("id_{:06}", sample.label))
                    .join(format!("{:04}.png", i % args.per_identity));
                crate::faces::write_png_atomically(&sample.image, &args.out.join(&relative))?;
                face_data::write_companions(&args.out, &relative, &sample)?;
                progress.inc(1);
            }
            progress.finish_and_clear();
            println!(
                "{} images of {} identities in {}",
                data.len(),
                data.num_identities(),
                args.out.display()
            );
        }
        Format::Rec => {
            let data = SyntheticFaces::train(config)?;
            let progress = bar(data.len(), "images");
            let rec = args.out.join("train.rec");
            pack_dataset(&data, &rec, |n| progress.set_position(n as u64))?;
            progress.finish_and_clear();
            println!(
                "{} images of {} identities in {}",
                data.len(),
                data.num_identities(),
                rec.display()
            );
        }
        Format::Bin => {
            let held = SyntheticFaces::held_out(config)?;
            let bin = verification_pairs(&held, args.pairs, args.seed)?;
            let path = args.out.join("synthetic.bin");
            bin.write(&path)?;
            println!(
                "{} pairs from {} held-out identities in {}",
                bin.num_pairs(),
                held.num_identities(),
                path.display()
            );
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct Summary {
    file: PathBuf,
    kind: &'static str,
    images: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    identities: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pairs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    matched_pairs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    insightface_layout: Option<bool>,
    grid: PathBuf,
}

/// Up to `cols * rows` images side by side, scaled to 112 px cells.
fn write_grid(images: &[image::RgbImage], cols: usize, path: &Path) -> Result<()> {
    if images.is_empty() {
        bail!("nothing to draw");
    }
    let rows = images.len().div_ceil(cols);
    let mut grid = image::RgbImage::new((cols * 112) as u32, (rows * 112) as u32);
    for (k, img) in images.iter().enumerate() {
        let cell = image::imageops::resize(img, 112, 112, image::imageops::FilterType::Triangle);
        image::imageops::replace(
            &mut grid,
            &cell,
            ((k % cols) * 112) as i64,
            ((k / cols) * 112) as i64,
        );
    }
    crate::faces::write_png_atomically(&grid, path)
}

/// A labelled dataset's summary, with a grid of up to 32 samples taken every `step`.
fn dataset_summary(
    data: &impl FaceDataset,
    kind: &'static str,
    step: usize,
    file: &Path,
    grid: PathBuf,
) -> Result<Summary> {
    let samples: Vec<_> = (0..data.len())
        .step_by(step)
        .take(32)
        .map(|i| data.get(i).map(|s| s.image))
        .collect::<Result<_, _>>()?;
    write_grid(&samples, 8, &grid)?;
    Ok(Summary {
        file: file.into(),
        kind,
        images: data.len(),
        identities: Some(data.num_identities()),
        pairs: None,
        matched_pairs: None,
        insightface_layout: None,
        grid,
    })
}

fn inspect(file: &Path, grid: Option<PathBuf>, json: bool) -> Result<()> {
    let grid = match grid {
        Some(asked) => asked,
        None => {
            // The default sits beside the input; a file already there was not ours to replace.
            let beside = PathBuf::from(format!("{}.grid.png", file.display()));
            if beside.exists() {
                bail!(
                    "{} already exists; pass --grid PATH to write the sample grid there (an \
                     existing file given to --grid is replaced)",
                    beside.display()
                );
            }
            beside
        }
    };
    let summary = if file.is_dir() {
        let data = ImageFolder::open(file)?;
        dataset_summary(&data, "image folder", 1, file, grid)?
    } else if file.extension().is_some_and(|e| e == "bin") {
        let bin = VerificationBin::read(file)?;
        let samples: Vec<_> = bin
            .images
            .iter()
            .take(32)
            .enumerate()
            .map(|(i, b)| face_data::decode(b, file, i))
            .collect::<Result<_, _>>()?;
        write_grid(&samples, 8, &grid)?;
        let matched = bin.issame.iter().filter(|&&s| s).count();
        Summary {
            file: file.into(),
            kind: "verification bin",
            images: bin.images.len(),
            identities: None,
            pairs: Some(bin.num_pairs()),
            matched_pairs: Some(matched),
            insightface_layout: None,
            grid,
        }
    } else {
        let data = RecordDataset::open(file)?;
        let step = (data.len() / 32).max(1);
        Summary {
            insightface_layout: Some(data.insightface_layout()),
            ..dataset_summary(&data, "recordio", step, file, grid)?
        }
    };
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{} ({}): {} images",
            summary.file.display(),
            summary.kind,
            summary.images
        );
        if let Some(n) = summary.identities {
            println!("  identities: {n}");
        }
        if let (Some(p), Some(m)) = (summary.pairs, summary.matched_pairs) {
            println!("  pairs: {p} ({m} matched)");
        }
        if let Some(l) = summary.insightface_layout {
            println!(
                "  layout: {}",
                if l {
                    "insightface (header record 0)"
                } else {
                    "plain im2rec"
                }
            );
        }
        println!("  sample grid: {}", summary.grid.display());
    }
    Ok(())
}
