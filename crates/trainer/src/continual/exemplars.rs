//! The replay buffer: exemplars of the identities a run knew, kept as images (`replay.rec` and
//! its names) so that later rounds replay them without the old data.

use std::path::Path;
use std::sync::Arc;

use eval::{embed_normalized, BurnEmbedder};
use face_data::recordio::names_path;
use face_data::{FaceDataset, Merged, RecordDataset, Subset};
use iresnet::{AnyBackbone, ConvBackend};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

use super::{ContinualConfig, Selection};
use crate::error::TrainError;

/// Candidates per identity herding chooses from, at least (4 per exemplar otherwise): each is
/// a forward pass of the old model, and a person's first images are as good a pool as any.
const HERDING_CANDIDATES: usize = 16;

/// The buffer's file in a continual run's folder.
pub(crate) const REPLAY_FILE: &str = "replay.rec";

/// This round's replay buffer in `out`: reopened when an earlier start of the run wrote it,
/// else chosen from `pool` (the old identities' images: the old run's training data and its
/// own buffer), `c.replay / identities` exemplars each, and written.
pub(super) fn buffer<B: ConvBackend>(
    pool: impl FnOnce() -> Result<Vec<Box<dyn FaceDataset>>, TrainError>,
    backbone: &AnyBackbone<B>,
    c: &ContinualConfig,
    out: &Path,
    seed: u64,
    device: &B::Device,
) -> Result<Option<Box<dyn FaceDataset>>, TrainError> {
    let path = out.join(REPLAY_FILE);
    if c.replay == 0 {
        return Ok(None);
    }
    if path.is_file() && names_path(&path).is_file() {
        return Ok(Some(Box::new(RecordDataset::open(&path)?)));
    }
    let pool = Merged::by_name(&[], pool()?)?;
    let n = pool.num_identities();
    let per = c.replay / n.max(1);
    if per == 0 {
        return Err(TrainError::Other(format!(
            "continual.replay = {}: fewer exemplars than the {n} old identities; give at least one each",
            c.replay
        )));
    }
    let by_identity = face_data::by_identity(&pool)?;
    tracing::info!(
        "replay buffer: {per} exemplars each of {n} identities, by {:?} over {} images",
        c.selection,
        pool.len()
    );
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7e91_a3c5);
    let embedder = BurnEmbedder::new(backbone.clone(), device.clone());
    let mut chosen = Vec::with_capacity(n * per);
    // Identities 16 at a time, so the old model embeds their candidates in large batches.
    for group in by_identity.chunks(16) {
        let candidates: Vec<&[usize]> = (group.iter())
            .map(|ids| &ids[..ids.len().min(HERDING_CANDIDATES.max(4 * per))])
            .collect();
        let embeddings = match c.selection {
            Selection::Random => None,
            Selection::Herding => {
                let all: Vec<usize> = candidates.concat();
                let faces = face_data::images(&pool, &all)?;
                let e = embed_normalized(&embedder, &faces, false, |_| {})
                    .map_err(eval::EvalError::from)?;
                Some(e)
            }
        };
        let mut offset = 0;
        for (indices, candidates) in group.iter().zip(&candidates) {
            let picks: Vec<usize> = match &embeddings {
                None => {
                    let mut v = indices.clone();
                    v.shuffle(&mut rng);
                    v.truncate(per);
                    v.sort_unstable();
                    v
                }
                Some(e) => {
                    let own = &e[offset..offset + candidates.len()];
                    herding(own, per)
                        .into_iter()
                        .map(|k| candidates[k])
                        .collect()
                }
            };
            offset += candidates.len();
            chosen.extend(picks);
        }
    }
    let exemplars = Subset::new(Arc::new(pool), chosen)?;
    face_data::pack_dataset(&exemplars, &path, |_| {})?;
    Ok(Some(Box::new(RecordDataset::open(&path)?)))
}

/// iCaRL's herding: `k` of the `embeddings` (L2-normalised, one identity's) chosen in turn so
/// that the mean of those chosen stays closest to the mean of all; their indices, in the order
/// chosen. All of them when there are no more than `k`.
pub fn herding(embeddings: &[Vec<f32>], k: usize) -> Vec<usize> {
    let n = embeddings.len();
    let dim = embeddings.first().map_or(0, Vec::len);
    let mut mean = vec![0f64; dim];
    for e in embeddings {
        (mean.iter_mut().zip(e)).for_each(|(m, &v)| *m += v as f64 / n as f64);
    }
    let mut sum = vec![0f64; dim];
    let mut used = vec![false; n];
    let mut chosen = Vec::with_capacity(k.min(n));
    for step in 1..=k.min(n) {
        let distance = |e: &Vec<f32>| -> f64 {
            (mean.iter().zip(&sum).zip(e))
                .map(|((m, s), &v)| (m - (s + v as f64) / step as f64).powi(2))
                .sum()
        };
        let best = (0..n)
            .filter(|&i| !used[i])
            .min_by(|&a, &b| distance(&embeddings[a]).total_cmp(&distance(&embeddings[b])))
            .expect("an unused embedding remains");
        used[best] = true;
        (sum.iter_mut().zip(&embeddings[best])).for_each(|(s, &v)| *s += v as f64);
        chosen.push(best);
    }
    chosen
}
