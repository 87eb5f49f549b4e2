//! The bilinear taps of eight source positions at once (x86-64, AVX2): floors, the inside test,
//! the weights and 32-bit gathers of the four neighbours. Shared by the affine warp here and
//! face-augment's rotation, which blend and round them each their own way (OpenCV's and
//! torchvision's), byte for byte against their own references.

use std::arch::x86_64::*;

/// A packed RGB image (3 bytes per pixel, rows without padding) as the gathers read it.
#[derive(Clone, Copy)]
pub struct RgbSource<'a> {
    data: &'a [u8],
    width: usize,
    height: usize,
}

impl<'a> RgbSource<'a> {
    /// `None` where the gathers cannot serve: `data` is not `width x height x 3` bytes, its byte
    /// offsets overflow i32 lanes, or it is too small for a 4-byte load at its last tap. The
    /// caller's pixel-by-pixel path takes those images.
    pub fn new(data: &'a [u8], width: usize, height: usize) -> Option<Self> {
        let stride = width.checked_mul(3)?;
        let fits = data.len() == stride.checked_mul(height)?
            && data.len() <= i32::MAX as usize - 8
            && data.len() >= stride + 8;
        fits.then_some(Self {
            data,
            width,
            height,
        })
    }
}

/// Eight pixels' four taps, in the order OpenCV and torchvision sum them (nw, ne, sw, se):
/// weights `(1-a)(1-b), a(1-b), (1-a)b, ab` for fractions (a, b), and each tap's 4 bytes (R, G, B
/// in the lane's low three bytes).
pub struct Taps8 {
    /// Each tap's weight, per pixel.
    pub weights: [__m256; 4],
    /// Each tap's bytes, per pixel.
    pub taps: [__m256i; 4],
}

/// The taps of source positions `(sx, sy)`, with the scalar loops' f32 operations in their
/// order (floor as truncation minus one for negative non-integers, fraction, weights); `None`
/// when any of the eight has a tap outside the image, or past the last 4-byte load, or a
/// non-finite position (it converts to `i32::MIN` and fails the first test).
///
/// # Safety
/// AVX2 must be present.
#[inline]
#[target_feature(enable = "avx2")]
pub unsafe fn bilinear_taps8(src: RgbSource<'_>, sx: __m256, sy: __m256) -> Option<Taps8> {
    let stride = src.width * 3;
    let one = _mm256_set1_ps(1.0);
    let floor = |p: __m256| {
        let trunc = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(p));
        _mm256_sub_ps(
            trunc,
            _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(trunc, p), one),
        )
    };
    let (fx, fy) = (floor(sx), floor(sy));
    let (ix, iy) = (_mm256_cvttps_epi32(fx), _mm256_cvttps_epi32(fy));
    let offset = _mm256_add_epi32(
        _mm256_mullo_epi32(iy, _mm256_set1_epi32(stride as i32)),
        _mm256_mullo_epi32(ix, _mm256_set1_epi32(3)),
    );
    // Inside: 0 <= ix <= width - 2, 0 <= iy <= height - 2, and the last tap's 4-byte load in
    // bounds (offset + stride + 3 + 4 <= len).
    let zero = _mm256_setzero_si256();
    let last_block = _mm256_set1_epi32((src.data.len() - stride - 7) as i32);
    let outside = _mm256_or_si256(
        _mm256_or_si256(_mm256_cmpgt_epi32(zero, ix), _mm256_cmpgt_epi32(zero, iy)),
        _mm256_or_si256(
            _mm256_or_si256(
                _mm256_cmpgt_epi32(ix, _mm256_set1_epi32(src.width as i32 - 2)),
                _mm256_cmpgt_epi32(iy, _mm256_set1_epi32(src.height as i32 - 2)),
            ),
            _mm256_cmpgt_epi32(offset, last_block),
        ),
    );
    if _mm256_testz_si256(outside, outside) == 0 {
        return None;
    }
    let (a, b) = (_mm256_sub_ps(sx, fx), _mm256_sub_ps(sy, fy));
    let (na, nb) = (_mm256_sub_ps(one, a), _mm256_sub_ps(one, b));
    let weights = [
        _mm256_mul_ps(na, nb),
        _mm256_mul_ps(a, nb),
        _mm256_mul_ps(na, b),
        _mm256_mul_ps(a, b),
    ];
    let base = src.data.as_ptr().cast::<i32>();
    let at = |extra: usize| _mm256_add_epi32(offset, _mm256_set1_epi32(extra as i32));
    // SAFETY: every offset passed the bounds test: offset + stride + 7 <= len, and `new`
    // checked that every offset fits an i32 lane.
    let taps = unsafe {
        [
            _mm256_i32gather_epi32::<1>(base, offset),
            _mm256_i32gather_epi32::<1>(base, at(3)),
            _mm256_i32gather_epi32::<1>(base, at(stride)),
            _mm256_i32gather_epi32::<1>(base, at(stride + 3)),
        ]
    };
    Some(Taps8 { weights, taps })
}

impl Taps8 {
    /// Channel `c` (0 red, 1 green, 2 blue) of each tap, as f32.
    ///
    /// # Safety
    /// AVX2 must be present.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn channel(&self, c: i32) -> [__m256; 4] {
        let (shift, byte) = (_mm256_set1_epi32(8 * c), _mm256_set1_epi32(0xFF));
        self.taps
            .map(|t| _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(t, shift), byte)))
    }
}

/// Writes eight RGB pixels (24 bytes of `out`) from their channels' values, each in 0..=255.
///
/// # Safety
/// AVX2 must be present.
#[inline]
#[target_feature(enable = "avx2")]
pub unsafe fn store_rgb8(channels: [__m256i; 3], out: &mut [u8]) {
    let packed = _mm256_or_si256(
        _mm256_or_si256(channels[0], _mm256_slli_epi32::<8>(channels[1])),
        _mm256_slli_epi32::<16>(channels[2]),
    );
    let mut words = [0u32; 8];
    // SAFETY: 8 u32 are 32 bytes.
    unsafe { _mm256_storeu_si256(words.as_mut_ptr().cast(), packed) };
    for (px, word) in out[..24].chunks_exact_mut(3).zip(words) {
        px.copy_from_slice(&word.to_le_bytes()[..3]);
    }
}
