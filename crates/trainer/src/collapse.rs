//! Feature-collapse monitor: how much of an embedding matrix's spectrum its top singular values
//! hold. Healthy face embeddings spread over many directions; a collapsing model puts every face
//! in a few, and the share of the top 10 climbs towards 1.

/// `sum(top k singular values) / sum(all singular values)` of the `rows x dim` matrix
/// `embeddings` (row-major). 1 when the matrix has rank <= k; NaN when it is empty or all zero.
pub fn top_singular_share(embeddings: &[f32], dim: usize, k: usize) -> f64 {
    let singular = singular_values(embeddings, dim);
    let total: f64 = singular.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return f64::NAN;
    }
    singular.iter().take(k).sum::<f64>() / total
}

/// Singular values, largest first, from the eigenvalues of the smaller Gram matrix.
pub fn singular_values(embeddings: &[f32], dim: usize) -> Vec<f64> {
    if dim == 0 || embeddings.len() < dim {
        return Vec::new();
    }
    let rows = embeddings.len() / dim;
    let at = |r: usize, c: usize| embeddings[r * dim + c] as f64;
    // G = E^T E (dim x dim) or E E^T (rows x rows): same non-zero eigenvalues.
    let (n, gram) = if dim <= rows {
        let mut g = vec![0.0; dim * dim];
        for r in 0..rows {
            for i in 0..dim {
                let a = at(r, i);
                for j in i..dim {
                    g[i * dim + j] += a * at(r, j);
                }
            }
        }
        (dim, g)
    } else {
        let mut g = vec![0.0; rows * rows];
        for i in 0..rows {
            for j in i..rows {
                g[i * rows + j] = (0..dim).map(|c| at(i, c) * at(j, c)).sum();
            }
        }
        (rows, g)
    };
    let mut g = gram;
    for i in 0..n {
        for j in 0..i {
            g[i * n + j] = g[j * n + i];
        }
    }
    let mut values: Vec<f64> = symmetric_eigenvalues(g, n)
        .into_iter()
        .map(|l| l.max(0.0).sqrt())
        .collect();
    values.sort_by(|a, b| b.total_cmp(a));
    values
}

/// Eigenvalues of a symmetric `n x n` matrix by cyclic Jacobi rotations (accurate to rounding
/// for the small, well-conditioned Gram matrices used here).
fn symmetric_eigenvalues(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    let scale: f64 = a.iter().map(|v| v * v).sum::<f64>().sqrt();
    for _sweep in 0..64 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-14 * scale.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (a[p * n + p], a[q * n + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[i * n + i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A matrix with known singular values: rows of an orthogonal basis scaled by s_i, rotated
    /// by a Householder reflection so it is not diagonal.
    fn with_singular_values(s: &[f64], dim: usize) -> Vec<f32> {
        let v: Vec<f64> = (0..dim).map(|i| ((i * 7 + 3) % 11) as f64 - 5.0).collect();
        let vv: f64 = v.iter().map(|x| x * x).sum();
        let mut m = vec![0.0f32; s.len() * dim];
        for (r, &sr) in s.iter().enumerate() {
            for c in 0..dim {
                // Row r of diag(s) * H, H = I - 2 v v^T / (v^T v).
                let h = (r == c) as u8 as f64 - 2.0 * v[r] * v[c] / vv;
                m[r * dim + c] = (sr * h) as f32;
            }
        }
        m
    }

    #[test]
    fn recovers_known_singular_values_both_ways_round() {
        let s = [9.0, 5.0, 3.0, 2.0, 1.0, 0.5];
        // 6 x 20 (Gram of rows) and its transpose-like case 6 x 4 would lose rank, so use 6 x 6 too.
        for dim in [6, 20] {
            let got = singular_values(&with_singular_values(&s, dim), dim);
            for (g, e) in got.iter().zip(&s) {
                assert!((g - e).abs() < 1e-4, "dim {dim}: {got:?}");
            }
        }
    }

    #[test]
    fn share_is_one_for_collapse_and_small_for_spread_embeddings() {
        // All rows the same direction: rank 1.
        let collapsed: Vec<f32> = (0..50).flat_map(|_| [0.6f32, 0.8, 0.0, 0.0]).collect();
        assert!((top_singular_share(&collapsed, 4, 1) - 1.0).abs() < 1e-9);
        // 40 equal singular values: the top 10 hold a quarter.
        let spread = with_singular_values(&[1.0; 40], 40);
        assert!((top_singular_share(&spread, 40, 10) - 0.25).abs() < 1e-6);
        assert!(top_singular_share(&[0.0; 8], 4, 1).is_nan());
    }
}
