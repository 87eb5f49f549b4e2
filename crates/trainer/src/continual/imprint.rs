//! Weight imprinting (Qi et al., 2018): a new identity's centre starts from the normalised mean
//! embedding of its images under the old backbone, so the grown head knows the new people
//! before a single step.
//!
//! Calibrated to the old head: a margin-trained centre sits further from its faces than their
//! mean does (cosine about 0.46 against 0.82 for the built-in run's), so raw imprints would
//! outscore every old centre and take the old people's faces. Each imprint is therefore turned
//! away from its mean, towards a random orthogonal direction, until its faces' mean cosine
//! equals what the old centres give theirs.

use burn::tensor::{Tensor, TensorData};
use eval::{embed_normalized, BurnEmbedder};
use face_data::{FaceDataset, Merged};
use face_embed::dot;
use image::RgbImage;
use iresnet::{AnyBackbone, ConvBackend};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::error::TrainError;

/// Images per new identity its imprint is averaged over: the direction of the mean of 8 is
/// within a few degrees of the mean of all, and each image costs a forward pass.
const IMPRINT_IMAGES: usize = 8;
/// Faces of old identities the old centres' cosine is measured on, at most.
pub(super) const CALIBRATION_FACES: usize = 256;

/// Faces of old identities and their labels.
pub(super) type OldFaces = (Vec<RgbImage>, Vec<usize>);

/// The grown head's centres: `old`'s rows for the identities it knew, then one per new identity
/// of `dataset`: imprinted (at the old rows' mean length, calibrated on `old_faces`, faces of
/// old identities with their labels) when `imprint`, else `fresh`'s row (the new head's random
/// initialisation).
pub(super) fn grow<B: ConvBackend>(
    old: &Tensor<B, 2>,
    fresh: &Tensor<B, 2>,
    backbone: &AnyBackbone<B>,
    dataset: &Merged,
    old_faces: &OldFaces,
    imprint: bool,
    device: &B::Device,
) -> Result<Tensor<B, 2>, TrainError> {
    let [known, dim] = old.dims();
    let total = dataset.num_identities();
    if total == known {
        return Ok(old.clone());
    }
    if !imprint {
        let new = fresh.clone().slice([known..total, 0..dim]);
        return Ok(Tensor::cat(vec![old.clone(), new], 0));
    }
    let mut rows = old
        .to_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 rows");
    let scale = rows.chunks(dim).map(face_embed::norm).sum::<f64>() as f32 / known.max(1) as f32;
    rows.chunks_mut(dim).for_each(face_embed::normalize);
    let embedder = BurnEmbedder::new(backbone.clone(), device.clone());
    let (means, own) = imprints(dataset, known, &embedder)?;
    let target = old_cosine(&rows, old_faces, &embedder)?;
    let turn = match target {
        Some(t) => (t / own).clamp(0.0, 1.0),
        None => {
            tracing::warn!("no faces of old identities to calibrate the imprints on: they keep their means' direction");
            1.0
        }
    };
    tracing::info!(
        "imprinting {} identities: their faces' cosine {own:.3}, the old centres' {}; turned to {:.3} of the mean",
        total - known,
        target.map_or("unmeasured".into(), |t| format!("{t:.3}")),
        turn
    );
    let mut rng = StdRng::seed_from_u64(0x1a9_7e5);
    let mut imprinted = Vec::with_capacity(means.len());
    for mean in means.chunks(dim) {
        let mean = unit(mean.to_vec());
        let random: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
        let along = dot(&random, &mean);
        let away = unit(
            random
                .iter()
                .zip(&mean)
                .map(|(r, m)| r - along * m)
                .collect(),
        );
        let side = (1.0 - turn * turn).max(0.0).sqrt();
        imprinted.extend((mean.iter().zip(&away)).map(|(m, a)| (turn * m + side * a) * scale));
    }
    let new = Tensor::from_data(TensorData::new(imprinted, [total - known, dim]), device);
    Ok(Tensor::cat(vec![old.clone(), new], 0))
}

/// Each new identity's mean normalised embedding (up to [`IMPRINT_IMAGES`] images), and the mean
/// cosine of those faces with their own mean.
fn imprints<B: ConvBackend>(
    dataset: &Merged,
    known: usize,
    embedder: &BurnEmbedder<B>,
) -> Result<(Vec<f32>, f32), TrainError> {
    let mut images = face_data::by_identity(dataset)?.split_off(known);
    images.iter_mut().for_each(|i| i.truncate(IMPRINT_IMAGES));
    let mut means = Vec::new();
    let (mut cosines, mut faces) = (0.0, 0usize);
    for chunk in images.chunks(16) {
        let indices: Vec<usize> = chunk.iter().flatten().copied().collect();
        let batch = face_data::images(dataset, &indices)?;
        let e = embed_normalized(embedder, &batch, false, |_| {}).map_err(eval::EvalError::from)?;
        let mut e = e.iter();
        for indices in chunk {
            let own: Vec<&Vec<f32>> = e.by_ref().take(indices.len()).collect();
            let dim = own.first().map_or(0, |v| v.len());
            let mean = unit((0..dim).map(|k| own.iter().map(|v| v[k]).sum()).collect());
            cosines += own.iter().map(|v| dot(v, &mean)).sum::<f32>();
            faces += own.len();
            means.extend(mean);
        }
    }
    Ok((means, cosines / faces.max(1) as f32))
}

/// The mean cosine of old identities' faces with their own old centre (`rows` normalised);
/// `None` without faces.
fn old_cosine<B: ConvBackend>(
    rows: &[f32],
    faces: &OldFaces,
    embedder: &BurnEmbedder<B>,
) -> Result<Option<f32>, TrainError> {
    let (images, labels) = faces;
    if images.is_empty() {
        return Ok(None);
    }
    let e = embed_normalized(embedder, images, false, |_| {}).map_err(eval::EvalError::from)?;
    let dim = e[0].len();
    let total: f32 = (e.iter().zip(labels))
        .map(|(v, label)| dot(v, &rows[label * dim..(label + 1) * dim]))
        .sum();
    Ok(Some(total / images.len() as f32))
}

/// `v` scaled to unit length.
fn unit(mut v: Vec<f32>) -> Vec<f32> {
    face_embed::normalize(&mut v);
    v
}
