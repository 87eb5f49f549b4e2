//! The detector seam, without Burn: what a detection is and what finds them.

use face_align::{BBox, Landmarks};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::DetectError;

/// One face: its box, the detector's confidence, and five landmarks (left eye, right eye,
/// nose, left and right mouth corner) in source-image pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// The face's box.
    pub bbox: BBox,
    /// The detector's face probability.
    pub score: f32,
    /// Left eye, right eye, nose, left and right mouth corner.
    pub landmarks: Landmarks,
}

/// Anything that finds faces in an RGB image.
pub trait FaceDetector {
    /// Faces sorted by decreasing score.
    fn detect(&self, image: &RgbImage) -> Result<Vec<Detection>, DetectError>;
}

/// A boxed detector (chosen at run time) is a detector.
impl<D: FaceDetector + ?Sized> FaceDetector for Box<D> {
    fn detect(&self, image: &RgbImage) -> Result<Vec<Detection>, DetectError> {
        (**self).detect(image)
    }
}

/// For inputs that are already aligned 112x112 faces (a camera or a client that aligns
/// upstream): one detection covering the image, with the ArcFace template's landmarks, so
/// alignment is the identity. Other sizes have no face. Needs no weights and no Burn.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlignedFaces;

impl FaceDetector for AlignedFaces {
    fn detect(&self, image: &RgbImage) -> Result<Vec<Detection>, DetectError> {
        if (image.width(), image.height()) != (112, 112) {
            return Ok(Vec::new());
        }
        let template = face_align::Template::arcface(112).expect("112 is a template size");
        let mut landmarks = [face_align::Point::new(0.0, 0.0); 5];
        landmarks.copy_from_slice(&template.points);
        Ok(vec![Detection {
            bbox: BBox {
                x1: 0.0,
                y1: 0.0,
                x2: 112.0,
                y2: 112.0,
            },
            score: 1.0,
            landmarks,
        }])
    }
}

/// Greedy NMS with the "+1" pixel areas both references use (Pytorch_Retinaface's py_cpu_nms,
/// insightface's SCRFD.nms); `order` must be sorted by score. Suppresses IoU above `iou`.
#[cfg(any(feature = "retinaface", feature = "scrfd"))]
pub(crate) fn nms(boxes: &[BBox], order: &[usize], iou: f32) -> Vec<usize> {
    let area = |b: &BBox| (b.x2 - b.x1 + 1.0) * (b.y2 - b.y1 + 1.0);
    let mut keep = Vec::new();
    let mut suppressed = vec![false; order.len()];
    for a in 0..order.len() {
        if suppressed[a] {
            continue;
        }
        let i = order[a];
        keep.push(i);
        let bi = &boxes[i];
        for b in a + 1..order.len() {
            if suppressed[b] {
                continue;
            }
            let bj = &boxes[order[b]];
            let w = (bi.x2.min(bj.x2) - bi.x1.max(bj.x1) + 1.0).max(0.0);
            let h = (bi.y2.min(bj.y2) - bi.y1.max(bj.y1) + 1.0).max(0.0);
            let inter = w * h;
            if inter / (area(bi) + area(bj) - inter) > iou {
                suppressed[b] = true;
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aligned_face_is_found_where_the_template_says() {
        let face = RgbImage::new(112, 112);
        let found = AlignedFaces.detect(&face).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].landmarks[2].x, 56.0252);
        assert!(AlignedFaces
            .detect(&RgbImage::new(640, 480))
            .unwrap()
            .is_empty());
    }
}
