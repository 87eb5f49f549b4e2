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
}

/// A Burn backbone in inference mode, run in batches.
pub struct BurnEmbedder<B: Backend> {
    backbone: AnyBackbone<B>,
    device: B::Device,
    batch_size: usize,
}

impl<B: Backend> BurnEmbedder<B> {
    pub fn new(backbone: AnyBackbone<B>, device: B::Device) -> Self {
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

impl<B: Backend> Embedder for BurnEmbedder<B> {
    fn embedding_dim(&self) -> usize {
        self.backbone.embedding_dim()
    }

    fn embed(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, EvalError> {
        let dim = self.embedding_dim();
        let mut out = Vec::with_capacity(faces.len());
        for chunk in faces.chunks(self.batch_size) {
            let bytes: Vec<&[u8]> = chunk.iter().map(|f| f.as_raw().as_slice()).collect();
            let x = iresnet::preprocess::faces_to_tensor::<B>(&bytes, &self.device)?;
            let values = self
                .backbone
                .embed(x)
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
        let mut e = embedder.embed(chunk)?;
        if flip {
            let mirrored: Vec<RgbImage> =
                chunk.iter().map(image::imageops::flip_horizontal).collect();
            for (a, b) in e.iter_mut().zip(embedder.embed(&mirrored)?) {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
            }
        }
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
