//! Inner products of one query against gallery rows stored as f32, f16 or int8, with the fastest
//! instructions this CPU has (chosen once, at run time) and portable code elsewhere.
//!
//! A single query over a million rows reads the whole gallery once: the scan is memory-bound, so
//! the compact formats are the fast ones. int8 rows are multiplied by an int8 copy of the query
//! with integer instructions (AVX-512 VNNI `vpdpbusd`, or AVX2 `vpmaddubsw` on the sign-split
//! operands), exact and equal to the scalar sum; the f32 and f16 kernels use FMA (F16C widens f16)
//! and differ from the scalar order of summation only by rounding.

/// Which inner loops run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// Portable Rust, any CPU.
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX2 for floats, AVX-512 VNNI for int8.
    Avx512Vnni,
}

impl Kernels {
    /// The fastest set this CPU runs.
    pub fn detect() -> Self {
        [Kernels::Avx512Vnni, Kernels::Avx2]
            .into_iter()
            .find(|k| k.available())
            .unwrap_or(Kernels::Scalar)
    }

    /// Whether this CPU runs them.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            match self {
                Kernels::Scalar => true,
                Kernels::Avx2 => avx2,
                Kernels::Avx512Vnni => avx2 && has!("avx512f") && has!("avx512vnni"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Kernels::Scalar
        }
    }
}

/// A query in every form the kernels take.
#[derive(Debug, Clone)]
pub struct Query {
    /// The query as given.
    pub f32: Vec<f32>,
    /// Symmetric int8 copy (`f32 ~ scale * i8`), values in -127..=127, zero-padded to a
    /// multiple of 64.
    pub i8: Vec<i8>,
    /// The int8 copy's scale.
    pub scale: f32,
    /// The VNNI form, made once per query instead of once per row: `|i8|`, and per 64 values
    /// a bit mask of the negative ones.
    magnitude: Vec<u8>,
    negative: Vec<u64>,
    /// `sum i8`: the 4-bit codes carry an offset of 8, taken off as `8 * i8_sum`.
    i8_sum: i32,
    /// The blocked VNNI form: `i8 + 128` as u8 (`vpdpbusd` takes one unsigned operand; the
    /// row's sum times 128 is subtracted afterwards).
    offset: Vec<u8>,
}

impl Query {
    /// Every form of `v`.
    pub fn new(v: &[f32]) -> Self {
        let (i8, scale) = quantize(v);
        Self::with_int8(v.to_vec(), i8, scale)
    }

    /// A query given as int8 values (-127..=127) and their scale; `f32` is their real value.
    pub fn from_quantized(i8: Vec<i8>, scale: f32) -> Self {
        let f32 = i8.iter().map(|&q| q as f32 * scale).collect();
        Self::with_int8(f32, i8, scale)
    }

    fn with_int8(f32: Vec<f32>, mut i8: Vec<i8>, scale: f32) -> Self {
        i8.resize(i8.len().div_ceil(64) * 64, 0);
        let magnitude = i8.iter().map(|x| x.unsigned_abs()).collect();
        let negative = i8
            .chunks(64)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u64, |m, (j, &x)| m | (((x < 0) as u64) << j))
            })
            .collect();
        let offset = i8.iter().map(|&x| (x as i16 + 128) as u8).collect();
        Self {
            f32,
            i8_sum: row_sum(&i8),
            i8,
            scale,
            magnitude,
            negative,
            offset,
        }
    }
}

/// Symmetric per-vector int8: `v ~ scale * q`, `q` in -127..=127 (0 scale for a zero vector).
pub fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (vec![0; v.len()], 0.0);
    }
    let inv = 127.0 / max;
    let q = v
        .iter()
        .map(|x| (x * inv).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, max / 127.0)
}

/// Values per group of 4-bit codes: a group is 64 bytes, value `b` in byte `b`'s low nibble and
/// value `64 + b` in its high nibble, so unpacking takes a mask and a shift, no shuffle.
pub const U4_GROUP: usize = 128;

/// 4-bit codes of `v`: `v ~ scale * (code - 8)`, codes in 1..=15 (symmetric, like
/// [`quantize`]), padded with 8 (zero) to a multiple of [`U4_GROUP`] values; half a byte each.
pub fn quantize_u4(v: &[f32]) -> (Vec<u8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let groups = v.len().div_ceil(U4_GROUP);
    let mut codes = vec![0x88u8; groups * U4_GROUP / 2];
    if max == 0.0 || !max.is_finite() {
        return (codes, 0.0);
    }
    let inv = 7.0 / max;
    for (i, x) in v.iter().enumerate() {
        let code = ((x * inv).round().clamp(-7.0, 7.0) as i8 + 8) as u8;
        let (group, at) = (i / U4_GROUP, i % U4_GROUP);
        let byte = &mut codes[group * U4_GROUP / 2 + at % 64];
        *byte = if at < 64 {
            (*byte & 0xF0) | code
        } else {
            (*byte & 0x0F) | (code << 4)
        };
    }
    (codes, max / 7.0)
}

/// `sum q.i8[i] * (code[i] - 8)` over a row of 4-bit codes ([`quantize_u4`]), exact in i32.
pub fn dot_u4(kernels: Kernels, q: &Query, codes: &[u8]) -> i32 {
    dot_u4_many(kernels, q, [codes])[0]
}

/// [`dot_u4`] of one query with four rows: the query is loaded once per group for all four.
pub fn dot_u4_quad(kernels: Kernels, q: &Query, rows: [&[u8]; 4]) -> [i32; 4] {
    dot_u4_many(kernels, q, rows)
}

fn dot_u4_many<const N: usize>(kernels: Kernels, q: &Query, rows: [&[u8]; N]) -> [i32; N] {
    #[cfg(target_arch = "x86_64")]
    if runnable(kernels) == Kernels::Avx512Vnni
        && rows.iter().all(|r| {
            r.len() == rows[0].len() && r.len().is_multiple_of(64) && q.i8.len() >= 2 * r.len()
        })
    {
        // SAFETY: the CPU features are present; the kernel reads whole groups of each row and
        // twice as many query values, which the condition guarantees (the values past the
        // codes are the query's zero padding, so `i8_sum` covers exactly the paired ones).
        return unsafe { x86::dot_u4_vnni(q, rows) };
    }
    let _ = kernels;
    let value = |i: usize| q.i8.get(i).map_or(0, |&v| v as i32);
    rows.map(|codes| {
        codes
            .chunks(U4_GROUP / 2)
            .enumerate()
            .map(|(g, bytes)| {
                let base = g * U4_GROUP;
                bytes
                    .iter()
                    .enumerate()
                    .map(|(b, &c)| {
                        value(base + b) * ((c & 0x0F) as i32 - 8)
                            + value(base + 64 + b) * ((c >> 4) as i32 - 8)
                    })
                    .sum::<i32>()
            })
            .sum()
    })
}

/// `kernels` if this CPU runs them, else the portable code (every entry point checks: a
/// `Kernels` value is only a request).
#[inline]
fn runnable(kernels: Kernels) -> Kernels {
    if kernels.available() {
        kernels
    } else {
        Kernels::Scalar
    }
}

/// Dot product with an f32 row.
pub fn dot_f32(kernels: Kernels, q: &[f32], row: &[f32]) -> f32 {
    debug_assert_eq!(q.len(), row.len());
    #[cfg(target_arch = "x86_64")]
    if runnable(kernels) != Kernels::Scalar {
        // SAFETY: AVX2, FMA and F16C are present (checked by `runnable`).
        return unsafe { x86::dot_f32(q, row) };
    }
    let _ = kernels;
    q.iter().zip(row).map(|(a, b)| a * b).sum()
}

/// Dot product with an f16 row.
pub fn dot_f16(kernels: Kernels, q: &[f32], row: &[half::f16]) -> f32 {
    debug_assert_eq!(q.len(), row.len());
    #[cfg(target_arch = "x86_64")]
    if runnable(kernels) != Kernels::Scalar {
        // SAFETY: as above.
        return unsafe { x86::dot_f16(q, row) };
    }
    let _ = kernels;
    q.iter().zip(row).map(|(a, b)| a * b.to_f32()).sum()
}

/// `sum q.i8[i] * row[i]`, exact in i32; `row` padded like the query's int8 copy.
pub fn dot_i8(kernels: Kernels, q: &Query, row: &[i8]) -> i32 {
    dot_i8_many(kernels, [q], row)[0]
}

/// [`dot_i8`] of four queries against one row: the row is read once for all four.
pub fn dot_i8_quad(kernels: Kernels, q: [&Query; 4], row: &[i8]) -> [i32; 4] {
    dot_i8_many(kernels, q, row)
}

/// The int8 dot products of every query in `q` (a multiple of four of them) with four rows:
/// `out[j][k]` is query `j` with row `k`. On VNNI, four-by-four register tiles that read each row
/// and query chunk once for sixteen pairs. `sums` are the rows' value sums ([`row_sum`]), which
/// the VNNI form needs.
pub fn dot_i8_tiles(
    kernels: Kernels,
    q: &[Query],
    rows: [&[i8]; 4],
    sums: [i32; 4],
    out: &mut [[i32; 4]],
) {
    assert!(q.len().is_multiple_of(4) && out.len() == q.len());
    #[cfg(target_arch = "x86_64")]
    if runnable(kernels) == Kernels::Avx512Vnni {
        // SAFETY: the CPU features are present (checked by `runnable`); the kernel reads only
        // the common length of the queries and the rows, and writes `out`, one per query.
        return unsafe { x86::dot_i8_tiles_vnni(q, rows, sums, out) };
    }
    for (q, out) in q.iter().zip(out) {
        *out = rows.map(|row| dot_i8_many(kernels, [q], row)[0]);
    }
}

/// `sum row[i]`: what the blocked VNNI kernel subtracts 128 times.
pub fn row_sum(row: &[i8]) -> i32 {
    row.iter().map(|&v| v as i32).sum()
}

fn dot_i8_many<const N: usize>(kernels: Kernels, q: [&Query; N], row: &[i8]) -> [i32; N] {
    debug_assert!(q.iter().all(|q| q.i8.len() == row.len()));
    #[cfg(target_arch = "x86_64")]
    match runnable(kernels) {
        // SAFETY: the CPU features are present (checked by `runnable`); the kernels read only
        // the common length of the query and the row.
        Kernels::Avx512Vnni => return unsafe { x86::dot_i8_vnni(q, row) },
        Kernels::Avx2 => return q.map(|q| unsafe { x86::dot_i8_avx2(&q.i8, row) }),
        Kernels::Scalar => {}
    }
    let _ = kernels;
    q.map(|q| {
        q.i8.iter()
            .zip(row)
            .map(|(&a, &b)| a as i32 * b as i32)
            .sum()
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    fn sum8(v: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(_mm256_castps256_ps128(v), hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// `sum q[i] * row[i]` with four FMA accumulators of 8 lanes; `load` reads 8 row values
    /// as f32 from a pointer, `one` converts a single value for the tail.
    #[inline(always)]
    unsafe fn fma_dot<T: Copy>(
        q: &[f32],
        row: &[T],
        load: impl Fn(*const T) -> __m256,
        one: impl Fn(T) -> f32,
    ) -> f32 {
        let n = q.len().min(row.len());
        // SAFETY (whole function): the caller enables AVX2 and FMA; every load reads
        // i + 8j .. i + 8j + 8 <= n values of both slices.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let a = _mm256_loadu_ps(q.as_ptr().add(i + 8 * j));
                    *acc = _mm256_fmadd_ps(a, load(row.as_ptr().add(i + 8 * j)), *acc);
                }
                i += 32;
            }
            let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut s = sum8(v);
            for t in i..n {
                s += q[t] * one(row[t]);
            }
            s
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_f32(q: &[f32], row: &[f32]) -> f32 {
        // SAFETY: AVX2 and FMA are enabled here; `load` reads 8 values where `fma_dot` says.
        unsafe { fma_dot(q, row, |p| _mm256_loadu_ps(p), |v| v) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_f16(q: &[f32], row: &[half::f16]) -> f32 {
        // SAFETY: as above; 8 f16 are 16 bytes.
        unsafe {
            fma_dot(
                q,
                row,
                |p| _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
                half::f16::to_f32,
            )
        }
    }

    /// `vpdpbusd` multiplies unsigned by signed bytes: each query goes in as `|q|` and the row's
    /// bytes take the query's signs (a masked subtraction from zero), exact since |q| <= 127.
    /// The row is loaded once per 64 bytes for all `N` queries.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn dot_i8_vnni<const N: usize>(
        q: [&super::Query; N],
        row: &[i8],
    ) -> [i32; N] {
        let n = q
            .iter()
            .map(|q| q.magnitude.len())
            .fold(row.len(), usize::min);
        let zero = _mm512_setzero_si512();
        let mut acc = [zero; N];
        let mut i = 0;
        while i + 64 <= n {
            // SAFETY: i + 64 <= n <= the row's and every query's length.
            let r = unsafe { _mm512_loadu_si512(row.as_ptr().add(i).cast()) };
            for (acc, q) in acc.iter_mut().zip(q) {
                let signed = _mm512_mask_sub_epi8(r, q.negative[i / 64], zero, r);
                // SAFETY: as above.
                let m = unsafe { _mm512_loadu_si512(q.magnitude.as_ptr().add(i).cast()) };
                *acc = _mm512_dpbusd_epi32(*acc, m, signed);
            }
            i += 64;
        }
        let mut out = acc.map(|a| _mm512_reduce_add_epi32(a));
        for (s, q) in out.iter_mut().zip(q) {
            *s += q.i8[i..n]
                .iter()
                .zip(&row[i..n])
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum::<i32>();
        }
        out
    }

    /// Sixteen i32 vectors to their sixteen lane sums, in order: halves added, then three
    /// levels of `vphaddd` and a cross-lane add per eight.
    #[target_feature(enable = "avx512f,avx2")]
    fn lane_sums16(v: &[__m512i; 16]) -> [i32; 16] {
        let mut h = [_mm256_setzero_si256(); 16];
        for (h, v) in h.iter_mut().zip(v) {
            *h = _mm256_add_epi32(_mm512_castsi512_si256(*v), _mm512_extracti64x4_epi64(*v, 1));
        }
        let mut out = [0i32; 16];
        for (half, out) in h.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
            let ab = _mm256_hadd_epi32(half[0], half[1]);
            let cd = _mm256_hadd_epi32(half[2], half[3]);
            let ef = _mm256_hadd_epi32(half[4], half[5]);
            let gh = _mm256_hadd_epi32(half[6], half[7]);
            let abcd = _mm256_hadd_epi32(ab, cd);
            let efgh = _mm256_hadd_epi32(ef, gh);
            let sums = _mm256_add_epi32(
                _mm256_permute2x128_si256(abcd, efgh, 0x20),
                _mm256_permute2x128_si256(abcd, efgh, 0x31),
            );
            // SAFETY: 8 i32 are 32 bytes.
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), sums) };
        }
        out
    }

    /// Four rows by four queries at a time: per 64 bytes, 4 row loads, 4 query loads and 16
    /// `vpdpbusd` of `q + 128` (unsigned) by the row (signed); then `128 * sum(row)` comes off,
    /// exact. One call covers every query, so its setup is paid once per four rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
    pub(super) unsafe fn dot_i8_tiles_vnni(
        q: &[super::Query],
        rows: [&[i8]; 4],
        sums: [i32; 4],
        out: &mut [[i32; 4]],
    ) {
        let n = q
            .iter()
            .map(|q| q.offset.len())
            .chain(rows.iter().map(|r| r.len()))
            .min()
            .unwrap_or(0);
        let whole = n / 64 * 64;
        // The part of each row sum the offset multiplied, and the tail it did not reach.
        let mut head = sums;
        for (h, row) in head.iter_mut().zip(&rows) {
            *h -= super::row_sum(&row[whole..n]);
        }
        for (q, out) in q.chunks_exact(4).zip(out.chunks_exact_mut(4)) {
            let mut acc = [_mm512_setzero_si512(); 16];
            let mut i = 0;
            while i < whole {
                let mut r = [_mm512_setzero_si512(); 4];
                for (r, row) in r.iter_mut().zip(&rows) {
                    // SAFETY: i + 64 <= whole <= every row's length.
                    *r = unsafe { _mm512_loadu_si512(row.as_ptr().add(i).cast()) };
                }
                for (j, q) in q.iter().enumerate() {
                    // SAFETY: i + 64 <= whole <= every query's length.
                    let m = unsafe { _mm512_loadu_si512(q.offset.as_ptr().add(i).cast()) };
                    for (k, r) in r.iter().enumerate() {
                        acc[4 * k + j] = _mm512_dpbusd_epi32(acc[4 * k + j], m, *r);
                    }
                }
                i += 64;
            }
            let lanes = lane_sums16(&acc);
            for (j, (out, q)) in out.iter_mut().zip(q).enumerate() {
                for (k, (o, row)) in out.iter_mut().zip(&rows).enumerate() {
                    let tail: i32 = q.i8[whole..n]
                        .iter()
                        .zip(&row[whole..n])
                        .map(|(&a, &b)| a as i32 * b as i32)
                        .sum();
                    *o = lanes[4 * k + j] - 128 * head[k] + tail;
                }
            }
        }
    }

    /// Per 64 code bytes (128 values): the low nibbles against the group's first 64 query
    /// values and the high nibbles against the next 64, `vpdpbusd` of the codes (unsigned,
    /// 0..15) by the query (signed); the codes' offset of 8 comes off as `8 * sum(q)`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn dot_u4_vnni<const N: usize>(
        q: &super::Query,
        rows: [&[u8]; N],
    ) -> [i32; N] {
        let nibble = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_si512(); N];
        for g in 0..rows[0].len() / 64 {
            // SAFETY: 128 (g + 1) <= 2 rows[0].len() <= the query's length (the caller checks).
            let (q0, q1) = unsafe {
                (
                    _mm512_loadu_si512(q.i8.as_ptr().add(128 * g).cast()),
                    _mm512_loadu_si512(q.i8.as_ptr().add(128 * g + 64).cast()),
                )
            };
            for (acc, row) in acc.iter_mut().zip(&rows) {
                // SAFETY: 64 (g + 1) <= every row's length (all equal, checked by the caller).
                let c = unsafe { _mm512_loadu_si512(row.as_ptr().add(64 * g).cast()) };
                let lo = _mm512_and_si512(c, nibble);
                let hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), nibble);
                *acc = _mm512_dpbusd_epi32(*acc, lo, q0);
                *acc = _mm512_dpbusd_epi32(*acc, hi, q1);
            }
        }
        acc.map(|a| _mm512_reduce_add_epi32(a) - 8 * q.i8_sum)
    }

    /// `vpmaddubsw(|q|, sign(row, q))` (pairs of products, at most 2 * 127 * 127 < 2^15: no
    /// saturation), then `vpmaddwd` by ones into i32.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot_i8_avx2(q: &[i8], row: &[i8]) -> i32 {
        let n = q.len().min(row.len());
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_si256();
        let mut i = 0;
        while i + 32 <= n {
            // SAFETY: i + 32 <= n for both slices.
            let (a, b) = unsafe {
                (
                    _mm256_loadu_si256(q.as_ptr().add(i).cast()),
                    _mm256_loadu_si256(row.as_ptr().add(i).cast()),
                )
            };
            let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(b, a));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
            i += 32;
        }
        let mut lanes = [0i32; 8];
        // SAFETY: 8 i32 = 32 bytes.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
        let mut s: i32 = lanes.iter().sum();
        for t in i..n {
            s += q[t] as i32 * row[t] as i32;
        }
        s
    }
}
