//! Landmarks to an aligned crop, one face or many in parallel.

use image::RgbImage;
use rayon::prelude::*;

use crate::{
    error::AlignError,
    geometry::{Affine, Point},
    similarity::estimate_similarity,
    template::Template,
    warp::{warp_affine, Interpolation},
};

/// An aligned crop and the map that made it (source image -> crop).
#[derive(Debug, Clone)]
pub struct AlignedFace {
    /// The aligned crop.
    pub image: RgbImage,
    /// The similarity transform from the photo to the crop.
    pub transform: Affine,
}

/// Aligns one face: the similarity from `landmarks` to the template, then the warp (insightface's
/// `norm_crop` when the template is ArcFace and the interpolation bilinear).
pub fn align_face(
    image: &RgbImage,
    landmarks: &[Point],
    template: &Template,
    interpolation: Interpolation,
) -> Result<AlignedFace, AlignError> {
    let transform = estimate_similarity(landmarks, &template.points)?;
    let crop = warp_affine(
        image,
        &transform,
        template.width,
        template.height,
        interpolation,
    )?;
    Ok(AlignedFace {
        image: crop,
        transform,
    })
}

/// Aligns many faces in parallel (rayon). Each face is independent, so one bad set of
/// landmarks gives one error and the others still align; results keep the input order.
pub fn align_batch<I>(
    faces: &[(&RgbImage, I)],
    template: &Template,
    interpolation: Interpolation,
) -> Vec<Result<AlignedFace, AlignError>>
where
    I: AsRef<[Point]> + Sync,
{
    faces
        .par_iter()
        .map(|(image, landmarks)| align_face(image, landmarks.as_ref(), template, interpolation))
        .collect()
}
