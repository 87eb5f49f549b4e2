//! `arcface detect` and `arcface align`: photos to faces, and a folder of photos to a folder of
//! aligned, quality-checked crops.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use face_align::{assess, QualityConfig, QualityReport, Template};
use face_detect::{Detection, FaceDetector, RetinaFace, RetinaFaceConfig, Scrfd, ScrfdConfig};
use face_pipeline::FaceFinder;
use iresnet::ConvBackend;
use serde::{Deserialize, Serialize};

/// Which detector finds the faces.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    /// insightface's SCRFD-500M (the buffalo_s pack's detector, the one w600k_mbf's training
    /// crops were aligned with); a fixed 640x640 input, so large photos cost no more than small
    /// ones. Non-commercial weights.
    #[default]
    Scrfd,
    /// RetinaFace MobileNet-0.25 at the photo's own resolution; MIT-licensed weights.
    Retinaface,
}

impl DetectorKind {
    /// The quality gate's default score floor for this detector's score scale.
    pub fn min_score(self) -> f32 {
        match self {
            DetectorKind::Scrfd => 0.6,
            DetectorKind::Retinaface => 0.8,
        }
    }
}

/// The detector options `detect`, `align` and `serve` share.
#[derive(Args, Debug, Clone)]
pub struct DetectorChoice {
    /// The face detector.
    #[arg(long, value_enum, default_value_t = DetectorKind::Scrfd)]
    pub detector: DetectorKind,
    /// The detector's weights: an SCRFD `.onnx` with keypoints (e.g. scrfd_500m_bnkps.onnx,
    /// det_10g.onnx) or RetinaFace's `mobilenet0.25_Final.pth` [default: the cached copy
    /// under `$ARCFACE_HOME/models/`, which `arcface fetch` downloads].
    #[arg(long, visible_alias = "weights")]
    pub detector_weights: Option<PathBuf>,
    /// Keep detections whose face score is at least this.
    #[arg(long, default_value_t = 0.5)]
    pub confidence: f32,
    /// RetinaFace: downscale photos whose longer side exceeds this before detecting (faster;
    /// results are mapped back to the original pixels).
    #[arg(long)]
    pub max_side: Option<u32>,
    /// SCRFD: the network's square input side; photos are scaled to fit (a multiple of 32;
    /// larger finds smaller faces, slower).
    #[arg(long, default_value_t = 640)]
    pub det_size: u32,
}

impl DetectorChoice {
    /// The weights file: the given one, else the cache's for the chosen detector.
    pub fn path(&self) -> Result<PathBuf> {
        let pinned = match self.detector {
            DetectorKind::Scrfd => &face_models::cache::SCRFD_500M,
            DetectorKind::Retinaface => &face_models::cache::RETINAFACE,
        };
        Ok(face_models::cache::detector(
            pinned,
            self.detector_weights.as_deref(),
        )?)
    }

    /// The chosen detector, loaded.
    pub fn load<B: ConvBackend>(
        &self,
        device: &B::Device,
    ) -> Result<Box<dyn FaceDetector + Send + Sync>> {
        let path = self.path()?;
        let detector: Box<dyn FaceDetector + Send + Sync> = match self.detector {
            DetectorKind::Scrfd => {
                let config = ScrfdConfig {
                    det_thresh: self.confidence,
                    input_size: [self.det_size; 2],
                    ..ScrfdConfig::default()
                };
                Box::new(Scrfd::<B>::load(&path, config, device).with_context(|| {
                    format!("loading the SCRFD detector from {}", path.display())
                })?)
            }
            DetectorKind::Retinaface => {
                let config = RetinaFaceConfig {
                    confidence: self.confidence,
                    max_side: self.max_side,
                    ..RetinaFaceConfig::default()
                };
                Box::new(
                    RetinaFace::<B>::load(&path, config, device).with_context(|| {
                        format!("loading the RetinaFace detector from {}", path.display())
                    })?,
                )
            }
        };
        Ok(detector)
    }
}

#[derive(Args, Debug)]
pub struct DetectorArgs {
    #[command(flatten)]
    choice: DetectorChoice,
    /// Refuse photos with more pixels than this, from their header, before decoding them (a
    /// small file can declare a huge image).
    #[arg(long, default_value_t = face_pipeline::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
}

impl DetectorArgs {
    /// Reads a photo within `--max-pixels`.
    pub(crate) fn photo(&self, path: &Path) -> Result<image::RgbImage> {
        face_pipeline::read_photo(path, face_pipeline::PhotoLimits::pixels(self.max_pixels))
            .with_context(|| format!("reading {}", path.display()))
    }

    pub(crate) fn load<B: ConvBackend>(
        &self,
        device: &B::Device,
    ) -> Result<Box<dyn FaceDetector + Send + Sync>> {
        self.choice.load::<B>(device)
    }
}

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// Photos (JPEG, PNG or BMP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    detector: DetectorArgs,
    /// Print one JSON object per image instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct DetectReport<'a> {
    image: &'a Path,
    width: u32,
    height: u32,
    faces: Vec<Detection>,
}

pub fn detect<B: ConvBackend>(args: &DetectArgs, device: &B::Device) -> Result<()> {
    let detector = args.detector.load::<B>(device)?;
    for path in &args.images {
        let image = args.detector.photo(path)?;
        let faces = detector.detect(&image)?;
        if args.json {
            let report = DetectReport {
                image: path,
                width: image.width(),
                height: image.height(),
                faces,
            };
            println!("{}", serde_json::to_string(&report)?);
            continue;
        }
        println!(
            "{} ({}x{}): {} faces",
            path.display(),
            image.width(),
            image.height(),
            faces.len()
        );
        for (i, f) in faces.iter().enumerate() {
            let b = &f.bbox;
            let lm: Vec<String> = f
                .landmarks
                .iter()
                .map(|p| format!("({:.1},{:.1})", p.x, p.y))
                .collect();
            println!(
                "  {i:3}  score {:.3}  box [{:.1}, {:.1}, {:.1}, {:.1}]  landmarks {}",
                f.score,
                b.x1,
                b.y1,
                b.x2,
                b.y2,
                lm.join(" ")
            );
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct AlignArgs {
    /// Folder of photos; sub-folders (e.g. one per identity) are kept in the output.
    #[arg(long = "in")]
    input: PathBuf,
    /// Output folder for the aligned crops `<sub-folder>/<photo>_<face>.png`, the report
    /// `align_report.json` and the resume journal `.align_journal.jsonl`.
    #[arg(long)]
    out: PathBuf,
    /// Crop size: a multiple of 112 (ArcFace template) or of 128 (insightface's 128 variant).
    #[arg(long, default_value_t = 112)]
    size: u32,
    /// Reject faces whose detection box is shorter than this on the photo (pixels; 0 = off).
    #[arg(long, default_value_t = 128.0)]
    min_size: f32,
    /// Reject crops whose sharpness (0-1, variance of the Laplacian; docs/alignment.md) is below.
    #[arg(long, default_value_t = 0.7)]
    min_sharpness: f32,
    /// Reject detections scored below this [default: 0.6 with SCRFD, whose scores are
    /// IoU-calibrated and top out near 0.9 on clear faces; 0.8 with RetinaFace].
    #[arg(long)]
    min_score: Option<f32>,
    #[command(flatten)]
    detector: DetectorArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// What happened to one photo: one journal line, and part of the final report.
#[derive(Debug, Serialize, Deserialize)]
struct PhotoRecord {
    photo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default)]
    faces: Vec<FaceRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FaceRecord {
    index: usize,
    score: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crop: Option<String>,
    quality: QualityReport,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    photos: usize,
    unreadable: usize,
    resumed: usize,
    faces: usize,
    accepted: usize,
    rejected: usize,
    rejected_by_rule: BTreeMap<String, usize>,
}

/// Image files under `root`, sorted, as paths relative to it; `skip` (the output folder) is left out.
pub(crate) fn collect_images(root: &Path, skip: Option<&Path>) -> Result<Vec<PathBuf>> {
    let mut stack = vec![root.to_path_buf()];
    let mut found = Vec::new();
    let skip = skip.and_then(|s| s.canonicalize().ok());
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                if skip
                    .as_ref()
                    .is_none_or(|s| path.canonicalize().ok().as_ref() != Some(s))
                {
                    stack.push(path);
                }
            } else if face_data::is_image(&path) {
                found.push(path.strip_prefix(root)?.to_path_buf());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// A PNG written to a temporary file and renamed, so an interrupted run never leaves half a file.
pub(crate) fn write_png_atomically(image: &image::RgbImage, path: &Path) -> Result<()> {
    let dir = path.parent().context("output path has no folder")?;
    std::fs::create_dir_all(dir)?;
    let png = face_data::encode_png(image)?;
    atomic_file::write(path, &png).with_context(|| format!("writing {}", path.display()))
}

fn process_photo<D: FaceDetector>(
    finder: &FaceFinder<D>,
    args: &AlignArgs,
    quality: &QualityConfig,
    rel: &Path,
) -> PhotoRecord {
    let photo = rel.to_string_lossy().to_string();
    let image = match args.detector.photo(&args.input.join(rel)) {
        Ok(img) => img,
        Err(e) => {
            return PhotoRecord {
                photo,
                error: Some(format!("unreadable image: {:#}", e)),
                faces: Vec::new(),
            }
        }
    };
    let detections = match finder.detect(&image) {
        Ok(d) => d.faces,
        Err(e) => {
            return PhotoRecord {
                photo,
                error: Some(e.to_string()),
                faces: Vec::new(),
            }
        }
    };
    let stem = rel
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let out_dir = args.out.join(rel.parent().unwrap_or(Path::new("")));
    let mut faces = Vec::new();
    for (index, det) in detections.iter().enumerate() {
        let aligned = match finder.align_one(&image, det) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("{photo} face {index}: {e}");
                continue;
            }
        };
        let report = assess(
            Some(det.bbox),
            Some(det.score),
            &det.landmarks,
            &aligned,
            quality,
        );
        let crop = if report.accepted() {
            let name = format!("{stem}_{index:02}.png");
            match write_png_atomically(&aligned, &out_dir.join(&name)) {
                Ok(()) => Some(rel.with_file_name(name).to_string_lossy().to_string()),
                Err(e) => {
                    return PhotoRecord {
                        photo,
                        error: Some(format!("{e:#}")),
                        faces,
                    }
                }
            }
        } else {
            None
        };
        faces.push(FaceRecord {
            index,
            score: det.score,
            crop,
            quality: report,
        });
    }
    PhotoRecord {
        photo,
        error: None,
        faces,
    }
}

/// The options that decide what a photo's record holds; a journal made with others is not
/// resumed (its records would mix two settings).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct JournalHeader {
    size: u32,
    quality: QualityConfig,
    /// Journals from before SCRFD were written by RetinaFace.
    #[serde(default = "retinaface")]
    detector: DetectorKind,
    weights: PathBuf,
    confidence: f32,
    max_side: Option<u32>,
    #[serde(default)]
    det_size: u32,
}

fn retinaface() -> DetectorKind {
    DetectorKind::Retinaface
}

/// Records of photos finished by an earlier, interrupted run (a torn last line is ignored).
fn read_journal(path: &Path, header: &JournalHeader) -> Result<Vec<PhotoRecord>> {
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(Vec::new());
    };
    let mut lines = std::io::BufReader::new(file).lines().map_while(|l| l.ok());
    match lines
        .next()
        .map(|l| serde_json::from_str::<JournalHeader>(&l))
    {
        None => return Ok(Vec::new()),
        Some(Ok(h)) if &h == header => {}
        _ => bail!(
            "{} was written with other options; use another --out, or delete it to start over",
            path.display()
        ),
    }
    Ok(lines
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect())
}

pub fn align<B: ConvBackend>(args: &AlignArgs, device: &B::Device) -> Result<()> {
    if !args.input.is_dir() {
        bail!("--in {} is not a folder", args.input.display());
    }
    let template = Template::arcface(args.size)?;
    let quality = QualityConfig {
        min_box_side: (args.min_size > 0.0).then_some(args.min_size),
        min_sharpness: (args.min_sharpness > 0.0).then_some(args.min_sharpness),
        min_score: Some(
            args.min_score
                .unwrap_or(args.detector.choice.detector.min_score()),
        ),
        ..QualityConfig::default()
    };
    let finder = FaceFinder::new(args.detector.load::<B>(device)?).with_template(template);
    std::fs::create_dir_all(&args.out)?;
    let journal_path = args.out.join(".align_journal.jsonl");
    let header = JournalHeader {
        size: args.size,
        quality: quality.clone(),
        detector: args.detector.choice.detector,
        weights: args.detector.choice.path()?,
        confidence: args.detector.choice.confidence,
        max_side: args.detector.choice.max_side,
        det_size: args.detector.choice.det_size,
    };
    let mut records = read_journal(&journal_path, &header)?;
    let done: HashSet<String> = records.iter().map(|r| r.photo.clone()).collect();
    let photos = collect_images(&args.input, Some(&args.out))?;
    let todo: Vec<&PathBuf> = photos
        .iter()
        .filter(|p| !done.contains(p.to_string_lossy().as_ref()))
        .collect();
    let resumed = photos.len() - todo.len();
    if resumed > 0 {
        tracing::info!("resuming: {resumed} photos already done in an earlier run");
    }
    let fresh = !journal_path.exists() || std::fs::metadata(&journal_path)?.len() == 0;
    let mut journal = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&journal_path)?;
    if fresh {
        writeln!(journal, "{}", serde_json::to_string(&header)?)?;
    }
    let progress = indicatif::ProgressBar::new(todo.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} photos {elapsed} (eta {eta}) {msg}",
        )
        .expect("valid template"),
    );
    for rel in todo {
        let record = process_photo(&finder, args, &quality, rel);
        if let Some(e) = &record.error {
            progress.suspend(|| eprintln!("skipped {}: {e}", record.photo));
        }
        // One line per finished photo, flushed: an interrupted run resumes after it.
        writeln!(journal, "{}", serde_json::to_string(&record)?)?;
        journal.flush()?;
        records.push(record);
        progress.inc(1);
    }
    progress.finish_and_clear();

    let mut summary = Summary {
        photos: photos.len(),
        resumed,
        ..Summary::default()
    };
    for r in &records {
        summary.unreadable += r.error.is_some() as usize;
        for f in &r.faces {
            summary.faces += 1;
            if f.crop.is_some() {
                summary.accepted += 1;
            } else {
                summary.rejected += 1;
                for rule in &f.quality.rejections {
                    *summary
                        .rejected_by_rule
                        .entry(rule.rule().to_string())
                        .or_default() += 1;
                }
            }
        }
    }
    #[derive(Serialize)]
    struct Report<'a> {
        summary: &'a Summary,
        photos: &'a [PhotoRecord],
    }
    let report_path = args.out.join("align_report.json");
    let report = serde_json::to_vec_pretty(&Report {
        summary: &summary,
        photos: &records,
    })?;
    atomic_file::write(&report_path, &report)
        .with_context(|| format!("writing {}", report_path.display()))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{} photos ({} resumed, {} unreadable): {} faces, {} aligned into {}, {} rejected",
            summary.photos,
            summary.resumed,
            summary.unreadable,
            summary.faces,
            summary.accepted,
            args.out.display(),
            summary.rejected
        );
        for (rule, n) in &summary.rejected_by_rule {
            println!("  {rule}: {n}");
        }
        println!("report: {}", report_path.display());
    }
    Ok(())
}
