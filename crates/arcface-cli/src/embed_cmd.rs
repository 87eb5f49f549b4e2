//! `arcface embed`: aligned crops, or photos through the shared detect-align-embed pipeline,
//! to JSON embeddings.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use face_detect::BBox;
use face_embed::Embedder;
use face_pipeline::{read_photo, FacePipeline, PhotoError, PhotoLimits};
use iresnet::ConvBackend;
use iresnet::INPUT_SIZE;
use serde::Serialize;

use crate::faces::DetectorArgs;

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Any model file: `.arcface` (`arcface import`, `arcface train`) or int8 `.aq8`
    /// (`arcface quantize`) [default: w600k_mbf as `arcface fetch` imports it].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Aligned 112x112 face images, or photos with `--detect` (PNG, JPEG or BMP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// L2-normalize the embeddings (cosine similarity is then a dot product). Always on with
    /// `--detect`.
    #[arg(long)]
    l2: bool,
    /// Faces per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// The images are photos: detect every face, align it to the ArcFace template and embed
    /// it, as `arcface serve` does; one entry per face, with its box and score.
    #[arg(long)]
    detect: bool,
    #[command(flatten)]
    detector: DetectorArgs,
}

#[derive(Serialize)]
struct EmbedOutput {
    model: String,
    embedding_dim: usize,
    l2_normalized: bool,
    embeddings: Vec<ImageEmbedding>,
}

#[derive(Serialize)]
struct ImageEmbedding {
    image: String,
    /// With `--detect`: which face of the photo (best first), its box and detector score.
    #[serde(skip_serializing_if = "Option::is_none")]
    face: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bbox: Option<BBox>,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f32>,
    /// Norm before normalising (a quality signal: blurred or occluded faces embed shorter).
    #[serde(skip_serializing_if = "Option::is_none")]
    norm: Option<f32>,
    embedding: Vec<f32>,
}

pub fn run<B: ConvBackend>(args: &EmbedArgs, device: &B::Device) -> Result<()> {
    let model = face_models::cache::model(args.model.as_deref())?;
    let net = crate::eval_cmd::load_embedder::<B>(&model, device)?;
    let embedding_dim = net.embedding_dim();
    let progress = indicatif::ProgressBar::new(args.images.len() as u64);
    let unit = if args.detect { "photos" } else { "faces" };
    progress.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {unit} {{elapsed}}"
        ))
        .expect("valid template"),
    );
    let embeddings = if args.detect {
        let pipeline = FacePipeline::new(args.detector.load::<B>(device)?, net);
        photos(&pipeline, &args.detector, &args.images, || progress.inc(1))?
    } else {
        aligned(&*net, args, |n| progress.inc(n as u64))?
    };
    progress.finish_and_clear();
    let output = EmbedOutput {
        model: model.display().to_string(),
        embedding_dim,
        l2_normalized: args.l2 || args.detect,
        embeddings,
    };
    println!("{}", serde_json::to_string(&output)?);
    Ok(())
}

/// Aligned crops, in batches.
fn aligned(
    net: &dyn Embedder,
    args: &EmbedArgs,
    mut done: impl FnMut(usize),
) -> Result<Vec<ImageEmbedding>> {
    let mut embeddings = Vec::with_capacity(args.images.len());
    for chunk in args.images.chunks(args.batch_size.max(1)) {
        let faces: Vec<image::RgbImage> = chunk
            .iter()
            .map(|p| read_aligned_face(p))
            .collect::<Result<_>>()?;
        for (path, mut embedding) in chunk.iter().zip(net.embed(&faces)?) {
            let norm = face_embed::norm(&embedding) as f32;
            if args.l2 {
                face_embed::normalize(&mut embedding);
            }
            embeddings.push(ImageEmbedding {
                image: path.display().to_string(),
                face: None,
                bbox: None,
                score: None,
                norm: Some(norm),
                embedding,
            });
        }
        done(chunk.len());
    }
    Ok(embeddings)
}

/// Photos through the pipeline: every face, best first.
fn photos<D, E>(
    pipeline: &FacePipeline<D, E>,
    reader: &DetectorArgs,
    paths: &[PathBuf],
    mut done: impl FnMut(),
) -> Result<Vec<ImageEmbedding>>
where
    D: face_detect::FaceDetector,
    E: Embedder,
{
    let mut embeddings = Vec::new();
    for path in paths {
        let photo = reader.photo(path)?;
        let found = pipeline
            .run(&photo)
            .with_context(|| format!("embedding the faces of {}", path.display()))?;
        if found.faces.is_empty() {
            tracing::warn!("no face found in {}", path.display());
        }
        for (i, face) in found.faces.into_iter().enumerate() {
            embeddings.push(ImageEmbedding {
                image: path.display().to_string(),
                face: Some(i),
                bbox: Some(face.detection.bbox),
                score: Some(face.detection.score),
                norm: None,
                embedding: face.embedding,
            });
        }
        done();
    }
    Ok(embeddings)
}

/// Decodes an aligned face; anything but 112x112 is refused rather than silently resized (and
/// anything larger before its pixels are decoded).
fn read_aligned_face(path: &Path) -> Result<image::RgbImage> {
    let side = INPUT_SIZE as u64;
    let (width, height) = match read_photo(path, PhotoLimits::pixels(side * side)) {
        Err(PhotoError::TooLarge { width, height, .. }) => (width, height),
        other => {
            let image = other.with_context(|| format!("cannot read image {}", path.display()))?;
            if image.dimensions() == (INPUT_SIZE as u32, INPUT_SIZE as u32) {
                return Ok(image);
            }
            image.dimensions()
        }
    };
    bail!(
        "{} is {width}x{height}; `arcface embed` takes faces already aligned to \
         {INPUT_SIZE}x{INPUT_SIZE} (or photos with --detect)",
        path.display()
    )
}
