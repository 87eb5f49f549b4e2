//! A sequence of transforms with a per-sample RNG.

use image::RgbImage;
use rand::{rngs::StdRng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    error::AugmentError,
    sample::{Chw, Sample},
    transforms::{EraseValue, Stage, Transform, TransformConfig},
};

/// A pipeline as written in a config file: the transforms in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The transforms, applied in order.
    pub transforms: Vec<TransformConfig>,
}

impl PipelineConfig {
    /// The standard face-training set: flip 0.5, rotation 15, jitter 0.2/0.2/0.2, ToTensor,
    /// ImageNet normalisation, erasing 0.3 with scale 0.02-0.1 (after normalising, as
    /// torchvision's RandomErasing expects).
    pub fn arcface_default() -> Self {
        Self {
            transforms: vec![
                TransformConfig::HorizontalFlip { p: 0.5 },
                TransformConfig::Rotation { degrees: 15.0 },
                TransformConfig::ColorJitter {
                    brightness: 0.2,
                    contrast: 0.2,
                    saturation: 0.2,
                    hue: 0.0,
                },
                TransformConfig::ToTensor,
                TransformConfig::imagenet_normalize(),
                TransformConfig::RandomErasing {
                    p: 0.3,
                    scale: (0.02, 0.1),
                    ratio: (0.3, 3.3),
                    value: EraseValue::Constant(0.0),
                },
            ],
        }
    }

    /// insightface arcface_torch's own: flip, then `(x - 127.5) / 127.5`.
    pub fn insightface_minimal() -> Self {
        Self {
            transforms: vec![
                TransformConfig::HorizontalFlip { p: 0.5 },
                TransformConfig::ToTensor,
                TransformConfig::insightface_normalize(),
            ],
        }
    }
}

/// Transforms applied in order, image stage then `ToTensor` then tensor stage.
#[derive(Debug)]
pub struct Pipeline {
    transforms: Vec<Box<dyn Transform>>,
}

/// The RNG of sample `index` in `epoch`: a pure function of (seed, epoch, index), so results do
/// not depend on thread count, batch composition or order.
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> StdRng {
    let mut z = seed;
    for part in [epoch, index] {
        z = (z ^ part.wrapping_add(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z ^= z >> 31;
    }
    StdRng::seed_from_u64(z)
}

impl Pipeline {
    /// Any transforms (built-in or your own); their stages must come in order.
    pub fn new(transforms: Vec<Box<dyn Transform>>) -> Result<Self, AugmentError> {
        for pair in transforms.windows(2) {
            let (a, b) = (pair[0].stage(), pair[1].stage());
            if b < a || (a == Stage::ToTensor && b == Stage::ToTensor) {
                return Err(AugmentError::Stage {
                    transform: pair[1].name(),
                    expected: if b == Stage::Image {
                        "8-bit images"
                    } else {
                        "one ToTensor"
                    },
                    where_: if b == Stage::Image {
                        "before ToTensor"
                    } else {
                        "once, between the image and tensor transforms"
                    },
                });
            }
        }
        if let Some(first) = transforms.iter().find(|t| t.stage() == Stage::Tensor) {
            if !transforms.iter().any(|t| t.stage() == Stage::ToTensor) {
                return Err(AugmentError::Stage {
                    transform: first.name(),
                    expected: "tensors",
                    where_: "after a ToTensor",
                });
            }
        }
        Ok(Self { transforms })
    }

    /// The pipeline a config describes, after checking every parameter and the order of stages.
    pub fn from_config(config: &PipelineConfig) -> Result<Self, AugmentError> {
        config
            .transforms
            .iter()
            .try_for_each(TransformConfig::validate)?;
        Self::new(
            config
                .transforms
                .iter()
                .cloned()
                .map(|t| Box::new(t) as Box<dyn Transform>)
                .collect(),
        )
    }

    /// See [`PipelineConfig::arcface_default`].
    pub fn arcface_default() -> Self {
        Self::from_config(&PipelineConfig::arcface_default()).expect("valid preset")
    }

    /// See [`PipelineConfig::insightface_minimal`].
    pub fn insightface_minimal() -> Self {
        Self::from_config(&PipelineConfig::insightface_minimal()).expect("valid preset")
    }

    /// Runs every transform on one image with the sample's own RNG.
    pub fn run(
        &self,
        image: RgbImage,
        seed: u64,
        epoch: u64,
        index: u64,
    ) -> Result<Sample, AugmentError> {
        if image.width() == 0 || image.height() == 0 {
            return Err(AugmentError::EmptyImage(image.width(), image.height()));
        }
        let mut rng = sample_rng(seed, epoch, index);
        self.transforms
            .iter()
            .try_fold(Sample::Image(image), |s, t| t.apply(s, &mut rng))
    }

    /// [`Pipeline::run`] for pipelines that end in a tensor.
    pub fn run_tensor(
        &self,
        image: RgbImage,
        seed: u64,
        epoch: u64,
        index: u64,
    ) -> Result<Chw, AugmentError> {
        self.run(image, seed, epoch, index)?
            .into_tensor("Pipeline::run_tensor")
    }

    /// A batch in parallel (rayon): image `k` is sample `first_index + k`. Identical to calling
    /// [`Pipeline::run_tensor`] one by one, on any number of threads.
    pub fn run_batch(
        &self,
        images: &[RgbImage],
        seed: u64,
        epoch: u64,
        first_index: u64,
    ) -> Vec<Result<Chw, AugmentError>> {
        images
            .par_iter()
            .enumerate()
            .map(|(k, img)| self.run_tensor(img.clone(), seed, epoch, first_index + k as u64))
            .collect()
    }
}
