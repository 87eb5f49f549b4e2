//! Least-squares similarity transform between point sets (Umeyama 1991, without reflection).

use crate::{
    error::AlignError,
    geometry::{Affine, Point},
};

/// The similarity (rotation, uniform scale, translation; never a reflection) that maps `src`
/// onto `dst` with the least squared error: the matrix skimage's `SimilarityTransform.estimate`
/// returns (Umeyama with `estimate_scale=True`), to within rounding.
///
/// In 2-D the optimum has a closed form. With centred points as complex numbers `s_i`, `d_i`,
/// the map is `d = z s` with `z = sum(conj(s_i) d_i) / sum(|s_i|^2)`; Umeyama's SVD (including
/// its reflection correction and its rank-1 branch for collinear points) reaches the same `z`.
/// Computed in f64 from f32 points.
///
/// Errors: fewer than 2 pairs, unequal lengths, NaN/infinite coordinates, or points that all
/// coincide (in `src`: the scale is undefined; in `dst`: the map would be singular).
pub fn estimate_similarity(src: &[Point], dst: &[Point]) -> Result<Affine, AlignError> {
    let to_f64 = |p: &[Point]| {
        p.iter()
            .map(|q| [q.x as f64, q.y as f64])
            .collect::<Vec<_>>()
    };
    estimate_similarity_f64(&to_f64(src), &to_f64(dst))
}

/// [`estimate_similarity`] on f64 coordinates.
pub fn estimate_similarity_f64(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Result<Affine, AlignError> {
    if src.len() != dst.len() {
        return Err(AlignError::LengthMismatch {
            src: src.len(),
            dst: dst.len(),
        });
    }
    if src.len() < 2 {
        return Err(AlignError::TooFewPoints(src.len()));
    }
    for (which, points) in [("source", src), ("destination", dst)] {
        if let Some((index, p)) = points
            .iter()
            .enumerate()
            .find(|(_, p)| !(p[0].is_finite() && p[1].is_finite()))
        {
            return Err(AlignError::NonFinite {
                which,
                index,
                x: p[0],
                y: p[1],
            });
        }
    }
    let n = src.len() as f64;
    let mean = |p: &[[f64; 2]]| {
        let (sx, sy) = p.iter().fold((0.0, 0.0), |(x, y), q| (x + q[0], y + q[1]));
        [sx / n, sy / n]
    };
    let (ms, md) = (mean(src), mean(dst));
    let (mut spread_src, mut spread_dst, mut re, mut im) = (0.0, 0.0, 0.0, 0.0);
    for (s, d) in src.iter().zip(dst) {
        let (sx, sy) = (s[0] - ms[0], s[1] - ms[1]);
        let (dx, dy) = (d[0] - md[0], d[1] - md[1]);
        spread_src += sx * sx + sy * sy;
        spread_dst += dx * dx + dy * dy;
        re += sx * dx + sy * dy;
        im += sx * dy - sy * dx;
    }
    // "Coincide" relative to the coordinates' magnitude: below this the centred spread is
    // rounding noise of the mean.
    let floor = |m: [f64; 2]| n * (64.0 * f64::EPSILON * m[0].abs().max(m[1].abs())).powi(2);
    if spread_src <= floor(ms) {
        return Err(AlignError::Degenerate("source"));
    }
    if spread_dst <= floor(md) {
        return Err(AlignError::Degenerate("destination"));
    }
    let (a, b) = (re / spread_src, im / spread_src);
    Ok(Affine::new([
        [a, -b, md[0] - (a * ms[0] - b * ms[1])],
        [b, a, md[1] - (b * ms[0] + a * ms[1])],
    ]))
}
