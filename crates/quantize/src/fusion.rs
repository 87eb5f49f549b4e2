//! Late-fusion models (`iresnet::LateFusion`: one backbone per modality) on the engine: each
//! branch is its own [`Engine`], quantised on its own modality's images; the fusion (concatenation,
//! `Linear` and BatchNorm1d, or learned per-modality weights) runs in f32, a few thousand
//! multiply-adds beside the branches' millions. A missing modality's branch is not run at all.

use crate::engine::{Engine, EngineError};

/// How the branch embeddings are fused, as inference computes it.
#[derive(Debug, Clone, PartialEq)]
pub enum FuseLayer {
    /// `(concat(present embeddings, zeros for missing) . weight + bias) * scale + shift`.
    Concat {
        /// `[inputs, outputs]`, row-major (Burn's `Linear` layout).
        weight: Vec<f32>,
        /// `[outputs]`.
        bias: Vec<f32>,
        /// The BatchNorm1d's inference affine, per output.
        scale: Vec<f32>,
        /// Its shift.
        shift: Vec<f32>,
    },
    /// `sum_i w_i e_i / |e_i|  /  sum_i w_i` over the present branches.
    Weighted {
        /// Each branch's weight (the softmax of its logit).
        weights: Vec<f32>,
    },
}

/// A late-fusion model: one engine per branch and the fusing layer.
#[derive(Debug)]
pub struct FusionEngine {
    /// Each branch's name (its modality) and engine, in input order.
    pub branches: Vec<(String, Engine)>,
    /// The fusing layer.
    pub fuse: FuseLayer,
}

impl FusionEngine {
    /// Embeds a batch: per branch, its faces (112x112, that branch's planes interleaved) or
    /// `None` when the modality is missing for the whole batch. Embeddings are not normalized.
    pub fn embed(&self, inputs: &[Option<&[&[u8]]>]) -> Result<Vec<Vec<f32>>, EngineError> {
        if inputs.len() != self.branches.len() {
            return Err(EngineError::Fusion(format!(
                "{} inputs for {} branches",
                inputs.len(),
                self.branches.len()
            )));
        }
        let mut parts = Vec::with_capacity(inputs.len());
        let mut n = None;
        for ((name, engine), faces) in self.branches.iter().zip(inputs) {
            let part = faces.map(|f| engine.embed(f)).transpose()?;
            if let Some(p) = &part {
                if n.is_some_and(|n| n != p.len()) {
                    return Err(EngineError::Fusion(format!(
                        "branch {name} has {} faces, an earlier one {}",
                        p.len(),
                        n.unwrap_or(0)
                    )));
                }
                n = Some(p.len());
            }
            parts.push((engine.embedding_dim(), part));
        }
        let n = n.ok_or_else(|| EngineError::Fusion("every modality is missing".into()))?;
        Ok((0..n).map(|k| self.fuse_one(&parts, k)).collect())
    }

    /// The fused embedding of face `k`.
    fn fuse_one(&self, parts: &[(usize, Option<Vec<Vec<f32>>>)], k: usize) -> Vec<f32> {
        match &self.fuse {
            FuseLayer::Concat {
                weight,
                bias,
                scale,
                shift,
            } => {
                let mut out = bias.clone();
                let mut row = 0;
                for (dim, part) in parts {
                    if let Some(p) = part {
                        for (j, &x) in p[k].iter().enumerate() {
                            let w = &weight[(row + j) * out.len()..(row + j + 1) * out.len()];
                            out.iter_mut().zip(w).for_each(|(o, w)| *o += x * w);
                        }
                    }
                    row += dim;
                }
                (out.iter().zip(scale).zip(shift))
                    .map(|((v, s), t)| v * s + t)
                    .collect()
            }
            FuseLayer::Weighted { weights } => {
                let dim = parts[0].0;
                let (mut out, mut total) = (vec![0.0f32; dim], 0.0f32);
                for ((_, part), &w) in parts.iter().zip(weights) {
                    if let Some(p) = part {
                        let e = &p[k];
                        let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                        out.iter_mut().zip(e).for_each(|(o, v)| *o += w * v / norm);
                        total += w;
                    }
                }
                out.iter().map(|v| v / total.max(1e-12)).collect()
            }
        }
    }
}

/// Branches are named by their modality (`rgb`, `nir`, `depth`), which picks their image.
impl face_embed::MultimodalEmbedder for FusionEngine {
    fn embedding_dim(&self) -> usize {
        match &self.fuse {
            FuseLayer::Concat { bias, .. } => bias.len(),
            FuseLayer::Weighted { .. } => {
                self.branches.first().map_or(0, |(_, e)| e.embedding_dim())
            }
        }
    }

    fn embed_images(
        &self,
        faces: &[face_embed::FaceImages],
    ) -> Result<Vec<Vec<f32>>, face_embed::EmbedError> {
        fn bytes<'a>(face: &'a face_embed::FaceImages, name: &str) -> Option<&'a [u8]> {
            match name {
                "rgb" => face.rgb.as_ref().map(|i| i.as_raw().as_slice()),
                "nir" => face.nir.as_ref().map(|i| i.as_raw().as_slice()),
                "depth" => face.depth.as_ref().map(|i| i.as_raw().as_slice()),
                _ => None,
            }
        }
        // Faces with the same modalities present run as one batch.
        let mut groups: std::collections::BTreeMap<Vec<bool>, Vec<usize>> = Default::default();
        let inputs: Vec<Vec<Option<&[u8]>>> = (faces.iter())
            .map(|f| self.branches.iter().map(|(n, _)| bytes(f, n)).collect())
            .collect();
        for (k, input) in inputs.iter().enumerate() {
            let present = input.iter().map(Option::is_some).collect();
            groups.entry(present).or_default().push(k);
        }
        let mut out = vec![Vec::new(); faces.len()];
        for (present, members) in groups {
            let columns: Vec<Vec<&[u8]>> = (0..self.branches.len())
                .map(|b| (members.iter()).filter_map(|&k| inputs[k][b]).collect())
                .collect();
            let batch: Vec<Option<&[&[u8]]>> = (columns.iter().zip(&present))
                .map(|(c, &p)| p.then_some(c.as_slice()))
                .collect();
            let embeddings = self
                .embed(&batch)
                .map_err(|e| face_embed::EmbedError::Input(e.to_string()))?;
            for (k, e) in members.into_iter().zip(embeddings) {
                out[k] = e;
            }
        }
        Ok(out)
    }
}
