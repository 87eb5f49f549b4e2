//! From five landmarks to an aligned face crop, exactly as insightface's Python pipeline
//! (skimage's similarity estimate, OpenCV's warp) makes it, plus a quality gate for training
//! data.
//!
//! ```
//! use face_align::{align_face, Interpolation, Point, Template};
//! let photo = image::RgbImage::new(640, 480);
//! let landmarks = [
//!     Point::new(300.0, 200.0), Point::new(340.0, 201.0), Point::new(320.0, 225.0),
//!     Point::new(303.0, 250.0), Point::new(337.0, 251.0),
//! ];
//! let face = align_face(&photo, &landmarks, &Template::arcface(112)?, Interpolation::Bilinear)?;
//! assert_eq!(face.image.dimensions(), (112, 112));
//! # Ok::<(), face_align::AlignError>(())
//! ```

mod align;
mod error;
mod geometry;
pub mod quality;
mod similarity;
#[cfg(target_arch = "x86_64")]
pub mod taps;
mod template;
mod warp;

pub use align::{align_batch, align_face, AlignedFace};
pub use error::AlignError;
pub use geometry::{Affine, BBox, Landmarks, Point};
pub use quality::{assess, sharpness, QualityConfig, QualityReport, Rejection};
pub use similarity::{estimate_similarity, estimate_similarity_f64};
pub use template::{Template, ARCFACE_112};
pub use warp::{warp_affine, Interpolation};
