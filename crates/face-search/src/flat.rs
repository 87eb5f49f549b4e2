//! Exact search: every stored row scored against the query, the k best kept.

use std::collections::HashMap;

use half::f16;
use rayon::prelude::*;

use crate::kernels::{
    dot_f16, dot_f32, dot_i8, dot_i8_quad, dot_i8_tiles, dot_u4, dot_u4_quad, quantize,
    quantize_u4, row_sum, Kernels, Query, U4_GROUP,
};
use crate::topk::{Hit, TopK};
use crate::SearchError;

/// How embeddings are stored: f32 (4 bytes a value), f16 (2), int8 with one scale per row (1),
/// or 4-bit codes scanned first and f16 rows to rerank the best candidates exactly (`Sq4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 4 bytes a value.
    #[default]
    F32,
    /// 2 bytes a value.
    F16,
    /// 1 byte a value, one f32 scale per row.
    Int8,
    /// Two-pass search: 4-bit codes (half a byte a value, one scale per row) find
    /// [`FlatIndex::rerank_candidates`] candidates per query, whose f16 rows (kept beside the
    /// codes, 2 bytes a value) score them exactly. A query reads a quarter of int8's bytes.
    Sq4,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "int8" | "i8" => Ok(Self::Int8),
            "sq4" | "int4" => Ok(Self::Sq4),
            _ => Err(format!("unknown precision {s:?} (f32, f16, int8 or sq4)")),
        }
    }
}

#[derive(Debug, Clone)]
enum Rows {
    F32(Vec<f32>),
    F16(Vec<f16>),
    /// Rows padded to a multiple of 64 bytes, each row's scale, and each row's value sum (for
    /// the blocked kernel of batched search).
    Int8(Vec<i8>, Vec<f32>, Vec<i32>),
    /// 4-bit codes (rows of `stride` bytes), each row's scale, and the f16 rows the candidates
    /// are reranked with.
    Sq4(Vec<u8>, Vec<f32>, Vec<f16>),
}

/// Candidates per query the 4-bit pass hands to the exact rerank, at least: recall@1 0.99+ on
/// random queries over a million rows needs the true best among them (docs/performance.md).
const SQ4_CANDIDATES: usize = 64;

/// Rows per matrix product in batched f32/f16 search: a 256 x 512 block (512 KB as f32) and its
/// scores stay in the core's cache.
const GEMM_ROWS: usize = 256;

/// Rows scored per rayon task: 4096 rows of 512 int8 values are 2 MiB, enough to amortise a
/// split, and a million rows still give both threads ~120 tasks each.
const ROWS_PER_TASK: usize = 4096;

/// An exact inner-product index over L2-normalized embeddings (each added vector and each
/// query is normalized, so scores are cosine similarities).
#[derive(Debug, Clone)]
pub struct FlatIndex {
    dim: usize,
    /// Stored row length (int8 rows are padded).
    stride: usize,
    rows: Rows,
    ids: Vec<i64>,
    slot_of: HashMap<i64, usize>,
    kernels: Kernels,
}

impl FlatIndex {
    /// An empty index of `dim`-value embeddings.
    pub fn new(dim: usize, precision: Precision) -> Self {
        let stride = match precision {
            Precision::Int8 => dim.div_ceil(64) * 64,
            Precision::Sq4 => dim.div_ceil(U4_GROUP) * U4_GROUP / 2,
            _ => dim,
        };
        let rows = match precision {
            Precision::F32 => Rows::F32(Vec::new()),
            Precision::F16 => Rows::F16(Vec::new()),
            Precision::Int8 => Rows::Int8(Vec::new(), Vec::new(), Vec::new()),
            Precision::Sq4 => Rows::Sq4(Vec::new(), Vec::new(), Vec::new()),
        };
        Self {
            dim,
            stride,
            rows,
            ids: Vec::new(),
            slot_of: HashMap::new(),
            kernels: Kernels::detect(),
        }
    }

    /// Uses `kernels` instead of the detected best (tests compare them).
    pub fn with_kernels(mut self, kernels: Kernels) -> Result<Self, SearchError> {
        if !kernels.available() {
            return Err(SearchError::Unsupported(kernels));
        }
        self.kernels = kernels;
        Ok(self)
    }

    /// Values per embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// How rows are stored.
    pub fn precision(&self) -> Precision {
        match self.rows {
            Rows::F32(_) => Precision::F32,
            Rows::F16(_) => Precision::F16,
            Rows::Int8(..) => Precision::Int8,
            Rows::Sq4(..) => Precision::Sq4,
        }
    }

    /// Embeddings indexed.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether `id` is indexed.
    pub fn contains(&self, id: i64) -> bool {
        self.slot_of.contains_key(&id)
    }

    /// Bytes of stored embeddings.
    pub fn bytes(&self) -> usize {
        match &self.rows {
            Rows::F32(v) => v.len() * 4,
            Rows::F16(v) => v.len() * 2,
            Rows::Int8(v, s, sums) => v.len() + s.len() * 4 + sums.len() * 4,
            Rows::Sq4(codes, s, exact) => codes.len() + s.len() * 4 + exact.len() * 2,
        }
    }

    /// Room for `rows` more embeddings.
    pub fn reserve(&mut self, rows: usize) {
        self.reserve_rows(rows);
        self.prefer_huge_pages();
    }

    fn reserve_rows(&mut self, rows: usize) {
        match &mut self.rows {
            Rows::F32(v) => v.reserve(rows * self.stride),
            Rows::F16(v) => v.reserve(rows * self.stride),
            Rows::Int8(v, s, sums) => {
                v.reserve(rows * self.stride);
                s.reserve(rows);
                sums.reserve(rows);
            }
            Rows::Sq4(codes, s, exact) => {
                codes.reserve(rows * self.stride);
                s.reserve(rows);
                exact.reserve(rows * self.dim);
            }
        }
        self.ids.reserve(rows);
        self.slot_of.reserve(rows);
    }

    /// Asks for the row buffers on transparent huge pages (Linux leaves them to `madvise` by
    /// default): a scan of a million rows otherwise misses the TLB every 4 KB, which cost a
    /// 4-bit query a fifth of its time (docs/performance.md). A hint; pages already touched
    /// move to huge pages only as the kernel gets to them.
    fn prefer_huge_pages(&self) {
        match &self.rows {
            Rows::F32(v) => advise_huge(v),
            Rows::F16(v) => advise_huge(v),
            Rows::Int8(v, ..) => advise_huge(v),
            Rows::Sq4(codes, _, exact) => {
                advise_huge(codes);
                advise_huge(exact);
            }
        }
    }

    /// Adds `embedding` (normalized here) under `id`.
    pub fn add(&mut self, id: i64, embedding: &[f32]) -> Result<(), SearchError> {
        let v = normalized(embedding, self.dim)?;
        if self.slot_of.contains_key(&id) {
            return Err(SearchError::DuplicateId(id));
        }
        if self.ids.len() == self.ids.capacity() {
            // Grow by half again, and put the new buffers on huge pages before they are written.
            self.reserve(self.ids.len() / 2 + 1);
        }
        match &mut self.rows {
            Rows::F32(rows) => rows.extend_from_slice(&v),
            Rows::F16(rows) => rows.extend(v.iter().map(|&x| f16::from_f32(x))),
            Rows::Int8(rows, scales, sums) => {
                let (q, scale) = quantize(&v);
                rows.extend_from_slice(&q);
                rows.resize(rows.len() + self.stride - self.dim, 0);
                scales.push(scale);
                sums.push(row_sum(&q));
            }
            Rows::Sq4(codes, scales, exact) => {
                let (c, scale) = quantize_u4(&v);
                codes.extend_from_slice(&c);
                scales.push(scale);
                exact.extend(v.iter().map(|&x| f16::from_f32(x)));
            }
        }
        self.slot_of.insert(id, self.ids.len());
        self.ids.push(id);
        Ok(())
    }

    /// Removes `id` (the last row moves into its place); false if it was not there.
    pub fn remove(&mut self, id: i64) -> bool {
        let Some(slot) = self.slot_of.remove(&id) else {
            return false;
        };
        let last = self.ids.len() - 1;
        let s = self.stride;
        match &mut self.rows {
            Rows::F32(rows) => swap_remove_row(rows, slot, last, s),
            Rows::F16(rows) => swap_remove_row(rows, slot, last, s),
            Rows::Int8(rows, scales, sums) => {
                swap_remove_row(rows, slot, last, s);
                scales.swap_remove(slot);
                sums.swap_remove(slot);
            }
            Rows::Sq4(codes, scales, exact) => {
                swap_remove_row(codes, slot, last, s);
                swap_remove_row(exact, slot, last, self.dim);
                scales.swap_remove(slot);
            }
        }
        self.ids.swap_remove(slot);
        if slot < last {
            self.slot_of.insert(self.ids[slot], slot);
        }
        true
    }

    /// The `k` best rows for one query, best first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>, SearchError> {
        Ok(self
            .search_batch(std::slice::from_ref(&query), k)?
            .pop()
            .unwrap_or_default())
    }

    /// The `k` best rows for each query: one pass over the gallery serves the whole batch
    /// (each block of rows is read from memory once and scored against every query while it is
    /// in cache: a matrix product for f32/f16, register tiles for int8), split over rayon's
    /// threads. int8 scores equal [`FlatIndex::search`]'s exactly; f32/f16 ones are summed in
    /// another order and may differ from it in the last bits.
    pub fn search_batch<Q: AsRef<[f32]> + Sync>(
        &self,
        queries: &[Q],
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, SearchError> {
        let queries: Vec<Query> = queries
            .iter()
            .map(|q| normalized(q.as_ref(), self.dim).map(|v| Query::new(&v)))
            .collect::<Result<_, _>>()?;
        Ok(self.search_prepared(&queries, k))
    }

    /// [`FlatIndex::search_batch`] for queries already normalized and prepared (the IVF index
    /// prepares a query once for all the cells it probes).
    pub(crate) fn search_prepared(&self, queries: &[Query], k: usize) -> Vec<Vec<Hit>> {
        if queries.is_empty() {
            return Vec::new();
        }
        // Batches of floats score as matrix products against the queries' transpose.
        let transposed = (queries.len() > 1 && matches!(self.rows, Rows::F32(_) | Rows::F16(_)))
            .then(|| transpose(queries, self.dim));
        let first_pass = match self.rows {
            Rows::Sq4(..) => Self::rerank_candidates(k),
            _ => k,
        };
        let empty = || vec![TopK::new(first_pass); queries.len()];
        let tops = (0..self.len().div_ceil(ROWS_PER_TASK))
            .into_par_iter()
            .fold(empty, |mut tops, task| {
                let first = task * ROWS_PER_TASK;
                let last = (first + ROWS_PER_TASK).min(self.len());
                match &transposed {
                    Some(qt) => self.score_blocks(first..last, qt, &mut tops),
                    None => self.score_rows(first..last, queries, &mut tops),
                }
                tops
            })
            .reduce(empty, |a, b| {
                a.into_iter().zip(b).map(|(a, b)| a.merge(b)).collect()
            });
        match &self.rows {
            Rows::Sq4(_, _, exact) => queries
                .iter()
                .zip(tops)
                .map(|(q, top)| self.rerank(q, top, exact, k))
                .collect(),
            _ => tops.into_iter().map(TopK::into_sorted).collect(),
        }
    }

    /// How many candidates the 4-bit pass of [`Precision::Sq4`] keeps for a top-`k` search.
    pub fn rerank_candidates(k: usize) -> usize {
        (4 * k).max(SQ4_CANDIDATES)
    }

    /// The 4-bit pass's candidates scored exactly on their f16 rows: the best `k`.
    fn rerank(&self, q: &Query, candidates: TopK, exact: &[f16], k: usize) -> Vec<Hit> {
        let mut top = TopK::new(k);
        for hit in candidates.into_sorted() {
            let slot = self.slot_of[&hit.id];
            let row = &exact[slot * self.dim..][..self.dim];
            keep(&mut top, hit.id, dot_f16(self.kernels, &q.f32, row));
        }
        top.into_sorted()
    }

    /// Batched f32/f16 search: blocks of [`GEMM_ROWS`] rows (f16 widened to f32) times the
    /// `dim x queries` transpose, one matrix product per block (FMA micro-kernels), then each
    /// query's column of scores against its bar.
    fn score_blocks(&self, range: std::ops::Range<usize>, qt: &[f32], tops: &mut [TopK]) {
        let (d, nq) = (self.dim, tops.len());
        let mut scores = vec![0f32; GEMM_ROWS * nq];
        let mut widened = Vec::new();
        for first in range.clone().step_by(GEMM_ROWS) {
            let m = GEMM_ROWS.min(range.end - first);
            let block: &[f32] = match &self.rows {
                Rows::F32(rows) => &rows[first * d..(first + m) * d],
                Rows::F16(rows) => {
                    use half::slice::HalfFloatSliceExt;
                    widened.resize(m * d, 0.0);
                    rows[first * d..(first + m) * d].convert_to_f32_slice(&mut widened);
                    &widened
                }
                Rows::Int8(..) | Rows::Sq4(..) => {
                    unreachable!("batches of codes go through score_rows")
                }
            };
            let scores = &mut scores[..m * nq];
            cpu_conv::matmul_rows(block, m, d, qt, nq, scores, false);
            for (slot, row) in (first..first + m).zip(scores.chunks_exact(nq)) {
                for (top, &score) in tops.iter_mut().zip(row) {
                    keep(top, self.ids[slot], score);
                }
            }
        }
    }

    /// One query (or rows of codes): each row against every query.
    fn score_rows(&self, range: std::ops::Range<usize>, queries: &[Query], tops: &mut [TopK]) {
        let (s, kernels) = (self.stride, self.kernels);
        match &self.rows {
            Rows::F32(rows) => {
                for slot in range {
                    let row = &rows[slot * s..][..s];
                    for (q, top) in queries.iter().zip(tops.iter_mut()) {
                        keep(top, self.ids[slot], dot_f32(kernels, &q.f32, row));
                    }
                }
            }
            Rows::F16(rows) => {
                for slot in range {
                    let row = &rows[slot * s..][..s];
                    for (q, top) in queries.iter().zip(tops.iter_mut()) {
                        keep(top, self.ids[slot], dot_f16(kernels, &q.f32, row));
                    }
                }
            }
            Rows::Int8(rows, scales, sums) => {
                let int8 = Int8Rows {
                    ids: &self.ids,
                    rows,
                    scales,
                    sums,
                    stride: s,
                    kernels,
                };
                int8.score(range, queries, tops);
            }
            Rows::Sq4(codes, scales, _) => {
                let row = |slot: usize| &codes[slot * s..][..s];
                for (q, top) in queries.iter().zip(tops.iter_mut()) {
                    let mut offer = |slot: usize, dot: i32| {
                        keep(top, self.ids[slot], dot as f32 * q.scale * scales[slot]);
                    };
                    let quads = range.start..range.start + range.len() / 4 * 4;
                    for first in quads.clone().step_by(4) {
                        let slots = [first, first + 1, first + 2, first + 3];
                        let dots = dot_u4_quad(kernels, q, slots.map(row));
                        for (slot, dot) in slots.into_iter().zip(dots) {
                            offer(slot, dot);
                        }
                    }
                    for slot in quads.end..range.end {
                        offer(slot, dot_u4(kernels, q, row(slot)));
                    }
                }
            }
        }
    }

    /// Ids in storage order.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }
}

/// The queries as a `dim x queries` row-major matrix (column `j` is query `j`).
fn transpose(queries: &[Query], dim: usize) -> Vec<f32> {
    let nq = queries.len();
    let mut qt = vec![0f32; dim * nq];
    for (j, q) in queries.iter().enumerate() {
        for (i, &v) in q.f32.iter().enumerate() {
            qt[i * nq + j] = v;
        }
    }
    qt
}

/// Offers a hit to `top` when it beats the current bar (most scores of a scan do not).
#[inline]
fn keep(top: &mut TopK, id: i64, score: f32) {
    if score > top.threshold() {
        top.push(Hit { id, score });
    }
}

/// The int8 rows of one scan, borrowed.
struct Int8Rows<'a> {
    ids: &'a [i64],
    rows: &'a [i8],
    scales: &'a [f32],
    sums: &'a [i32],
    stride: usize,
    kernels: Kernels,
}

impl Int8Rows<'_> {
    fn row(&self, slot: usize) -> &[i8] {
        &self.rows[slot * self.stride..][..self.stride]
    }

    fn keep(&self, top: &mut TopK, slot: usize, q: &Query, dot: i32) {
        keep(
            top,
            self.ids[slot],
            dot as f32 * q.scale * self.scales[slot],
        );
    }

    /// Batches of four queries or more go through the four-by-four register tile (each row
    /// and query chunk loaded once per sixteen pairs); the rest four queries per row load, then
    /// one by one. Every query still sees the rows in order, so results equal one-by-one search.
    fn score(&self, range: std::ops::Range<usize>, queries: &[Query], tops: &mut [TopK]) {
        let tiled = if queries.len() >= 4 {
            range.start..range.start + range.len() / 4 * 4
        } else {
            range.start..range.start
        };
        let whole = queries.len() / 4 * 4;
        let mut dots = vec![[0i32; 4]; whole];
        for first in tiled.clone().step_by(4) {
            let slots = [first, first + 1, first + 2, first + 3];
            let rows = slots.map(|slot| self.row(slot));
            let sums = slots.map(|slot| self.sums[slot]);
            dot_i8_tiles(self.kernels, &queries[..whole], rows, sums, &mut dots);
            for ((dots, q), top) in dots.iter().zip(queries).zip(tops.iter_mut()) {
                for (&slot, &dot) in slots.iter().zip(dots) {
                    self.keep(top, slot, q, dot);
                }
            }
            for slot in slots {
                for (q, top) in queries[whole..].iter().zip(&mut tops[whole..]) {
                    self.keep(top, slot, q, dot_i8(self.kernels, q, self.row(slot)));
                }
            }
        }
        for slot in tiled.end..range.end {
            self.score_row(slot, queries, tops);
        }
    }

    /// One row against every query, four queries per pass over the row.
    fn score_row(&self, slot: usize, queries: &[Query], tops: &mut [TopK]) {
        let row = self.row(slot);
        let mut quads = queries.chunks_exact(4);
        let mut top_quads = tops.chunks_exact_mut(4);
        for (q, t) in quads.by_ref().zip(top_quads.by_ref()) {
            let dots = dot_i8_quad(self.kernels, [&q[0], &q[1], &q[2], &q[3]], row);
            for ((dot, q), top) in dots.into_iter().zip(q).zip(t) {
                self.keep(top, slot, q, dot);
            }
        }
        for (q, top) in quads.remainder().iter().zip(top_quads.into_remainder()) {
            self.keep(top, slot, q, dot_i8(self.kernels, q, row));
        }
    }
}

/// `madvise(MADV_HUGEPAGE)` over the whole pages of `v`'s allocation, when it is large.
fn advise_huge<T>(v: &Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < 8 << 20 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = v.as_ptr() as usize;
        let (first, end) = (start.div_ceil(PAGE) * PAGE, (start + bytes) / PAGE * PAGE);
        if end > first {
            // SAFETY: the range lies inside `v`'s allocation, which this process owns;
            // MADV_HUGEPAGE changes how pages are backed, never their contents. A failure
            // (a kernel without THP) leaves 4 KB pages, so the result is ignored.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
}

fn swap_remove_row<T: Copy>(rows: &mut Vec<T>, slot: usize, last: usize, stride: usize) {
    if slot != last {
        rows.copy_within(last * stride..(last + 1) * stride, slot * stride);
    }
    rows.truncate(last * stride);
}

/// `v / |v|`, refusing the wrong length and vectors that cannot be normalized.
pub fn normalized(v: &[f32], dim: usize) -> Result<Vec<f32>, SearchError> {
    use face_embed::BadEmbedding;
    face_embed::normalized(v, dim).map_err(|e| match e {
        BadEmbedding::Dimension { got, expected } => SearchError::Dimension { got, expected },
        BadEmbedding::NotFinite => SearchError::BadEmbedding("NaN or infinite value"),
        BadEmbedding::Zero => SearchError::BadEmbedding("zero vector"),
    })
}
