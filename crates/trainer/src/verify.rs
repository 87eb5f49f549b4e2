//! 10-fold verification accuracy as insightface computes it, on similarity scores: 10 contiguous
//! folds, the best-accuracy threshold on nine (first one on ties) applied to the tenth, mean
//! accuracy. (The `eval` crate will own the full protocol; this is what training needs.)

/// Mean 10-fold accuracy; `scores` are similarities (higher = same person).
pub fn ten_fold_accuracy(scores: &[f64], issame: &[bool]) -> f64 {
    let n = scores.len().min(issame.len());
    if n < 10 {
        return f64::NAN;
    }
    let mut thresholds: Vec<f64> = scores[..n].to_vec();
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    // Midpoints between consecutive scores, and one below all.
    let mut candidates = vec![thresholds[0] - 1.0];
    candidates.extend(thresholds.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    let folds = 10;
    let mut total = 0.0;
    for f in 0..folds {
        // Contiguous folds; the first n % 10 are one longer, as sklearn's KFold makes them.
        let bounds = |k: usize| k * (n / folds) + k.min(n % folds);
        let test = bounds(f)..bounds(f + 1);
        let accuracy = |t: f64, idx: &mut dyn Iterator<Item = usize>| {
            let (mut right, mut count) = (0usize, 0usize);
            for i in idx {
                right += ((scores[i] > t) == issame[i]) as usize;
                count += 1;
            }
            right as f64 / count.max(1) as f64
        };
        let mut best = (f64::MIN, candidates[0]);
        for &t in &candidates {
            let a = accuracy(t, &mut (0..n).filter(|i| !test.contains(i)));
            if a > best.0 {
                best = (a, t);
            }
        }
        total += accuracy(best.1, &mut test.clone());
    }
    total / folds as f64
}

use std::path::Path;

use arcface_loss::{MarginFc, MarginHead};
use burn::tensor::backend::Backend;
use face_data::{
    verification_pair_indices, FaceDataset, LfwPairs, SyntheticFaces, VerificationBin,
};
use iresnet::{AnyBackbone, Backbone};

use crate::train::TrainError;

/// Verification pairs held in memory: faces `2k` and `2k + 1` are pair `k`.
pub struct PairSet {
    pub faces: Vec<image::RgbImage>,
    pub issame: Vec<bool>,
}

/// What one verification measured.
#[derive(Debug, Clone, Copy)]
pub struct Verification {
    /// Mean 10-fold accuracy.
    pub accuracy: f64,
    /// Share of the top-10 singular values of (up to 256) evaluation embeddings.
    pub collapse_share: f64,
}

impl PairSet {
    /// Pairs of held-out synthetic identities, taken from the split directly.
    pub fn held_out(held: &SyntheticFaces, pairs: usize, seed: u64) -> Result<Self, TrainError> {
        let mut set = Self {
            faces: Vec::with_capacity(4 * pairs),
            issame: Vec::with_capacity(2 * pairs),
        };
        for (a, b, same) in verification_pair_indices(held, pairs, seed)? {
            set.faces.push(held.get(a)?.image);
            set.faces.push(held.get(b)?.image);
            set.issame.push(same);
        }
        Ok(set)
    }

    /// An insightface verification `.bin`.
    pub fn bin(path: &Path) -> Result<Self, TrainError> {
        let bin = VerificationBin::read(path)?;
        let faces = bin
            .images
            .iter()
            .enumerate()
            .map(|(i, bytes)| aligned(face_data::decode(bytes, path, i)?, path, i))
            .collect::<Result<_, TrainError>>()?;
        Ok(Self {
            faces,
            issame: bin.issame,
        })
    }

    /// LFW's `pairs.txt` over a folder of aligned faces, pairs in the file's order (so the
    /// contiguous ten folds are LFW's own).
    pub fn lfw(pairs: &Path, images: &Path) -> Result<Self, TrainError> {
        let list = LfwPairs::read(pairs)?;
        let missing = list.missing_images(images);
        if let Some(first) = missing.first() {
            return Err(TrainError::Other(format!(
                "{} of the images {} names are missing under {}, e.g. {}",
                missing.len(),
                pairs.display(),
                images.display(),
                first.display()
            )));
        }
        let mut set = Self {
            faces: Vec::with_capacity(2 * list.pairs.len()),
            issame: Vec::with_capacity(list.pairs.len()),
        };
        for (i, pair) in list.pairs.iter().enumerate() {
            let (a, b) = pair.paths(images);
            for path in [a, b] {
                let bytes = std::fs::read(&path).map_err(|source| TrainError::Io {
                    path: path.clone(),
                    source,
                })?;
                let face = face_data::decode(&bytes, &path, i)?;
                set.faces.push(aligned(face, &path, i)?);
            }
            set.issame.push(pair.same);
        }
        Ok(set)
    }

    /// Embeds every face (plus its mirror image with `flip`), L2-normalised, row-major.
    pub fn embed<B: Backend>(
        &self,
        backbone: &AnyBackbone<B>,
        flip: bool,
        device: &B::Device,
    ) -> Result<(Vec<f32>, usize), TrainError> {
        let dim = backbone.embedding_dim();
        let mut out = Vec::with_capacity(self.faces.len() * dim);
        for chunk in self.faces.chunks(64) {
            let bytes: Vec<&[u8]> = chunk.iter().map(|f| f.as_raw().as_slice()).collect();
            let x = iresnet::preprocess::faces_to_tensor::<B>(&bytes, device)?;
            let mut e = backbone.embed(x.clone());
            if flip {
                e = e + backbone.embed(x.flip([3]));
            }
            let values = e
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| TrainError::Other(format!("embeddings: {e:?}")))?;
            for row in values.chunks(dim) {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                out.extend(row.iter().map(|v| v / norm));
            }
        }
        Ok((out, dim))
    }

    /// 10-fold accuracy on cosine scores, and the collapse share of the first 256 embeddings.
    pub fn verify<B: Backend>(
        &self,
        backbone: &AnyBackbone<B>,
        flip: bool,
        device: &B::Device,
    ) -> Result<Verification, TrainError> {
        let (embeddings, dim) = self.embed(backbone, flip, device)?;
        let scores: Vec<f64> = (0..self.issame.len())
            .map(|k| {
                let a = &embeddings[2 * k * dim..(2 * k + 1) * dim];
                let b = &embeddings[(2 * k + 1) * dim..(2 * k + 2) * dim];
                a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum()
            })
            .collect();
        let sample = &embeddings[..embeddings.len().min(256 * dim)];
        Ok(Verification {
            accuracy: ten_fold_accuracy(&scores, &self.issame),
            collapse_share: crate::collapse::top_singular_share(sample, dim, 10),
        })
    }
}

/// Faces for evaluation must already be aligned crops of the backbone's input size.
fn aligned(
    face: image::RgbImage,
    path: &Path,
    index: usize,
) -> Result<image::RgbImage, TrainError> {
    let size = iresnet::INPUT_SIZE as u32;
    if face.dimensions() != (size, size) {
        return Err(TrainError::Other(format!(
            "{} (image {index}): {}x{} pixels; verification needs aligned {size}x{size} faces (arcface align)",
            path.display(),
            face.width(),
            face.height()
        )));
    }
    Ok(face)
}

/// Unseen samples of the training identities with their labels: the validation loss of a
/// synthetic run (one sample each of the first `count` identities, index `per_identity`).
pub struct ValidationSet {
    faces: Vec<image::RgbImage>,
    labels: Vec<usize>,
}

impl ValidationSet {
    pub fn synthetic(config: &face_data::SyntheticConfig, count: usize) -> Self {
        let ids = config.identities.min(count);
        let faces = (0..ids)
            .map(|id| {
                face_data::synthetic::render(config, id as u64, config.per_identity as u64, None)
                    .image
            })
            .collect();
        Self {
            faces,
            labels: (0..ids).collect(),
        }
    }

    /// Mean margin loss in inference mode.
    pub fn loss<B: Backend>(
        &self,
        backbone: &AnyBackbone<B>,
        head: &MarginFc<B>,
        step: u64,
        device: &B::Device,
    ) -> Result<f64, TrainError> {
        let mut total = 0.0;
        for (faces, labels) in self.faces.chunks(64).zip(self.labels.chunks(64)) {
            let bytes: Vec<&[u8]> = faces.iter().map(|f| f.as_raw().as_slice()).collect();
            let x = iresnet::preprocess::faces_to_tensor::<B>(&bytes, device)?;
            let out = head.forward(backbone.embed(x), labels, step)?;
            total += out.loss.into_scalar().elem::<f64>() * labels.len() as f64;
        }
        Ok(total / self.labels.len().max(1) as f64)
    }
}

use burn::tensor::ElementConversion;
