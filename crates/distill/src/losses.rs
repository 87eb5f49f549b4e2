//! The three distillation losses, on any backend (autodiff included): each returns a `[1]`
//! tensor, a mean over the batch, unweighted. Teacher inputs are used as given: callers pass
//! tensors that carry no gradient (a teacher run without autodiff, or a cache).

use arcface_loss::l2_normalize;
use burn::tensor::{activation::log_softmax, backend::Backend, Tensor};

use crate::config::EmbeddingDistance;

/// Student embeddings `[N, D]` towards the teacher's `[N, D]`, both L2-normalised first:
/// `mean(1 - cos)` ([`EmbeddingDistance::Cosine`]) or `mean(|s - t|^2)`
/// ([`EmbeddingDistance::L2`], which equals `2 * (1 - cos)` on unit vectors). Embeddings of
/// different sizes need a projection of the student's first.
pub fn embedding_loss<B: Backend>(
    student: Tensor<B, 2>,
    teacher: Tensor<B, 2>,
    distance: EmbeddingDistance,
) -> Tensor<B, 1> {
    let (s, t) = (l2_normalize(student), l2_normalize(teacher));
    match distance {
        EmbeddingDistance::Cosine => (s * t).sum_dim(1).neg().add_scalar(1.0).mean(),
        EmbeddingDistance::L2 => (s - t).powi_scalar(2).sum_dim(1).mean(),
    }
}

/// `T^2 * mean_i KL(p_t,i || p_s,i)`, where `p = softmax(scale * cos(e, W) / T)` over the
/// teacher's class centres `W` (`[C, D]`) for the teacher's and the student's embeddings.
///
/// Without the margin: the margin is a training-time penalty on the target logit of the network
/// being trained; the teacher's knowledge is its inference-time similarity to every class (the
/// "dark knowledge" in the non-target classes), and putting a margin on one side would pull the
/// student's target probability away from the teacher's. The `T^2` factor keeps the gradient's
/// size independent of the temperature (Hinton et al. 2015).
pub fn logit_loss<B: Backend>(
    student: Tensor<B, 2>,
    teacher: Tensor<B, 2>,
    centres: Tensor<B, 2>,
    scale: f32,
    temperature: f32,
) -> Tensor<B, 1> {
    let w = l2_normalize(centres).transpose();
    let k = f64::from(scale / temperature);
    let log_p_s = log_softmax(l2_normalize(student).matmul(w.clone()).mul_scalar(k), 1);
    let log_p_t = log_softmax(l2_normalize(teacher).matmul(w).mul_scalar(k), 1);
    let p_t = log_p_t.clone().exp();
    (p_t * (log_p_t - log_p_s))
        .sum_dim(1)
        .mean()
        .mul_scalar(f64::from(temperature * temperature))
}

/// Similarity-preserving KD (Tung & Mori, ICCV 2019) on the normalised embeddings: the batch's
/// similarity matrices `G = e e^T` (here cosines), each row L2-normalised, and
/// `|G_s - G_t|_F^2 / N^2`. It transfers how the teacher arranges the batch's faces relative to
/// one another, which needs neither equal embedding sizes nor the teacher's classes.
pub fn relational_loss<B: Backend>(student: Tensor<B, 2>, teacher: Tensor<B, 2>) -> Tensor<B, 1> {
    let gram = |e: Tensor<B, 2>| {
        let e = l2_normalize(e);
        l2_normalize(e.clone().matmul(e.transpose()))
    };
    let [n, _] = student.dims();
    (gram(student) - gram(teacher))
        .powi_scalar(2)
        .sum()
        .div_scalar((n * n) as f64)
}
