//! What `eval` scores: anything that turns aligned faces into embeddings.

use burn::tensor::backend::Backend;
use image::RgbImage;
use iresnet::{AnyBackbone, Backbone};

use crate::EvalError;

/// Aligned 112x112 RGB faces in, one embedding each out (not necessarily normalised). Burn
/// backbones on any backend implement it through [`BurnEmbedder`]; the int8 runtime will too.
pub trait Embedder {
    fn embedding_dim(&self) -> usize;
    fn embed(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, EvalError>;

    /// `embed(face) + embed(mirror(face))` per face (the flip test). The default mirrors the
    /// images; an embedder that can mirror its own input (a tensor flip) should say so here.
    fn embed_flip_sum(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, EvalError> {
        let mirrored: Vec<RgbImage> = faces.iter().map(image::imageops::flip_horizontal).collect();
        let mut sum = self.embed(faces)?;
        for (a, b) in sum.iter_mut().zip(self.embed(&mirrored)?) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        Ok(sum)
    }
}

/// A Burn backbone (any [`Backbone`], ours by default) in inference mode, run in batches.
pub struct BurnEmbedder<B: Backend, M = AnyBackbone<B>> {
    backbone: M,
    device: B::Device,
    batch_size: usize,
}

impl<B: Backend, M: Backbone<B>> BurnEmbedder<B, M> {
    pub fn new(backbone: M, device: B::Device) -> Self {
        Self {
            backbone,
            device,
            batch_size: 64,
        }
    }

    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }
}

impl<B: Backend, M: Backbone<B>> Embedder for BurnEmbedder<B, M> {
    fn embedding_dim(&self) -> usize {
        self.backbone.embedding_dim()
    }

    fn embed(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, EvalError> {
        self.run(faces, false)
    }

    fn embed_flip_sum(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, EvalError> {
        self.run(faces, true)
    }
}

impl<B: Backend, M: Backbone<B>> BurnEmbedder<B, M> {
    /// One tensor per batch; the mirror image is a flip of that tensor, not a second conversion.
    fn run(&self, faces: &[RgbImage], flip: bool) -> Result<Vec<Vec<f32>>, EvalError> {
        let dim = self.embedding_dim();
        let mut out = Vec::with_capacity(faces.len());
        for chunk in faces.chunks(self.batch_size) {
            let bytes: Vec<&[u8]> = chunk.iter().map(|f| f.as_raw().as_slice()).collect();
            let x = iresnet::preprocess::faces_to_tensor::<B>(&bytes, &self.device)?;
            let mut e = self.backbone.embed(x.clone());
            if flip {
                e = e + self.backbone.embed(x.flip([3]));
            }
            let values = e
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| EvalError::Model(format!("embeddings: {e:?}")))?;
            out.extend(values.chunks(dim).map(<[f32]>::to_vec));
        }
        Ok(out)
    }
}

/// L2-normalised embeddings of `faces`, with the flip test (`emb(face) + emb(mirror(face))`
/// before normalising) when `flip`; `progress` is told how many faces are done.
pub fn embed_normalised(
    embedder: &dyn Embedder,
    faces: &[RgbImage],
    flip: bool,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Vec<f32>>, EvalError> {
    let mut out = Vec::with_capacity(faces.len());
    for chunk in faces.chunks(256) {
        let mut e = if flip {
            embedder.embed_flip_sum(chunk)?
        } else {
            embedder.embed(chunk)?
        };
        for v in &mut e {
            normalise(v);
        }
        out.extend(e);
        progress(out.len());
    }
    Ok(out)
}

/// In place, L2 (sklearn's `normalize`: a zero vector stays zero).
pub fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
    }
}

/// Cosine similarity of two embeddings in f64 (0 when either is a zero vector): how two
/// embedders' outputs for the same face are compared (e.g. int8 against f32).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
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
    use iresnet::{BackboneConfig, IResNetConfig};

    /// The trait's default: mirror the images and embed them again.
    struct ByImages<'a>(&'a BurnEmbedder<burn::backend::Flex>);

    impl Embedder for ByImages<'_> {
        fn embedding_dim(&self) -> usize {
            self.0.embedding_dim()
        }
        fn embed(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, EvalError> {
            self.0.embed(faces)
        }
    }

    #[test]
    fn the_tensor_flip_equals_embedding_mirrored_images() {
        let device = Default::default();
        let backbone = BackboneConfig::IResNet(
            IResNetConfig::new([1, 1, 1, 1])
                .with_widths([4, 8, 8, 16])
                .with_embedding_dim(16),
        )
        .init::<burn::backend::Flex>(&device)
        .unwrap();
        let embedder = BurnEmbedder::new(backbone, device);
        let faces: Vec<RgbImage> = (0..3u32)
            .map(|k| {
                RgbImage::from_fn(112, 112, |x, y| {
                    image::Rgb([(x * 2 + k) as u8, (y + 3 * x) as u8, (x ^ y) as u8])
                })
            })
            .collect();
        let by_tensor = embedder.embed_flip_sum(&faces).unwrap();
        let by_images = ByImages(&embedder).embed_flip_sum(&faces).unwrap();
        let plain = embedder.embed(&faces).unwrap();
        for (a, b) in by_tensor.iter().zip(&by_images) {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{x} vs {y}");
            }
        }
        // The flip adds a second, different embedding.
        assert_ne!(by_tensor, plain);
    }
}
