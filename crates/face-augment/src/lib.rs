//! Training augmentation for aligned faces: a `Transform` trait, a serde-configurable
//! `Pipeline`, torchvision's transforms with its semantics (flip, rotation, colour jitter,
//! `ToTensor`, `Normalize`, random erasing) and insightface's extras (down-up resize, blur,
//! greyscale, HSV shift). Each sample's randomness comes from (seed, epoch, index), so results
//! do not depend on threads.
//!
//! ```
//! use face_augment::Pipeline;
//! let pipeline = Pipeline::arcface_default();
//! let face = image::RgbImage::new(112, 112);
//! let tensor = pipeline.run_tensor(face, 42, 0, 7)?; // 3 x 112 x 112, normalized
//! assert_eq!(tensor.data.len(), 3 * 112 * 112);
//! # Ok::<(), face_augment::AugmentError>(())
//! ```

mod error;
pub mod functional;
mod pipeline;
mod sample;
mod transforms;

pub use error::AugmentError;
pub use pipeline::{sample_rng, Pipeline, PipelineConfig};
pub use sample::{rgb_from_raw, Chw, Sample};
pub use transforms::{erasing_box, Drawn, EraseValue, Stage, Transform, TransformConfig};
