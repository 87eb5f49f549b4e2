//! IVF (inverted file) approximate search: the gallery split into `nlist` cells around
//! spherical k-means centroids; a query scores the centroids, then searches only its `nprobe`
//! nearest cells exactly. Reads about `nprobe / nlist` of the gallery; recall against exact
//! search is measured in the tests and by the search bench.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::flat::{normalized, FlatIndex, Precision};
use crate::kernels::{dot_f32, Kernels, Query};
use crate::topk::{Hit, TopK};
use crate::SearchError;

/// How an IVF index is trained and searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IvfConfig {
    /// Cells (k-means centroids); ~sqrt(rows) to 4 * sqrt(rows) is usual.
    pub nlist: usize,
    /// Cells searched per query: more is slower and closer to exact.
    pub nprobe: usize,
    /// k-means iterations.
    pub iterations: usize,
    /// Seed of the k-means initialisation.
    pub seed: u64,
}

impl Default for IvfConfig {
    fn default() -> Self {
        Self {
            nlist: 1024,
            nprobe: 32,
            iterations: 10,
            seed: 0,
        }
    }
}

/// The approximate index.
#[derive(Debug, Clone)]
pub struct IvfIndex {
    dim: usize,
    config: IvfConfig,
    centroids: Vec<f32>,
    cells: Vec<FlatIndex>,
    cell_of: HashMap<i64, usize>,
    kernels: Kernels,
}

impl IvfIndex {
    /// Trains the centroids on `sample` (rows of `dim` values, normalized here); the index
    /// starts empty.
    pub fn train(
        dim: usize,
        precision: Precision,
        sample: &[Vec<f32>],
        config: IvfConfig,
    ) -> Result<Self, SearchError> {
        if config.nlist == 0 || config.nprobe == 0 {
            return Err(SearchError::Config(
                "nlist and nprobe must be at least 1".into(),
            ));
        }
        if sample.len() < config.nlist {
            return Err(SearchError::Config(format!(
                "{} training vectors for {} cells: need at least one per cell",
                sample.len(),
                config.nlist
            )));
        }
        let sample: Vec<Vec<f32>> = sample
            .iter()
            .map(|v| normalized(v, dim))
            .collect::<Result<_, _>>()?;
        let kernels = Kernels::detect();
        let mut rng = StdRng::seed_from_u64(config.seed);
        // Distinct random rows to start (a partial Fisher-Yates shuffle of the indices).
        let mut order: Vec<usize> = (0..sample.len()).collect();
        for i in 0..config.nlist {
            let j = rng.random_range(i..order.len());
            order.swap(i, j);
        }
        let mut centroids: Vec<f32> = order[..config.nlist]
            .iter()
            .flat_map(|&i| sample[i].iter().copied())
            .collect();
        for _ in 0..config.iterations {
            let assignment: Vec<usize> = sample
                .par_iter()
                .map(|v| nearest(kernels, &centroids, dim, v, 1)[0])
                .collect();
            let mut sums = vec![0f64; config.nlist * dim];
            let mut counts = vec![0usize; config.nlist];
            for (v, &c) in sample.iter().zip(&assignment) {
                counts[c] += 1;
                for (s, x) in sums[c * dim..(c + 1) * dim].iter_mut().zip(v) {
                    *s += *x as f64;
                }
            }
            for c in 0..config.nlist {
                let cell = &mut centroids[c * dim..(c + 1) * dim];
                let norm = sums[c * dim..(c + 1) * dim]
                    .iter()
                    .map(|s| s * s)
                    .sum::<f64>()
                    .sqrt();
                if counts[c] == 0 || norm < 1e-12 {
                    // An empty cell restarts at a random row.
                    cell.copy_from_slice(&sample[rng.random_range(0..sample.len())]);
                } else {
                    for (x, s) in cell.iter_mut().zip(&sums[c * dim..(c + 1) * dim]) {
                        *x = (s / norm) as f32;
                    }
                }
            }
        }
        Ok(Self {
            dim,
            config,
            centroids,
            cells: (0..config.nlist)
                .map(|_| FlatIndex::new(dim, precision))
                .collect(),
            cell_of: HashMap::new(),
            kernels,
        })
    }

    /// The settings it was built with.
    pub fn config(&self) -> IvfConfig {
        self.config
    }

    /// Cells searched per query from now on.
    pub fn set_nprobe(&mut self, nprobe: usize) {
        self.config.nprobe = nprobe.clamp(1, self.config.nlist);
    }

    /// Embeddings indexed.
    pub fn len(&self) -> usize {
        self.cell_of.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.cell_of.is_empty()
    }

    /// Adds `embedding` (normalized here) under `id`, in its nearest cell.
    pub fn add(&mut self, id: i64, embedding: &[f32]) -> Result<(), SearchError> {
        let v = normalized(embedding, self.dim)?;
        if self.cell_of.contains_key(&id) {
            return Err(SearchError::DuplicateId(id));
        }
        let cell = nearest(self.kernels, &self.centroids, self.dim, &v, 1)[0];
        self.cells[cell].add(id, &v)?;
        self.cell_of.insert(id, cell);
        Ok(())
    }

    /// Removes `id`; false when it was not indexed.
    pub fn remove(&mut self, id: i64) -> bool {
        match self.cell_of.remove(&id) {
            Some(cell) => self.cells[cell].remove(id),
            None => false,
        }
    }

    /// The best `k` hits in the query's `nprobe` nearest cells, best first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>, SearchError> {
        let q = normalized(query, self.dim)?;
        let probe = nearest(
            self.kernels,
            &self.centroids,
            self.dim,
            &q,
            self.config.nprobe,
        );
        // Prepared once for every probed cell.
        let prepared = [Query::new(&q)];
        let tops: Vec<Vec<Hit>> = probe
            .par_iter()
            .flat_map_iter(|&c| self.cells[c].search_prepared(&prepared, k))
            .collect();
        let mut top = TopK::new(k);
        for hit in tops.into_iter().flatten() {
            top.push(hit);
        }
        Ok(top.into_sorted())
    }

    /// `search` for many queries, in parallel.
    pub fn search_batch<Q: AsRef<[f32]> + Sync>(
        &self,
        queries: &[Q],
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, SearchError> {
        queries
            .par_iter()
            .map(|q| self.search(q.as_ref(), k))
            .collect()
    }
}

/// The `n` centroids with the largest inner product with `v`, best first.
fn nearest(kernels: Kernels, centroids: &[f32], dim: usize, v: &[f32], n: usize) -> Vec<usize> {
    let mut top = TopK::new(n);
    for (c, centroid) in centroids.chunks_exact(dim).enumerate() {
        let score = dot_f32(kernels, v, centroid);
        if score > top.threshold() {
            top.push(Hit {
                id: c as i64,
                score,
            });
        }
    }
    top.into_sorted()
        .into_iter()
        .map(|h| h.id as usize)
        .collect()
}
