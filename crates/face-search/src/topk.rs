//! The k best (highest-scoring) hits seen so far.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One search result: the gallery entry's id and its inner product with the query.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hit {
    /// The face's id.
    pub id: i64,
    /// Cosine similarity to the query.
    pub score: f32,
}

/// Heap order: the worst hit on top. Lower score is worse; among equal scores the larger id
/// is worse, so results do not depend on the order rows were scanned in.
#[derive(Debug, Clone, Copy)]
struct Worst(Hit);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        // Greater = worse = nearer the top of the max-heap.
        other
            .0
            .score
            .total_cmp(&self.0.score)
            .then(self.0.id.cmp(&other.0.id))
    }
}

/// Collects the `k` best hits.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
    /// [`TopK::threshold`], kept current by `push`: scans compare every score with it, and
    /// almost none get in.
    bar: f32,
}

impl TopK {
    /// Keeps the best `k`.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
            bar: f32::NEG_INFINITY,
        }
    }

    /// The score a new hit must beat once the collector is full (`-inf` before).
    #[inline]
    pub fn threshold(&self) -> f32 {
        self.bar
    }

    /// Offers a hit; it stays if it is among the best `k`.
    #[inline]
    pub fn push(&mut self, hit: Hit) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Worst(hit));
        } else if let Some(mut top) = self.heap.peek_mut() {
            if Worst(hit) < *top {
                *top = Worst(hit);
            }
        }
        if self.heap.len() == self.k {
            self.bar = self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.0.score);
        }
    }

    /// The best `k` of both.
    pub fn merge(mut self, other: TopK) -> TopK {
        for w in other.heap {
            self.push(w.0);
        }
        self
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<Hit> {
        let mut v: Vec<Worst> = self.heap.into_vec();
        v.sort();
        v.into_iter().map(|w| w.0).collect()
    }
}
