//! Decode + augment + batch on all cores, a bounded number of batches ahead, in an order fixed
//! by (seed, epoch); optionally identity-balanced.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use face_augment::Pipeline;
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    dataset::{FaceDataset, FaceSample},
    error::{DataError, Result},
    modality::{total_planes, Modality},
};

/// How an epoch visits the samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Sampling {
    /// Every sample once.
    Uniform,
    /// Every identity `per_identity` times (drawn without replacement while its images last),
    /// identities in random order: large and small identities weigh the same.
    Balanced {
        /// Times each identity is drawn per epoch.
        per_identity: usize,
    },
}

/// Loader settings (serde, for the trainer's TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch_size: usize,
    /// Shuffle each epoch (the order depends on seed and epoch only).
    pub shuffle: bool,
    /// Seed of shuffling and augmentation.
    pub seed: u64,
    /// Drop a last, smaller batch.
    pub drop_last: bool,
    /// Batches prepared ahead of the consumer; bounds the memory in flight.
    pub prefetch: usize,
    /// How samples are drawn.
    pub sampling: Sampling,
    /// Skip samples that fail to load (corrupt image, bad record) instead of stopping; each is
    /// counted and reported in its batch.
    pub skip_bad: bool,
    /// Decode/augment threads; 0 uses every core.
    pub workers: usize,
    /// The images of each face a batch stacks, in order (`[rgb]`: 3 planes; `[rgb, nir, depth]`:
    /// 5). Each goes through the same augmentation draw, so a flip or crop moves all alike.
    pub modalities: Vec<Modality>,
    /// Modality dropout: the chance that each modality of a sample is zeroed (never all of
    /// them), so a model learns to work without any one; 0 keeps all.
    pub modality_dropout: f32,
    /// The modalities dropout may blank (empty: any): `["depth"]` trains for cameras without
    /// depth while RGB and NIR are always there.
    pub dropout_modalities: Vec<Modality>,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 128,
            shuffle: true,
            seed: 0,
            drop_last: true,
            prefetch: 4,
            sampling: Sampling::Uniform,
            skip_bad: false,
            workers: 0,
            modalities: vec![Modality::Rgb],
            modality_dropout: 0.0,
            dropout_modalities: Vec::new(),
        }
    }
}

/// One batch, channel-major like PyTorch: `images` is `[n, 3, h, w]` flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[N, 3, H, W]` values, row-major.
    pub images: Vec<f32>,
    /// `[N, 3, H, W]`.
    pub shape: [usize; 4],
    /// Each image's identity.
    pub labels: Vec<usize>,
    /// Dataset index of each sample.
    pub indices: Vec<usize>,
    /// Samples of this batch that were skipped, with the reason (only with `skip_bad`).
    pub skipped: Vec<(usize, String)>,
}

impl Batch {
    /// The images `[n, 3, h, w]` and labels `[n]` as Burn tensors.
    pub fn to_tensors<B: Backend>(&self, device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
        let images = Tensor::from_data(TensorData::new(self.images.clone(), self.shape), device);
        let labels: Vec<i64> = self.labels.iter().map(|&l| l as i64).collect();
        let labels = Tensor::from_data(TensorData::new(labels, [self.labels.len()]), device);
        (images, labels)
    }

    /// Splits the batch into `parts` contiguous shards as even as possible (the first
    /// `len % parts` one sample larger), for data-parallel replicas; empty shards are left out.
    pub fn split(&self, parts: usize) -> Vec<Batch> {
        let n = self.labels.len();
        let parts = parts.max(1);
        let per_sample = self.shape[1] * self.shape[2] * self.shape[3];
        let mut shards = Vec::with_capacity(parts);
        for k in 0..parts {
            let range = shard_range(n, parts, k);
            if range.is_empty() {
                continue;
            }
            shards.push(Batch {
                images: self.images[range.start * per_sample..range.end * per_sample].to_vec(),
                shape: [range.len(), self.shape[1], self.shape[2], self.shape[3]],
                labels: self.labels[range.clone()].to_vec(),
                indices: self.indices[range.clone()].to_vec(),
                skipped: Vec::new(),
            });
        }
        shards
    }
}

/// Shard `k` of `parts` contiguous shards of `n` items, as even as possible (the first
/// `n % parts` one item larger): how a batch is split over devices and over nodes alike.
pub fn shard_range(n: usize, parts: usize, k: usize) -> std::ops::Range<usize> {
    let parts = parts.max(1);
    let start = k * (n / parts) + k.min(n % parts);
    start..start + n / parts + usize::from(k < n % parts)
}

/// A dataset, an augmentation pipeline and the batching around them.
pub struct Loader<D: FaceDataset + 'static> {
    dataset: Arc<D>,
    pipeline: Arc<Pipeline>,
    config: LoaderConfig,
    /// Sample indices by identity (for balanced sampling).
    by_identity: Arc<Vec<Vec<usize>>>,
    skipped: Arc<AtomicUsize>,
    pool: Arc<rayon::ThreadPool>,
    /// This process's part of each batch (rank, of how many), in a multi-node run.
    shard: (usize, usize),
}

impl<D: FaceDataset + 'static> Loader<D> {
    /// A loader over `dataset`, augmenting with `pipeline`.
    pub fn new(dataset: D, pipeline: Pipeline, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 || config.prefetch == 0 {
            return Err(DataError::Config {
                what: "loader",
                reason: "batch_size and prefetch must be > 0".into(),
            });
        }
        crate::modality::check_list(&config.modalities)?;
        if !(0.0..1.0).contains(&config.modality_dropout) {
            return Err(DataError::Config {
                what: "loader",
                reason: format!(
                    "modality_dropout {} is outside [0, 1)",
                    config.modality_dropout
                ),
            });
        }
        if dataset.is_empty() {
            return Err(DataError::Config {
                what: "loader",
                reason: format!("{} holds no samples", dataset.source().display()),
            });
        }
        let by_identity = match config.sampling {
            Sampling::Uniform => Vec::new(),
            Sampling::Balanced { per_identity } => {
                if per_identity == 0 {
                    return Err(DataError::Config {
                        what: "loader",
                        reason: "balanced sampling needs per_identity > 0".into(),
                    });
                }
                crate::dataset::by_identity(&dataset)?
            }
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers)
            .thread_name(|i| format!("face-data-loader-{i}"))
            .build()
            .map_err(|e| DataError::Config {
                what: "loader",
                reason: format!("cannot start {} worker threads: {e}", config.workers),
            })?;
        Ok(Self {
            dataset: Arc::new(dataset),
            pipeline: Arc::new(pipeline),
            config,
            by_identity: Arc::new(by_identity),
            skipped: Arc::new(AtomicUsize::new(0)),
            pool: Arc::new(pool),
            shard: (0, 1),
        })
    }

    /// The dataset it reads.
    pub fn dataset(&self) -> &D {
        &self.dataset
    }

    /// The batch size, sampling, workers and seed it was built with.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Gives only part `rank` of `count` of each batch ([`shard_range`]): the samples (and their
    /// augmentation draws) that node `rank` of a multi-node run trains on, the others neither
    /// read nor augmented here. Epochs, order and batch count stay those of the whole run.
    pub fn with_shard(mut self, rank: usize, count: usize) -> Result<Self> {
        if count == 0 || rank >= count {
            return Err(DataError::Config {
                what: "loader",
                reason: format!("shard {rank} of {count}: shards run from 0 to count - 1"),
            });
        }
        self.shard = (rank, count);
        Ok(self)
    }

    /// Samples skipped so far (all epochs).
    pub fn skipped(&self) -> usize {
        self.skipped.load(Ordering::Relaxed)
    }

    /// The sample indices of `epoch`, in order.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(
            self.config.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x10ad,
        );
        match &self.config.sampling {
            Sampling::Uniform => {
                let mut order: Vec<usize> = (0..self.dataset.len()).collect();
                if self.config.shuffle {
                    order.shuffle(&mut rng);
                }
                order
            }
            Sampling::Balanced { per_identity } => {
                let mut ids: Vec<usize> = (0..self.by_identity.len())
                    .filter(|&k| !self.by_identity[k].is_empty())
                    .collect();
                ids.shuffle(&mut rng);
                let mut order = Vec::with_capacity(ids.len() * per_identity);
                for id in ids {
                    let mut pool = self.by_identity[id].clone();
                    pool.shuffle(&mut rng);
                    for k in 0..*per_identity {
                        order.push(if k < pool.len() {
                            pool[k]
                        } else {
                            pool[rng.random_range(0..pool.len())]
                        });
                    }
                }
                order
            }
        }
    }

    /// Number of batches in an epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let n = match &self.config.sampling {
            Sampling::Uniform => self.dataset.len(),
            Sampling::Balanced { per_identity } => {
                per_identity
                    * self
                        .by_identity
                        .iter()
                        .filter(|ids| !ids.is_empty())
                        .count()
            }
        };
        if self.config.drop_last {
            n / self.config.batch_size
        } else {
            n.div_ceil(self.config.batch_size)
        }
    }

    /// The batches of `epoch`, produced on a background thread (each batch decoded and augmented
    /// by the loader's `workers` threads) at most `prefetch` ahead. Dropping the iterator stops
    /// the work.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `first` on, the earlier ones neither read nor augmented:
    /// a resumed run continues at the batch it stopped before. Every sample's augmentation
    /// depends only on (seed, epoch, index), so the batches are the ones `epoch` would give.
    pub fn epoch_from(&self, epoch: u64, first: usize) -> Epoch {
        let (tx, rx) = sync_channel(self.config.prefetch);
        let order = self.order(epoch);
        let (dataset, pipeline, skipped) = (
            self.dataset.clone(),
            self.pipeline.clone(),
            self.skipped.clone(),
        );
        let pool = self.pool.clone();
        let (rank, nodes) = self.shard;
        let config = self.config.clone();
        std::thread::spawn(move || {
            let mut chunks: Vec<&[usize]> = order.chunks(config.batch_size).collect();
            if config.drop_last && chunks.last().is_some_and(|c| c.len() < config.batch_size) {
                chunks.pop();
            }
            for chunk in chunks.into_iter().skip(first) {
                let batch = pool.install(|| {
                    let part = &chunk[shard_range(chunk.len(), nodes, rank)];
                    make_batch(&*dataset, &pipeline, &config, epoch, part, &skipped)
                });
                let stop = batch.is_err();
                if tx.send(batch).is_err() || stop {
                    return;
                }
            }
        });
        Epoch { rx }
    }
}

/// The batches of one epoch, in order.
pub struct Epoch {
    rx: Receiver<Result<Batch>>,
}

impl Iterator for Epoch {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

fn make_batch<D: FaceDataset>(
    dataset: &D,
    pipeline: &Pipeline,
    config: &LoaderConfig,
    epoch: u64,
    indices: &[usize],
    skipped_total: &AtomicUsize,
) -> Result<Batch> {
    let samples: Vec<(usize, Result<(Planes, usize)>)> = indices
        .par_iter()
        .map(|&i| {
            let out = dataset.get(i).and_then(|s| {
                let label = s.label;
                sample_planes(dataset, s, pipeline, config, epoch, i).map(|t| (t, label))
            });
            (i, out)
        })
        .collect();
    let mut batch = Batch {
        images: Vec::new(),
        shape: [0, total_planes(&config.modalities), 0, 0],
        labels: Vec::with_capacity(indices.len()),
        indices: Vec::with_capacity(indices.len()),
        skipped: Vec::new(),
    };
    for (i, sample) in samples {
        let (t, label) = match sample {
            Ok(s) => s,
            Err(e) if config.skip_bad => {
                skipped_total.fetch_add(1, Ordering::Relaxed);
                batch.skipped.push((i, e.to_string()));
                continue;
            }
            Err(e) => return Err(e),
        };
        if batch.indices.is_empty() {
            batch.shape[2..].copy_from_slice(&[t.height, t.width]);
            batch.images.reserve(indices.len() * t.data.len());
        } else if [t.height, t.width] != [batch.shape[2], batch.shape[3]] {
            let e = DataError::Decode {
                path: dataset.source(),
                index: i,
                reason: format!(
                    "image is {}x{} but the batch is {}x{}: sizes must agree",
                    t.width, t.height, batch.shape[3], batch.shape[2]
                ),
            };
            if config.skip_bad {
                skipped_total.fetch_add(1, Ordering::Relaxed);
                batch.skipped.push((i, e.to_string()));
                continue;
            }
            return Err(e);
        }
        batch.images.extend_from_slice(&t.data);
        batch.labels.push(label);
        batch.indices.push(i);
    }
    batch.shape[0] = batch.indices.len();
    Ok(batch)
}

/// One sample's planes, `[C, H, W]` row-major.
struct Planes {
    height: usize,
    width: usize,
    data: Vec<f32>,
}

/// A sample's input planes after augmentation: each modality through the same pipeline draw
/// (seed, epoch, index), single-plane images as grey RGB whose first plane is kept; the
/// modalities modality dropout picked are zeros.
fn sample_planes<D: FaceDataset>(
    dataset: &D,
    sample: FaceSample,
    pipeline: &Pipeline,
    config: &LoaderConfig,
    epoch: u64,
    index: usize,
) -> Result<Planes> {
    let augment = |image: image::RgbImage| {
        (pipeline.run_tensor(image, config.seed, epoch, index as u64)).map_err(|e| {
            DataError::Decode {
                path: dataset.source(),
                index,
                reason: format!("augmentation: {e}"),
            }
        })
    };
    let dropped = dropped_modalities(config, epoch, index);
    let mut sample = sample;
    let mut out = Planes {
        height: 0,
        width: 0,
        data: Vec::new(),
    };
    for (k, &m) in config.modalities.iter().enumerate() {
        let t = if m == Modality::Rgb {
            // Listed once (checked), so the image moves instead of being copied.
            augment(std::mem::take(&mut sample.image))?
        } else {
            let g = sample.gray_plane(m, index)?;
            augment(image::DynamicImage::ImageLuma8(g.clone()).to_rgb8())?
        };
        if k == 0 {
            (out.height, out.width) = (t.height, t.width);
        } else if (t.height, t.width) != (out.height, out.width) {
            return Err(DataError::Decode {
                path: dataset.source(),
                index,
                reason: format!(
                    "the {m} image is {}x{}, the sample's first image {}x{}",
                    t.width, t.height, out.width, out.height
                ),
            });
        }
        let keep = m.planes() * t.height * t.width;
        if dropped[k] {
            out.data.resize(out.data.len() + keep, 0.0);
        } else if out.data.is_empty() && t.data.len() == keep {
            out.data = t.data; // all of it (RGB first): moved, not copied
        } else {
            out.data.extend_from_slice(&t.data[..keep]);
        }
    }
    Ok(out)
}

/// Which of the loader's modalities sample `index` loses in `epoch` (each droppable one with
/// the dropout chance, never all: then one is kept at random), from (seed, epoch, index) alone.
fn dropped_modalities(config: &LoaderConfig, epoch: u64, index: usize) -> Vec<bool> {
    let n = config.modalities.len();
    if n < 2 || config.modality_dropout <= 0.0 {
        return vec![false; n];
    }
    let mut rng = StdRng::seed_from_u64(
        config.seed
            ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03)
            ^ (index as u64).wrapping_mul(0x8CB9_2BA7_2F3D_8DD7)
            ^ 0xd209,
    );
    let droppable = |m: &Modality| {
        config.dropout_modalities.is_empty() || config.dropout_modalities.contains(m)
    };
    let mut dropped: Vec<bool> = (config.modalities.iter())
        .map(|m| rng.random_bool(config.modality_dropout as f64) && droppable(m))
        .collect();
    if dropped.iter().all(|&d| d) {
        dropped[rng.random_range(0..n)] = false;
    }
    dropped
}
