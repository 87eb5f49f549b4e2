//! Burn backbones as [`Embedder`]s (the trait and the vector helpers are `face_embed`'s).

use burn::tensor::backend::Backend;
use image::RgbImage;
use iresnet::{AnyBackbone, Backbone};

use face_data::{total_planes, FaceSample, Modality};
use face_embed::{EmbedError, Embedder, FaceImages, MultimodalEmbedder};

/// A Burn backbone (any [`Backbone`], ours by default) in inference mode, run in batches.
pub struct BurnEmbedder<B: Backend, M = AnyBackbone<B>> {
    backbone: M,
    device: B::Device,
    batch_size: usize,
}

impl<B: Backend, M: Backbone<B>> BurnEmbedder<B, M> {
    /// Embeds with `backbone` on `device`, 64 faces per forward pass.
    pub fn new(backbone: M, device: B::Device) -> Self {
        Self {
            backbone,
            device,
            batch_size: 64,
        }
    }

    /// Faces per forward pass (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }
}

impl<B: Backend, M: Backbone<B>> Embedder for BurnEmbedder<B, M> {
    fn embedding_dim(&self) -> usize {
        self.backbone.embedding_dim()
    }

    fn embed(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.run(faces, false)
    }

    fn embed_flip_sum(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.run(faces, true)
    }
}

impl<B: Backend, M: Backbone<B>> BurnEmbedder<B, M> {
    /// One tensor per batch; the mirror image is a flip of that tensor, not a second conversion.
    fn run(&self, faces: &[RgbImage], flip: bool) -> Result<Vec<Vec<f32>>, EmbedError> {
        let dim = self.embedding_dim();
        let mut out = Vec::with_capacity(faces.len());
        for chunk in faces.chunks(self.batch_size) {
            let bytes: Vec<&[u8]> = chunk.iter().map(|f| f.as_raw().as_slice()).collect();
            let x = iresnet::preprocess::faces_to_tensor::<B>(&bytes, &self.device)
                .map_err(|e| EmbedError::Input(e.to_string()))?;
            let mut e = self.backbone.embed(x.clone());
            if flip {
                e = e + self.backbone.embed(x.flip([3]));
            }
            let values = e
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| EmbedError::Model(format!("embeddings: {e:?}")))?;
            out.extend(values.chunks(dim).map(<[f32]>::to_vec));
        }
        Ok(out)
    }
}

/// A multimodal Burn backbone (early or late fusion, or one modality alone) reading the planes
/// of `modalities` stacked in order, in inference mode. A modality a face lacks is fed as zeros,
/// what modality dropout trained the model with.
pub struct MultimodalBurnEmbedder<B: Backend, M> {
    backbone: M,
    modalities: Vec<Modality>,
    device: B::Device,
}

impl<B: Backend, M: Backbone<B>> MultimodalBurnEmbedder<B, M> {
    /// Embeds with `backbone`, whose input is the planes of `modalities` in that order.
    pub fn new(
        backbone: M,
        modalities: &[Modality],
        device: B::Device,
    ) -> Result<Self, EmbedError> {
        let planes = total_planes(modalities);
        if backbone.input_channels() != planes {
            return Err(EmbedError::Input(format!(
                "the model reads {} planes, {modalities:?} give {planes}",
                backbone.input_channels()
            )));
        }
        Ok(Self {
            backbone,
            modalities: modalities.to_vec(),
            device,
        })
    }
}

impl<B: Backend, M: Backbone<B>> MultimodalEmbedder for MultimodalBurnEmbedder<B, M> {
    fn embedding_dim(&self) -> usize {
        self.backbone.embedding_dim()
    }

    fn embed_images(&self, faces: &[FaceImages]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let side = iresnet::INPUT_SIZE as u32;
        let planes = total_planes(&self.modalities);
        let dim = self.embedding_dim();
        let mut out = Vec::with_capacity(faces.len());
        for (k, chunk) in faces.chunks(64).enumerate() {
            let mut data = Vec::with_capacity(chunk.len() * planes * (side * side) as usize);
            for (j, face) in chunk.iter().enumerate() {
                let missing: Vec<Modality> = (self.modalities.iter().copied())
                    .filter(|m| match m {
                        Modality::Rgb => face.rgb.is_none(),
                        Modality::Nir => face.nir.is_none(),
                        Modality::Depth => face.depth.is_none(),
                    })
                    .collect();
                let sample = FaceSample {
                    image: face
                        .rgb
                        .clone()
                        .unwrap_or_else(|| RgbImage::new(side, side)),
                    label: 0,
                    nir: face.nir.clone(),
                    depth: face.depth.clone(),
                };
                let index = k * 64 + j;
                let values = (sample.planes(&self.modalities, &missing, index))
                    .map_err(|e| EmbedError::Input(e.to_string()))?;
                if values.len() != planes * (side * side) as usize {
                    return Err(EmbedError::Input(format!(
                        "face {index} is not {side}x{side}"
                    )));
                }
                data.extend(values);
            }
            let shape = [chunk.len(), planes, side as usize, side as usize];
            let x = burn::tensor::Tensor::<B, 4>::from_data(
                burn::tensor::TensorData::new(data, shape),
                &self.device,
            );
            let values = (self
                .backbone
                .embed(x)
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>())
            .map_err(|e| EmbedError::Model(format!("embeddings: {e:?}")))?;
            out.extend(values.chunks(dim).map(<[f32]>::to_vec));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use iresnet::{BackboneConfig, IResNetConfig};

    /// The trait's default: mirror the images and embed them again.
    struct ByImages<'a>(&'a BurnEmbedder<burn::backend::Flex>);

    impl Embedder for ByImages<'_> {
        fn embedding_dim(&self) -> usize {
            self.0.embedding_dim()
        }
        fn embed(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError> {
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
