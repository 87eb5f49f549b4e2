//! `C[m][n] = sum_k A[m][k] * B[k][n]` with `A` unsigned 8-bit (activations), `B` signed 8-bit
//! (weights) and `C` 32-bit, wrapping like the hardware's integer adds (which is exact for any
//! realistic `k`: 255 * 128 * k stays below 2^31 up to k = 65,000).
//!
//! `B` is packed once per layer: columns in blocks of [`NR`] = 16 (one AVX-512 register of i32),
//! and within a block, for every group of four `k`, the four bytes of each column side by side,
//! the layout `vpdpbusd` multiplies directly (four u8 x i8 products summed into each i32 lane).
//! `A` rows are read four bytes at a time, so their stride is `k` rounded up to 4, zero-padded.
//!
//! Three kernels over the same packing, bit-exact with each other (integer sums do not depend on
//! their order): AVX-512 VNNI (`vpdpbusd`, 4 rows x 16 columns per step), AVX2 (bytes widened to
//! i16 and `vpmaddwd`, exact where `vpmaddubsw` would saturate), and portable scalar code.

use rayon::prelude::*;

/// Columns per packed block.
pub const NR: usize = 16;

/// Why a GEMM call was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GemmError {
    /// `A` is shorter than its rows need.
    #[error("A has {got} bytes, {rows} rows of stride {stride} need {need}")]
    ShortA {
        /// Bytes given.
        got: usize,
        /// Rows.
        rows: usize,
        /// Bytes from one row to the next.
        stride: usize,
        /// Bytes needed.
        need: usize,
    },
    /// `C` is shorter than the product.
    #[error("C has {got} values, {rows} x {cols} needed")]
    ShortC {
        /// Values given.
        got: usize,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },
    /// A kernel this CPU cannot run.
    #[error("the {0:?} kernel needs CPU features this machine lacks")]
    Unsupported(Kernel),
}

/// `B` (`k x n`, signed 8-bit) in the kernels' layout, with its column sums (for the
/// activations' zero point: `sum_k (a - z) b = sum_k a b - z * colsum`).
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeights {
    k: usize,
    n: usize,
    groups: usize,
    blocks: usize,
    data: Vec<i8>,
    column_sums: Vec<i32>,
}

impl PackedWeights {
    /// Packs row-major `b` (`b[k * n + j]` is row k, column j).
    pub fn pack(b: &[i8], k: usize, n: usize) -> Self {
        assert_eq!(b.len(), k * n, "B must be k x n");
        let groups = k.div_ceil(4);
        let blocks = n.div_ceil(NR);
        let mut data = vec![0i8; blocks * groups * NR * 4];
        for block in 0..blocks {
            for g in 0..groups {
                for lane in 0..NR {
                    let col = block * NR + lane;
                    if col >= n {
                        continue;
                    }
                    for t in 0..4 {
                        let row = 4 * g + t;
                        if row < k {
                            data[((block * groups + g) * NR + lane) * 4 + t] = b[row * n + col];
                        }
                    }
                }
            }
        }
        let column_sums = (0..n)
            .map(|j| (0..k).map(|r| b[r * n + j] as i32).sum())
            .collect();
        Self {
            k,
            n,
            groups,
            blocks,
            data,
            column_sums,
        }
    }

    /// The inner dimension.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The stride of `A`'s rows: `k` rounded up to a multiple of 4.
    pub fn lda(&self) -> usize {
        4 * self.groups
    }

    /// Each column's sum (for the zero-point correction).
    pub fn column_sums(&self) -> &[i32] {
        &self.column_sums
    }

    /// Block `b`'s bytes: `groups` x 16 columns x 4.
    fn block(&self, b: usize) -> &[i8] {
        let len = self.groups * NR * 4;
        &self.data[b * len..(b + 1) * len]
    }
}

/// Copies `m` rows of `k` bytes into rows of stride `lda` (zero padding), the layout the GEMM reads.
pub fn pad_rows(a: &[u8], m: usize, k: usize, lda: usize) -> Vec<u8> {
    let mut out = vec![0u8; m * lda];
    for r in 0..m {
        out[r * lda..r * lda + k].copy_from_slice(&a[r * k..(r + 1) * k]);
    }
    out
}

/// Which inner loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust, any CPU.
    Scalar,
    /// AVX2 (`vpmaddwd`).
    Avx2,
    /// AVX-512 VNNI (`vpdpbusd`).
    Avx512Vnni,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        [Kernel::Avx512Vnni, Kernel::Avx2]
            .into_iter()
            .find(|k| k.available())
            .unwrap_or(Kernel::Scalar)
    }

    /// Whether this CPU runs it.
    pub fn available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// Rows per parallel task: enough work to amortise a rayon split.
const ROWS_PER_TASK: usize = 32;

/// `c[r * n + j] = sum_k a[r * lda + k] * B[k][j]` for `m` rows, `lda = weights.lda()`, the padding
/// bytes of each `a` row zero. Rows are split over rayon's threads.
pub fn gemm_u8i8(
    a: &[u8],
    m: usize,
    weights: &PackedWeights,
    c: &mut [i32],
    kernel: Kernel,
) -> Result<(), GemmError> {
    let (lda, n) = (weights.lda(), weights.n);
    if a.len() < m * lda {
        return Err(GemmError::ShortA {
            got: a.len(),
            rows: m,
            stride: lda,
            need: m * lda,
        });
    }
    if c.len() < m * n {
        return Err(GemmError::ShortC {
            got: c.len(),
            rows: m,
            cols: n,
        });
    }
    if !kernel.available() {
        return Err(GemmError::Unsupported(kernel));
    }
    if n == 0 || m == 0 {
        return Ok(());
    }
    let c = &mut c[..m * n];
    if m <= ROWS_PER_TASK {
        rows_unchecked(a, m, weights, c, kernel);
    } else {
        c.par_chunks_mut(ROWS_PER_TASK * n)
            .enumerate()
            .for_each(|(task, c_rows)| {
                let first = task * ROWS_PER_TASK;
                let rows = c_rows.len() / n;
                let a_rows = &a[first * lda..(first + rows) * lda];
                rows_unchecked(a_rows, rows, weights, c_rows, kernel)
            });
    }
    Ok(())
}

/// One thread's share: `rows` rows of `a` (stride `lda`) into `c` (`rows x n`). The caller has
/// checked the lengths and that `kernel` is available (the convolution's tiles call this
/// directly, each with its own slice of rows).
pub(crate) fn rows_unchecked(
    a: &[u8],
    rows: usize,
    weights: &PackedWeights,
    c: &mut [i32],
    kernel: Kernel,
) {
    debug_assert!(a.len() >= rows * weights.lda() && c.len() >= rows * weights.n);
    debug_assert!(kernel.available());
    match kernel {
        Kernel::Scalar => scalar(a, rows, weights, c),
        // SAFETY: the caller checked `kernel.available()`.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { x86::avx2(a, rows, weights, c) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni => unsafe { x86::vnni(a, rows, weights, c) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("not available"),
    }
}

/// The reference: plain loops over the packed layout.
fn scalar(a: &[u8], m: usize, w: &PackedWeights, c: &mut [i32]) {
    let (lda, n) = (w.lda(), w.n);
    for block in 0..w.blocks {
        let bb = w.block(block);
        let cols = NR.min(n - block * NR);
        for r in 0..m {
            let row = &a[r * lda..(r + 1) * lda];
            let mut acc = [0i32; NR];
            for g in 0..w.groups {
                let ab = &row[4 * g..4 * g + 4];
                let bg = &bb[g * NR * 4..(g + 1) * NR * 4];
                for (lane, acc) in acc.iter_mut().enumerate() {
                    let mut s = 0i32;
                    for t in 0..4 {
                        s = s.wrapping_add(ab[t] as i32 * bg[lane * 4 + t] as i32);
                    }
                    *acc = acc.wrapping_add(s);
                }
            }
            c[r * n + block * NR..r * n + block * NR + cols].copy_from_slice(&acc[..cols]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{PackedWeights, NR};
    use std::arch::x86_64::*;

    /// Stores the first `cols` lanes of 16 accumulated i32.
    fn store(c: &mut [i32], acc: &[i32; NR], cols: usize) {
        c[..cols].copy_from_slice(&acc[..cols]);
    }

    /// Four bytes of an `A` row as one i32 (broadcast to every lane).
    #[inline(always)]
    fn quad(row: &[u8], g: usize) -> i32 {
        i32::from_le_bytes([row[4 * g], row[4 * g + 1], row[4 * g + 2], row[4 * g + 3]])
    }

    /// AVX-512 VNNI: `vpdpbusd` multiplies the 4 u8 of each lane of the broadcast `A` quad by the
    /// 4 i8 of the same lane of `B` and adds the sum to the i32 accumulator. Column blocks go four
    /// at a time (then one at a time), so a step of 4 rows x 64 columns keeps 16 accumulators in
    /// registers and each loaded `B` vector and broadcast `A` quad serves four products.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn vnni(a: &[u8], m: usize, w: &PackedWeights, c: &mut [i32]) {
        let mut block = 0;
        while block + 4 <= w.blocks {
            // SAFETY: same CPU features as this function.
            unsafe { vnni_blocks::<4>(a, m, w, c, block) };
            block += 4;
        }
        while block < w.blocks {
            // SAFETY: as above.
            unsafe { vnni_blocks::<1>(a, m, w, c, block) };
            block += 1;
        }
    }

    /// Column blocks `first..first + NB` for every row: 4 rows at a time, then one at a time.
    #[inline(always)]
    unsafe fn vnni_blocks<const NB: usize>(
        a: &[u8],
        m: usize,
        w: &PackedWeights,
        c: &mut [i32],
        first: usize,
    ) {
        let (lda, n, groups) = (w.lda(), w.n, w.groups);
        let bb: [&[i8]; NB] = std::array::from_fn(|j| w.block(first + j));
        let cols: [usize; NB] = std::array::from_fn(|j| NR.min(n - (first + j) * NR));
        let mut r = 0;
        while r < m {
            let rows = if r + 4 <= m { 4 } else { 1 };
            let mut acc = [[_mm512_setzero_si512(); NB]; 4];
            for g in 0..groups {
                // SAFETY: every block holds `groups * 64` bytes; this reads the 64 of group g.
                let b: [__m512i; NB] = std::array::from_fn(|j| unsafe {
                    _mm512_loadu_si512(bb[j].as_ptr().add(g * 64).cast())
                });
                for (i, acc) in acc.iter_mut().enumerate().take(rows) {
                    let q = _mm512_set1_epi32(quad(&a[(r + i) * lda..][..lda], g));
                    for j in 0..NB {
                        acc[j] = _mm512_dpbusd_epi32(acc[j], q, b[j]);
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate().take(rows) {
                for j in 0..NB {
                    spill(acc[j], &mut c[(r + i) * n + (first + j) * NR..], cols[j]);
                }
            }
            r += rows;
        }
    }

    /// Writes the first `cols` lanes of an accumulator.
    #[target_feature(enable = "avx512f")]
    fn spill(acc: __m512i, c: &mut [i32], cols: usize) {
        let mut out = [0i32; NR];
        // SAFETY: `out` is 16 i32 = 64 bytes.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), acc) };
        store(c, &out, cols);
    }

    /// AVX2: each group's 64 bytes of `B` widened to i16 (4 columns x 4 k per register) and
    /// multiplied by the `A` quad widened the same way with `vpmaddwd` (exact i16 products summed
    /// in pairs into i32); every column keeps two partial sums until the end of `k`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn avx2(a: &[u8], m: usize, w: &PackedWeights, c: &mut [i32]) {
        let (lda, n) = (w.lda(), w.n);
        for block in 0..w.blocks {
            let bb = w.block(block);
            let cols = NR.min(n - block * NR);
            for r in 0..m {
                let row = &a[r * lda..(r + 1) * lda];
                // acc[j]: columns 4j..4j+4, two partial sums each.
                let mut acc = [_mm256_setzero_si256(); 4];
                for g in 0..w.groups {
                    let q = quad(row, g);
                    // [a0 a1 a2 a3] as i16, repeated for the 4 columns of a register.
                    let a16 = _mm256_cvtepu8_epi16(_mm_set1_epi32(q));
                    for (j, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: 16 bytes of group g, columns 4j..4j+4, inside `bb`.
                        let b8 = unsafe {
                            _mm_loadu_si128(bb.as_ptr().add(g * 64 + 16 * j) as *const __m128i)
                        };
                        let b16 = _mm256_cvtepi8_epi16(b8);
                        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(a16, b16));
                    }
                }
                let mut out = [0i32; NR];
                for (j, acc) in acc.iter().enumerate() {
                    let mut pairs = [0i32; 8];
                    // SAFETY: `pairs` is 8 i32 = 32 bytes.
                    unsafe { _mm256_storeu_si256(pairs.as_mut_ptr() as *mut __m256i, *acc) };
                    for col in 0..4 {
                        out[4 * j + col] = pairs[2 * col].wrapping_add(pairs[2 * col + 1]);
                    }
                }
                store(&mut c[r * n + block * NR..], &out, cols);
            }
        }
    }
}
