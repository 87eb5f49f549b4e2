//! `arcface eval`: verification (and, on synthetic identities, identification) of a model file.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use eval::{
    closed_set, embed_normalized, open_set, rank1_with_distractors, search, verify_pairs, Embedder,
    Labelled, PairSet,
};
use face_data::{FaceDataset, SyntheticConfig, SyntheticFaces};
use iresnet::ConvBackend;
use serde::Serialize;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model file (`arcface import`, `arcface train` or `arcface quantize` wrote it).
    #[arg(long)]
    model: PathBuf,
    /// An insightface verification `.bin` (lfw.bin, cfp_fp.bin, agedb_30.bin) of aligned faces.
    #[arg(long, group = "set")]
    bin: Option<PathBuf>,
    /// LFW's pairs.txt; its ten folds are used as the file defines them. Needs --images.
    #[arg(long, group = "set", requires = "images")]
    pairs: Option<PathBuf>,
    /// Folder `name/name_0001.jpg` of aligned 112x112 faces, for --pairs (`arcface align` writes one).
    #[arg(long)]
    images: Option<PathBuf>,
    /// The built-in synthetic identities' held-out split: verification pairs, and 1:N
    /// identification (gallery, probes, open-set and distractor curves).
    #[arg(long, group = "set")]
    synthetic: bool,
    /// Matched pairs drawn from the synthetic identities (as many mismatched).
    #[arg(long, default_value_t = 1500)]
    synthetic_pairs: usize,
    /// Largest distractor set for the rank-1-versus-gallery-size curve (10, 100, 1000, ... up to
    /// this).
    #[arg(long, default_value_t = 1000)]
    distractors: usize,
    /// Distractor faces from a folder of aligned 112x112 images (searched recursively) or a `.bin`,
    /// instead of synthetic identities (with --synthetic).
    #[arg(long, value_name = "DIR_OR_BIN", requires = "synthetic")]
    distractors_from: Option<PathBuf>,
    /// Embed each face alone, without adding its mirror image's embedding.
    #[arg(long)]
    no_flip: bool,
    /// Write roc.png, scores.png (and cmc.png, distractors.png for --synthetic) here.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Print the full report as JSON instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    model: PathBuf,
    set: String,
    flip_test: bool,
    verification: eval::VerificationReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    identification: Option<Identification>,
    plots: Vec<PathBuf>,
}

#[derive(Serialize)]
struct Identification {
    gallery_identities: usize,
    mated_probes: usize,
    non_mated_probes: usize,
    closed_set: eval::ClosedSet,
    open_set: Option<Vec<eval::OpenSetPoint>>,
    rank1_by_distractors: Vec<(usize, f64)>,
}

fn bar(len: usize, what: &str) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(len as u64).with_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}} faces {{eta}}"
        ))
        .expect("valid template"),
    )
}

pub fn run<B: ConvBackend>(args: &EvalArgs, device: &B::Device) -> Result<()> {
    let embedder = load_embedder::<B>(&args.model, device)?;
    let embedder = embedder.as_ref();
    let flip = !args.no_flip;
    let (set, name, synthetic) = if let Some(bin) = &args.bin {
        (PairSet::bin(bin)?, bin.display().to_string(), None)
    } else if let Some(pairs) = &args.pairs {
        let images = args.images.as_ref().expect("clap requires --images");
        (
            PairSet::lfw(pairs, images)?,
            pairs.display().to_string(),
            None,
        )
    } else if args.synthetic {
        let config = synthetic_config();
        let held = SyntheticFaces::held_out(config.clone())?;
        let pairs = PairSet::synthetic(&held, args.synthetic_pairs, 1)?;
        (
            pairs,
            "synthetic held-out identities".to_string(),
            Some((held, config)),
        )
    } else {
        bail!("choose the pairs: --bin FILE, --pairs pairs.txt --images DIR, or --synthetic");
    };
    let progress = bar(set.faces.len(), "embedding");
    let embeddings = embed_normalized(embedder, &set.faces, flip, |n| {
        progress.set_position(n as u64)
    })?;
    progress.finish_and_clear();
    let verification = verify_pairs(&embeddings, &set.same, set.fold.as_deref())?;
    let mut plots = Vec::new();
    if let Some(dir) = &args.plots {
        plots.extend(verification.plots(dir)?);
    }
    let identification = match synthetic {
        Some((held, config)) => Some(identify(embedder, &held, &config, args, flip, &mut plots)?),
        None => None,
    };
    let report = Report {
        model: args.model.clone(),
        set: name.clone(),
        flip_test: flip,
        verification,
        identification,
        plots,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    print!("{}", report.verification.table(&name));
    if let Some(id) = &report.identification {
        println!(
            "identification: {} gallery identities, {} mated and {} non-mated probes",
            id.gallery_identities, id.mated_probes, id.non_mated_probes
        );
        println!(
            "  rank-1 {:.2}%  rank-5 {:.2}%  rank-10 {:.2}%",
            100.0 * id.closed_set.rank1,
            100.0 * id.closed_set.rank5,
            100.0 * id.closed_set.rank10
        );
        for p in id.open_set.iter().flatten() {
            println!(
                "  TPIR@FPIR={:<5}   {:.2}% (score > {:.3})",
                p.fpir,
                100.0 * p.tpir,
                p.threshold
            );
        }
        for (m, r) in &id.rank1_by_distractors {
            println!("  rank-1 with {m:>7} distractors: {:.2}%", 100.0 * r);
        }
    }
    for p in &report.plots {
        println!("plot: {}", p.display());
    }
    Ok(())
}

/// The built-in synthetic identities as evaluation uses them (500 held-out identities).
pub fn synthetic_config() -> SyntheticConfig {
    SyntheticConfig {
        held_out: 500,
        ..SyntheticConfig::default()
    }
}

/// A model file as an embedder, whatever its format (`face_models::load_embedder`).
pub fn load_embedder<B: ConvBackend>(
    path: &std::path::Path,
    device: &B::Device,
) -> Result<Box<dyn Embedder + Send>> {
    face_models::load_embedder::<B>(path, device)
        .with_context(|| format!("loading {}", path.display()))
}

/// Gallery: the first image of the first half of the held-out identities; probes: the second
/// image of every identity (the second half are not enrolled: open set); distractors: images of
/// identities from the training split.
fn identify(
    embedder: &dyn Embedder,
    held: &SyntheticFaces,
    config: &SyntheticConfig,
    args: &EvalArgs,
    flip: bool,
    plots: &mut Vec<PathBuf>,
) -> Result<Identification> {
    let per = config.per_identity;
    let ids = held.num_identities();
    let enrolled = ids / 2;
    let mut faces = Vec::new();
    for id in 0..ids {
        faces.push(held.get(id * per)?.image);
        faces.push(held.get(id * per + 1)?.image);
    }
    let distractor_faces = match &args.distractors_from {
        Some(path) => faces_from(path, args.distractors)?,
        None => {
            let train = SyntheticFaces::train(SyntheticConfig {
                identities: args.distractors.max(1),
                per_identity: 1,
                ..config.clone()
            })?;
            (0..args.distractors)
                .map(|i| train.get(i).map(|s| s.image))
                .collect::<Result<_, _>>()?
        }
    };
    let progress = bar(faces.len() + distractor_faces.len(), "identification");
    let e = embed_normalized(embedder, &faces, flip, |n| progress.set_position(n as u64))?;
    let d = embed_normalized(embedder, &distractor_faces, flip, |n| {
        progress.set_position((faces.len() + n) as u64)
    })?;
    progress.finish_and_clear();
    let (mut gallery, mut probes, mut distractors) = (
        Labelled::default(),
        Labelled::default(),
        Labelled::default(),
    );
    for id in 0..ids {
        if id < enrolled {
            gallery.push(e[2 * id].clone(), id as u64);
        }
        probes.push(e[2 * id + 1].clone(), id as u64);
    }
    for (k, v) in d.into_iter().enumerate() {
        distractors.push(v, 1_000_000 + k as u64);
    }
    let results = search(&gallery, &probes);
    let closed = closed_set(&results, 20);
    let open = open_set(&results, &[0.01, 0.1]);
    let sizes: Vec<usize> = [10, 100, 1_000, 10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&m| m <= args.distractors)
        .collect();
    // Rank-1 against distractors is over the enrolled (mated) probes only.
    let mated = Labelled {
        embeddings: probes.embeddings[..enrolled].to_vec(),
        identities: probes.identities[..enrolled].to_vec(),
    };
    let curve = rank1_with_distractors(&gallery, &mated, &distractors, &sizes);
    if let Some(dir) = &args.plots {
        use arcface_plot::{Chart, Series};
        let cmc: Vec<(f64, f64)> = closed
            .cmc
            .iter()
            .enumerate()
            .map(|(k, v)| ((k + 1) as f64, 100.0 * v))
            .collect();
        let cmc_path = dir.join("cmc.png");
        Chart::new("CMC", "rank", "identification rate %")
            .with_series(Series::new("", cmc, 0))
            .save_png(&cmc_path)?;
        plots.push(cmc_path);
        if curve.len() > 1 {
            let mut chart = Chart::new("Rank-1 against distractors", "distractors", "rank-1 %")
                .with_series(Series::new(
                    "",
                    curve.iter().map(|&(m, r)| (m as f64, 100.0 * r)).collect(),
                    1,
                ));
            chart.log_x = true;
            let path = dir.join("distractors.png");
            chart.save_png(&path)?;
            plots.push(path);
        }
    }
    Ok(Identification {
        gallery_identities: enrolled,
        mated_probes: closed.mated_probes,
        non_mated_probes: results.iter().filter(|r| r.rank.is_none()).count(),
        closed_set: closed,
        open_set: open,
        rank1_by_distractors: curve,
    })
}

/// Up to `limit` aligned faces from a `.bin` or a folder of images (sorted paths).
pub fn faces_from(path: &std::path::Path, limit: usize) -> Result<Vec<image::RgbImage>> {
    if path.is_file() {
        let bin = face_data::VerificationBin::read(path)?;
        return bin
            .images
            .iter()
            .take(limit)
            .enumerate()
            .map(|(i, bytes)| Ok(eval::aligned(face_data::decode(bytes, path, i)?, path, i)?))
            .collect();
    }
    crate::faces::collect_images(path, None)?
        .iter()
        .take(limit)
        .enumerate()
        .map(|(i, relative)| {
            let file = path.join(relative);
            let face = face_pipeline::read_photo(&file, face_pipeline::PhotoLimits::default())
                .with_context(|| format!("decoding {}", file.display()))?;
            Ok(eval::aligned(face, &file, i)?)
        })
        .collect()
}
