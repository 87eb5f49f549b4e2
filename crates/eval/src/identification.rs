//! 1:N identification: a gallery of enrolled faces and probes searched against it.
//!
//! Closed set (every probe's identity enrolled): the rank of the true identity, the CMC curve and
//! rank-1/5/10. Open set (some probes are of people not enrolled): TPIR at FPIR as NIST's FRVT
//! defines them. And MegaFace's question: how rank-1 falls as distractors join the gallery.
//!
//! Scores are inner products of L2-normalized embeddings (cosines). An identity's score for a
//! probe is the best score over its gallery entries; a probe's rank is 1 + the number of other
//! identities scoring strictly higher (ties resolve in the probe's favour).

use std::collections::HashMap;

use serde::Serialize;

/// Inner product.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum()
}

/// Labelled, L2-normalized embeddings.
#[derive(Debug, Clone, Default)]
pub struct Labelled {
    /// One L2-normalized embedding per face.
    pub embeddings: Vec<Vec<f32>>,
    /// The identity of each embedding.
    pub identities: Vec<u64>,
}

impl Labelled {
    /// Adds one face.
    pub fn push(&mut self, embedding: Vec<f32>, identity: u64) {
        self.embeddings.push(embedding);
        self.identities.push(identity);
    }

    /// The number of faces.
    pub fn len(&self) -> usize {
        self.embeddings.len()
    }

    /// Whether there are no faces.
    pub fn is_empty(&self) -> bool {
        self.embeddings.is_empty()
    }
}

/// One probe's search result: the best score of every gallery identity, highest first.
fn identity_scores(gallery: &Labelled, probe: &[f32]) -> Vec<(u64, f64)> {
    let mut best: HashMap<u64, f64> = HashMap::new();
    for (e, &id) in gallery.embeddings.iter().zip(&gallery.identities) {
        let s = dot(e, probe);
        best.entry(id).and_modify(|b| *b = b.max(s)).or_insert(s);
    }
    let mut scores: Vec<(u64, f64)> = best.into_iter().collect();
    scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scores
}

/// Per probe: its true identity's rank in the gallery (None when not enrolled) and its top score.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// The probe's true identity.
    pub identity: u64,
    /// Rank of the true identity among the gallery's (1 = best; None when not enrolled).
    pub rank: Option<usize>,
    /// The gallery's best-scoring identity.
    pub top_identity: Option<u64>,
    /// Its cosine score.
    pub top_score: f64,
    /// The true identity's score (None when not enrolled).
    pub mate_score: Option<f64>,
}

/// Searches every probe against the gallery.
pub fn search(gallery: &Labelled, probes: &Labelled) -> Vec<ProbeResult> {
    probes
        .embeddings
        .iter()
        .zip(&probes.identities)
        .map(|(p, &id)| {
            let scores = identity_scores(gallery, p);
            let mate = scores.iter().find(|(g, _)| *g == id).map(|&(_, s)| s);
            ProbeResult {
                identity: id,
                rank: mate.map(|m| 1 + scores.iter().filter(|(g, s)| *g != id && *s > m).count()),
                top_identity: scores.first().map(|s| s.0),
                top_score: scores.first().map_or(f64::NEG_INFINITY, |s| s.1),
                mate_score: mate,
            }
        })
        .collect()
}

/// Closed-set numbers over the mated probes.
#[derive(Debug, Clone, Serialize)]
pub struct ClosedSet {
    /// Probes whose identity is enrolled.
    pub mated_probes: usize,
    /// Share of mated probes found at rank 1.
    pub rank1: f64,
    /// Within rank 5.
    pub rank5: f64,
    /// Within rank 10.
    pub rank10: f64,
    /// `cmc[k]` = share of mated probes whose identity is within rank `k + 1`.
    pub cmc: Vec<f64>,
}

/// The CMC up to `max_rank` and rank-1/5/10 over the probes whose identity is enrolled.
pub fn closed_set(results: &[ProbeResult], max_rank: usize) -> ClosedSet {
    let ranks: Vec<usize> = results.iter().filter_map(|r| r.rank).collect();
    let n = ranks.len().max(1) as f64;
    let cmc: Vec<f64> = (1..=max_rank.max(10))
        .map(|k| ranks.iter().filter(|&&r| r <= k).count() as f64 / n)
        .collect();
    ClosedSet {
        mated_probes: ranks.len(),
        rank1: cmc[0],
        rank5: cmc[4],
        rank10: cmc[9],
        cmc: cmc[..max_rank.max(1).min(cmc.len())].to_vec(),
    }
}

/// Open-set identification at one false-positive identification rate.
#[derive(Debug, Clone, Serialize)]
pub struct OpenSetPoint {
    /// The false-positive identification rate the threshold is set for (non-mated probes scoring above it).
    pub fpir: f64,
    /// Share of mated probes found at rank 1 with a score above the threshold.
    pub tpir: f64,
    /// Scores strictly above this are reported as matches.
    pub threshold: f64,
}

/// TPIR at each target FPIR. The threshold is the `(floor(fpir * N) + 1)`-th highest top score of
/// the N non-mated probes, so at most `fpir * N` of them score above it (strictly); TPIR counts mated
/// probes whose true identity ranks first and scores above it. `None` without non-mated probes.
pub fn open_set(results: &[ProbeResult], fpirs: &[f64]) -> Option<Vec<OpenSetPoint>> {
    let mut nonmated: Vec<f64> = results
        .iter()
        .filter(|r| r.rank.is_none())
        .map(|r| r.top_score)
        .collect();
    if nonmated.is_empty() {
        return None;
    }
    nonmated.sort_by(|a, b| b.total_cmp(a));
    let mated: Vec<&ProbeResult> = results.iter().filter(|r| r.rank.is_some()).collect();
    Some(
        fpirs
            .iter()
            .map(|&f| {
                let k = ((f * nonmated.len() as f64).floor() as usize).min(nonmated.len() - 1);
                let threshold = nonmated[k];
                let hits = mated
                    .iter()
                    .filter(|r| r.rank == Some(1) && r.mate_score.is_some_and(|s| s > threshold))
                    .count();
                OpenSetPoint {
                    fpir: f,
                    tpir: hits as f64 / mated.len().max(1) as f64,
                    threshold,
                }
            })
            .collect(),
    )
}

/// Rank-1 as the gallery grows: `gallery` plus the first `m` distractors, for each `m`.
pub fn rank1_with_distractors(
    gallery: &Labelled,
    probes: &Labelled,
    distractors: &Labelled,
    sizes: &[usize],
) -> Vec<(usize, f64)> {
    // Each probe's mate score and its best score among distractors added so far: one pass over the
    // distractors, reading off the running maximum at every size.
    let base = search(gallery, probes);
    let mut sorted: Vec<usize> = sizes
        .iter()
        .copied()
        .filter(|&m| m <= distractors.len())
        .collect();
    sorted.sort_unstable();
    let mut best_distractor = vec![f64::NEG_INFINITY; probes.len()];
    let mut out = Vec::new();
    let mut added = 0;
    for m in sorted {
        for d in &distractors.embeddings[added..m] {
            for (b, p) in best_distractor.iter_mut().zip(&probes.embeddings) {
                *b = b.max(dot(d, p));
            }
        }
        added = m;
        let mated = base.iter().filter(|r| r.rank.is_some()).count();
        let hits = base
            .iter()
            .zip(&best_distractor)
            .filter(|(r, &b)| r.rank == Some(1) && r.mate_score.is_some_and(|s| s >= b))
            .count();
        out.push((m, hits as f64 / mated.max(1) as f64));
    }
    out
}
