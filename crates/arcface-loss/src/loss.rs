//! Softmax cross-entropy over margin logits, with label smoothing.

use burn::tensor::{activation::log_softmax, backend::Backend, Int, Tensor};

/// Mean softmax cross-entropy of `logits` (`[N, C]`) against `targets` (`[N, 1]` column indices),
/// with the smoothed target `(1 - eps) * onehot + eps / C`.
///
/// Computed as `(1 - eps) * nll + eps * mean_j(-log p_j)`, which is the same sum without building
/// the `[N, C]` target. `log_softmax` subtracts the row maximum, so a huge scale does not overflow.
pub fn smoothed_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 2, Int>,
    epsilon: f64,
) -> Tensor<B, 1> {
    let log_p = log_softmax(logits, 1);
    let nll = log_p.clone().gather(1, targets).neg();
    let per_sample = if epsilon > 0.0 {
        let uniform = log_p.mean_dim(1).neg();
        nll.mul_scalar(1.0 - epsilon) + uniform.mul_scalar(epsilon)
    } else {
        nll
    };
    per_sample.mean()
}
