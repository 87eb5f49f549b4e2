//! Folding an inference-mode BatchNorm into the convolution (or linear layer) before it:
//! `BN(conv(x)) = gamma * (W x + b - mean) / sqrt(var + eps) + beta`
//! `= (W * s) x + b * s + (beta - mean * s)` with `s = gamma / sqrt(var + eps)` per output channel,
//! so the quantized graph runs one convolution where the float one ran two layers.

/// A BatchNorm's inference statistics, per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormStats<'a> {
    /// Scale, per channel.
    pub gamma: &'a [f32],
    /// Shift, per channel.
    pub beta: &'a [f32],
    /// Running mean, per channel.
    pub mean: &'a [f32],
    /// Running variance, per channel.
    pub var: &'a [f32],
    /// Added to the variance.
    pub eps: f32,
}

/// Why folding was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FoldError {
    /// The BatchNorm's channels are not the layer's outputs.
    #[error("BatchNorm has {got} channels, the layer {expected} outputs")]
    Channels {
        /// The BatchNorm's.
        got: usize,
        /// The layer's.
        expected: usize,
    },
    /// A channel's variance is negative or not finite.
    #[error("negative or non-finite variance in channel {0}")]
    Variance(usize),
}

impl BatchNormStats<'_> {
    /// The per-channel affine the BatchNorm computes in inference, `y = scale * x + shift`
    /// with `scale = gamma / sqrt(var + eps)` and `shift = beta - mean * scale`; refuses
    /// mismatched lengths and negative or non-finite variances.
    pub fn affine(&self) -> Result<(Vec<f32>, Vec<f32>), FoldError> {
        let cout = self.gamma.len();
        for len in [self.beta.len(), self.mean.len(), self.var.len()] {
            if len != cout {
                return Err(FoldError::Channels {
                    got: len,
                    expected: cout,
                });
            }
        }
        let mut scale = Vec::with_capacity(cout);
        let mut shift = Vec::with_capacity(cout);
        for o in 0..cout {
            let var = self.var[o];
            if !(var.is_finite() && var >= 0.0) {
                return Err(FoldError::Variance(o));
            }
            let s = self.gamma[o] / (var + self.eps).sqrt();
            scale.push(s);
            shift.push(self.beta[o] - self.mean[o] * s);
        }
        Ok((scale, shift))
    }
}

/// Folds `bn` into weights `[cout, ...]` (any trailing shape, `weights.len() / cout` per output)
/// and an optional bias; returns the new weights and bias.
pub fn fold_batch_norm(
    weights: &[f32],
    bias: Option<&[f32]>,
    bn: &BatchNormStats<'_>,
) -> Result<(Vec<f32>, Vec<f32>), FoldError> {
    let cout = bn.gamma.len();
    if let Some(bias) = bias.filter(|b| b.len() != cout) {
        return Err(FoldError::Channels {
            got: bias.len(),
            expected: cout,
        });
    }
    if cout == 0 || !weights.len().is_multiple_of(cout) {
        return Err(FoldError::Channels {
            got: cout,
            expected: weights.len(),
        });
    }
    let (scale, shift) = bn.affine()?;
    let per = weights.len() / cout;
    let mut w = weights.to_vec();
    for (row, s) in w.chunks_exact_mut(per).zip(&scale) {
        row.iter_mut().for_each(|v| *v *= s);
    }
    let b = (0..cout)
        .map(|o| bias.map_or(0.0, |b| b[o]) * scale[o] + shift[o])
        .collect();
    Ok((w, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_layer_equals_layer_then_batch_norm() {
        // A 2-output "layer" on 3 inputs: y = W x + b, then BN.
        let w = [0.5, -1.0, 2.0, 1.5, 0.25, -0.75];
        let b = [0.1, -0.2];
        let bn = BatchNormStats {
            gamma: &[1.2, 0.8],
            beta: &[0.05, -0.3],
            mean: &[0.4, -0.1],
            var: &[2.0, 0.5],
            eps: 1e-5,
        };
        let (fw, fb) = fold_batch_norm(&w, Some(&b), &bn).unwrap();
        let x = [0.3f32, -1.1, 0.7];
        for o in 0..2 {
            let y: f32 = (0..3).map(|i| w[o * 3 + i] * x[i]).sum::<f32>() + b[o];
            let reference =
                bn.gamma[o] * (y - bn.mean[o]) / (bn.var[o] + bn.eps).sqrt() + bn.beta[o];
            let folded: f32 = (0..3).map(|i| fw[o * 3 + i] * x[i]).sum::<f32>() + fb[o];
            assert!((reference - folded).abs() < 1e-6, "{reference} vs {folded}");
        }
        let bad = BatchNormStats {
            var: &[2.0, -1.0],
            ..bn.clone()
        };
        assert_eq!(
            fold_batch_norm(&w, None, &bad).unwrap_err(),
            FoldError::Variance(1)
        );
        let short = BatchNormStats { beta: &[0.0], ..bn };
        assert!(matches!(
            fold_batch_norm(&w, None, &short),
            Err(FoldError::Channels { .. })
        ));
    }
}
