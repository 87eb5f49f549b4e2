//! What turns aligned faces into embeddings, and what is done with embeddings everywhere, in a
//! crate without Burn, so an int8 runtime, a search service or a user's own model can share it:
//! the [`Embedder`] trait, L2 normalisation ([`normalize`], [`normalized`]), [`cosine`], and
//! insightface's input scaling ([`input_value`]); and for models that see a face with more than
//! one camera, [`FaceImages`] and the [`MultimodalEmbedder`] trait.

use image::{GrayImage, RgbImage};

/// Why faces could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The faces were not what the model takes (size, channels).
    #[error("{0}")]
    Input(String),
    /// The model failed.
    #[error("model: {0}")]
    Model(String),
}

/// Aligned 112x112 RGB faces in, one embedding each out (not necessarily normalized). Burn
/// backbones (`eval::BurnEmbedder`), the int8 engine (`quantize::Engine`) and any user's model
/// implement it; evaluation, the service and the CLI take any of them.
pub trait Embedder {
    /// The size of every embedding.
    fn embedding_dim(&self) -> usize;
    /// One embedding per face, in order.
    fn embed(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError>;

    /// `embed(face) + embed(mirror(face))` per face (the flip test). The default mirrors the
    /// images; an embedder that can mirror its own input (a tensor flip) should say so here.
    fn embed_flip_sum(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mirrored: Vec<RgbImage> = faces.iter().map(image::imageops::flip_horizontal).collect();
        let mut sum = self.embed(faces)?;
        for (a, b) in sum.iter_mut().zip(self.embed(&mirrored)?) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        Ok(sum)
    }
}

/// The images of one face taken at the same moment by a colour camera and, where the device has
/// them, a near-infrared camera and a depth sensor (aligned 112x112 each; depth: nearer is
/// brighter, 0 = no reading). A camera the device lacks is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaceImages {
    /// The colour image.
    pub rgb: Option<RgbImage>,
    /// The near-infrared image.
    pub nir: Option<GrayImage>,
    /// The depth map.
    pub depth: Option<GrayImage>,
}

/// Faces seen by several cameras in, one embedding each out: multimodal fusion models
/// (`eval::MultimodalBurnEmbedder`, `quantize::FusionEngine`). A modality a face lacks is left
/// out the way the model was trained to do without it.
pub trait MultimodalEmbedder {
    /// The size of every embedding.
    fn embedding_dim(&self) -> usize;
    /// One embedding per face, in order.
    fn embed_images(&self, faces: &[FaceImages]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// A boxed embedder (what loaders return) is an embedder, so it plugs into generic code.
impl<E: Embedder + ?Sized> Embedder for Box<E> {
    fn embedding_dim(&self) -> usize {
        (**self).embedding_dim()
    }
    fn embed(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError> {
        (**self).embed(faces)
    }
    fn embed_flip_sum(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError> {
        (**self).embed_flip_sum(faces)
    }
}

/// L2-normalized embeddings of `faces`, with the flip test (`emb(face) + emb(mirror(face))`
/// before normalising) when `flip`; `progress` is told how many faces are done.
pub fn embed_normalized(
    embedder: &dyn Embedder,
    faces: &[RgbImage],
    flip: bool,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let mut out = Vec::with_capacity(faces.len());
    for chunk in faces.chunks(256) {
        let mut e = if flip {
            embedder.embed_flip_sum(chunk)?
        } else {
            embedder.embed(chunk)?
        };
        for v in &mut e {
            normalize(v);
        }
        out.extend(e);
        progress(out.len());
    }
    Ok(out)
}

/// insightface's input scaling of one 8-bit channel value: `(x - 127.5) / 127.5`.
pub fn input_value(pixel: u8) -> f32 {
    (pixel as f32 - 127.5) / 127.5
}

/// The dot product: the cosine of two L2-normalised embeddings, without recomputing norms.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The L2 norm, accumulated in f64.
pub fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

/// In place, L2 (sklearn's `normalize`: a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let n = norm(v);
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
    }
}

/// Why an embedding cannot be normalized for comparison.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadEmbedding {
    /// The vector has another size than the model's.
    #[error("embedding of size {got}, expected {expected}")]
    Dimension {
        /// Its size.
        got: usize,
        /// The model's.
        expected: usize,
    },
    /// A component is NaN or infinite.
    #[error("NaN or infinite value")]
    NotFinite,
    /// Every component is zero: no direction to compare.
    #[error("zero vector")]
    Zero,
}

/// A checked, L2-normalized copy of `v` (size `dim`, finite, not zero): what is stored and
/// searched.
pub fn normalized(v: &[f32], dim: usize) -> Result<Vec<f32>, BadEmbedding> {
    if v.len() != dim {
        return Err(BadEmbedding::Dimension {
            got: v.len(),
            expected: dim,
        });
    }
    if !v.iter().all(|x| x.is_finite()) {
        return Err(BadEmbedding::NotFinite);
    }
    let n = norm(v);
    if n < 1e-12 {
        return Err(BadEmbedding::Zero);
    }
    Ok(v.iter().map(|x| (*x as f64 / n) as f32).collect())
}

/// Cosine similarity of two embeddings in f64 (0 when either is a zero vector): how two
/// embedders' outputs for the same face are compared (e.g. int8 against f32).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norms = norm(a) * norm(b);
    if norms > 0.0 {
        dot / norms
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_parallel_orthogonal_and_zero_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert!((cosine(&[1.0, 0.0], &[-3.0, 0.0]) + 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 5.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn normalising_checks_what_it_is_given() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut zero = vec![0.0; 3];
        normalize(&mut zero);
        assert_eq!(zero, vec![0.0; 3]);
        assert_eq!(normalized(&[3.0, 4.0], 2).unwrap(), vec![0.6, 0.8]);
        assert_eq!(
            normalized(&[1.0], 2),
            Err(BadEmbedding::Dimension {
                got: 1,
                expected: 2
            })
        );
        assert_eq!(
            normalized(&[f32::NAN, 1.0], 2),
            Err(BadEmbedding::NotFinite)
        );
        assert_eq!(normalized(&[0.0, 0.0], 2), Err(BadEmbedding::Zero));
        assert_eq!(input_value(0), -1.0);
        assert_eq!(input_value(255), 1.0);
    }
}
