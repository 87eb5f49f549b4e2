//! The per-value tail of every convolution: scale, bias, PReLU and (for u8 outputs)
//! requantisation, written as straight loops over a row of output channels so they vectorise,
//! and compiled a second time with AVX2 where the CPU has it. A scalar version with per-value
//! indexing measured ~8 ns per value, more than the int8 GEMM itself on 1x1 layers.

/// One row's per-channel constants: `y = scale[o] * v + bias[o]`, then PReLU `alpha[o]`.
#[derive(Clone, Copy)]
pub(crate) struct Affine<'a> {
    pub scale: &'a [f32],
    pub bias: &'a [f32],
    pub alpha: Option<&'a [f32]>,
}

/// int8 accumulators to u8: `clamp(prelu(scale * (acc - correction) + bias) + offset)`, with
/// the output scale already folded into `scale` and `bias` (PReLU commutes with a positive
/// scale) and `offset = zero + 0.5` (round half up).
pub(crate) fn requantise_rows(
    acc: &[i32],
    correction: &[i32],
    f: Affine<'_>,
    offset: f32,
    out: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        return unsafe { requantise_avx2(acc, correction, f, offset, out) };
    }
    requantise_body(acc, correction, f, offset, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn requantise_avx2(
    acc: &[i32],
    correction: &[i32],
    f: Affine<'_>,
    offset: f32,
    out: &mut [u8],
) {
    requantise_body(acc, correction, f, offset, out)
}

#[inline(always)]
fn requantise_body(acc: &[i32], correction: &[i32], f: Affine<'_>, offset: f32, out: &mut [u8]) {
    let cout = f.scale.len();
    for (acc, out) in acc.chunks_exact(cout).zip(out.chunks_exact_mut(cout)) {
        let values = acc.iter().zip(correction).zip(f.scale).zip(f.bias);
        match f.alpha {
            Some(alpha) => {
                for ((((&a, &c), &s), &b), (q, &al)) in values.zip(out.iter_mut().zip(alpha)) {
                    let y = s * a.wrapping_sub(c) as f32 + b;
                    let y = if y < 0.0 { y * al } else { y };
                    *q = to_u8(y + offset);
                }
            }
            None => {
                for ((((&a, &c), &s), &b), q) in values.zip(out.iter_mut()) {
                    *q = to_u8(s * a.wrapping_sub(c) as f32 + b + offset);
                }
            }
        }
    }
}

/// int8 accumulators to real values: `prelu(scale * (acc - correction) + bias)`.
pub(crate) fn dequantise_rows(acc: &[i32], correction: &[i32], f: Affine<'_>, out: &mut [f32]) {
    let cout = f.scale.len();
    for (acc, out) in acc.chunks_exact(cout).zip(out.chunks_exact_mut(cout)) {
        for (((&a, &c), (&s, &b)), y) in acc
            .iter()
            .zip(correction)
            .zip(f.scale.iter().zip(f.bias))
            .zip(out.iter_mut())
        {
            *y = s * a.wrapping_sub(c) as f32 + b;
        }
        if let Some(alpha) = f.alpha {
            prelu_in_place(out, alpha);
        }
    }
}

/// f32 rows in place: `y = prelu(y + bias)`; with `quantize = Some((inv, offset))` also
/// writes `clamp(y * inv + offset)` to `out`.
pub(crate) fn finish_float_rows(
    y: &mut [f32],
    bias: &[f32],
    alpha: Option<&[f32]>,
    quantize: Option<(f32, f32, &mut [u8])>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        return unsafe { finish_float_avx2(y, bias, alpha, quantize) };
    }
    finish_float_body(y, bias, alpha, quantize)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn finish_float_avx2(
    y: &mut [f32],
    bias: &[f32],
    alpha: Option<&[f32]>,
    quantize: Option<(f32, f32, &mut [u8])>,
) {
    finish_float_body(y, bias, alpha, quantize)
}

#[inline(always)]
fn finish_float_body(
    y: &mut [f32],
    bias: &[f32],
    alpha: Option<&[f32]>,
    mut quantize: Option<(f32, f32, &mut [u8])>,
) {
    let cout = bias.len();
    for (r, row) in y.chunks_exact_mut(cout).enumerate() {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
        }
        if let Some(alpha) = alpha {
            prelu_in_place(row, alpha);
        }
        if let Some((inv, offset, out)) = quantize.as_mut() {
            for (q, &v) in out[r * cout..(r + 1) * cout].iter_mut().zip(row.iter()) {
                *q = to_u8(v * *inv + *offset);
            }
        }
    }
}

/// `v` clamped to `0..=255` and truncated (NaN gives 0). `as u8` alone saturates value by value
/// in scalar code, which kept these loops from vectorising (measured: the 1x1 layers' epilogue
/// cost more than their GEMM); clamping first makes the conversion a plain vector truncation.
#[inline(always)]
pub(crate) fn to_u8(v: f32) -> u8 {
    // `max` returns the number when the other operand is NaN, so the result is in 0..=255
    // (`clamp` would keep the NaN).
    #[allow(clippy::manual_clamp)]
    let v = v.max(0.0).min(255.0);
    // SAFETY: `v` is finite and within i32's range.
    unsafe { v.to_int_unchecked::<i32>() as u8 }
}

#[inline(always)]
fn prelu_in_place(row: &mut [f32], alpha: &[f32]) {
    for (v, &a) in row.iter_mut().zip(alpha) {
        *v = if *v < 0.0 { *v * a } else { *v };
    }
}
