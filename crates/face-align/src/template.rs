//! Where the five landmarks should land in the aligned crop.

use serde::{Deserialize, Serialize};

use crate::{error::AlignError, geometry::Point};

/// insightface's ArcFace template for 112x112: left eye, right eye, nose, left and right mouth
/// corners (`arcface_dst` in insightface/utils/face_align.py).
pub const ARCFACE_112: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// Target landmark positions and the crop size they refer to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// The five landmarks' positions in the crop.
    pub points: Vec<Point>,
    /// The crop's width.
    pub width: u32,
    /// The crop's height.
    pub height: u32,
}

impl Template {
    /// The ArcFace template for a square crop of `size`, as insightface's `estimate_norm` builds
    /// it: multiples of 112 scale the 112 template; otherwise multiples of 128 use the
    /// 128-based variant (scaled by `size / 128`, x shifted right by `8 * size / 128`).
    pub fn arcface(size: u32) -> Result<Self, AlignError> {
        let (ratio, shift) = if size > 0 && size.is_multiple_of(112) {
            (size as f32 / 112.0, 0.0)
        } else if size > 0 && size.is_multiple_of(128) {
            let r = size as f32 / 128.0;
            (r, 8.0 * r)
        } else {
            return Err(AlignError::TemplateSize(size));
        };
        Ok(Self {
            points: ARCFACE_112
                .iter()
                .map(|&[x, y]| Point::new(x * ratio + shift, y * ratio))
                .collect(),
            width: size,
            height: size,
        })
    }

    /// Any template: at least two finite points and a non-empty crop.
    pub fn custom(points: Vec<Point>, width: u32, height: u32) -> Result<Self, AlignError> {
        if width == 0 || height == 0 {
            return Err(AlignError::OutputSize(width, height));
        }
        if points.len() < 2 {
            return Err(AlignError::TooFewPoints(points.len()));
        }
        if let Some((index, p)) = points
            .iter()
            .enumerate()
            .find(|(_, p)| !(p.x.is_finite() && p.y.is_finite()))
        {
            return Err(AlignError::NonFinite {
                which: "template",
                index,
                x: p.x as f64,
                y: p.y as f64,
            });
        }
        Ok(Self {
            points,
            width,
            height,
        })
    }
}

impl Default for Template {
    /// ArcFace 112x112.
    fn default() -> Self {
        Self::arcface(112).expect("112 is a valid size")
    }
}
