//! RetinaFace's pre- and post-processing behind the `FaceDetector` trait.

use std::path::Path;

use burn::tensor::{backend::Backend, Tensor, TensorData};
use cpu_conv::ConvBackend;
use face_align::{BBox, Point};
use image::{imageops::FilterType, RgbImage};
use serde::{Deserialize, Serialize};

use crate::detection::{nms, Detection, FaceDetector};
use crate::{error::DetectError, net::RetinaFaceNet, net::ANCHORS};

/// Post-processing settings, with the reference implementation's values as defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetinaFaceConfig {
    /// Keep priors whose face probability is above this.
    pub confidence: f32,
    /// Non-maximum suppression IoU.
    pub nms_iou: f32,
    /// Best priors kept before NMS.
    pub top_k: usize,
    /// Detections kept after NMS.
    pub keep_top_k: usize,
    /// Downscale images whose longer side exceeds this before detecting (speed); boxes and
    /// landmarks are mapped back to the original pixels. `None`: full resolution.
    pub max_side: Option<u32>,
}

impl Default for RetinaFaceConfig {
    fn default() -> Self {
        Self {
            confidence: 0.5,
            nms_iou: 0.4,
            top_k: 5000,
            keep_top_k: 750,
            max_side: None,
        }
    }
}

impl RetinaFaceConfig {
    /// Refuses thresholds outside their ranges and zero counts or sizes.
    pub fn validate(&self) -> Result<(), DetectError> {
        if !(0.0..1.0).contains(&self.confidence) {
            return Err(DetectError::Config(format!(
                "confidence {} is not in [0, 1)",
                self.confidence
            )));
        }
        if !(self.nms_iou > 0.0 && self.nms_iou <= 1.0) {
            return Err(DetectError::Config(format!(
                "nms_iou {} is not in (0, 1]",
                self.nms_iou
            )));
        }
        if self.top_k == 0 || self.keep_top_k == 0 || self.max_side == Some(0) {
            return Err(DetectError::Config(
                "top_k, keep_top_k and max_side must be > 0".into(),
            ));
        }
        Ok(())
    }
}

/// Prior boxes' minimum sizes per level and the levels' strides (mobilenet0.25 config).
const MIN_SIZES: [[f32; 2]; 3] = [[16.0, 32.0], [64.0, 128.0], [256.0, 512.0]];
const STEPS: [usize; 3] = [8, 16, 32];
const VARIANCE: [f32; 2] = [0.1, 0.2];
/// BGR means the network was trained with (subtracted, no scaling).
const BGR_MEAN: [f32; 3] = [104.0, 117.0, 123.0];

/// Prior boxes `[cx, cy, w, h]` (fractions of the image) in the network's output order.
pub fn priors(height: usize, width: usize) -> Vec<[f32; 4]> {
    let mut out = Vec::new();
    for (level, &step) in STEPS.iter().enumerate() {
        let (fh, fw) = (height.div_ceil(step), width.div_ceil(step));
        for i in 0..fh {
            for j in 0..fw {
                for &min in &MIN_SIZES[level] {
                    out.push([
                        ((j as f64 + 0.5) * step as f64 / width as f64) as f32,
                        ((i as f64 + 0.5) * step as f64 / height as f64) as f32,
                        (min as f64 / width as f64) as f32,
                        (min as f64 / height as f64) as f32,
                    ]);
                }
            }
        }
    }
    out
}

/// RetinaFace MobileNet-0.25 on any Burn backend.
pub struct RetinaFace<B: Backend> {
    net: RetinaFaceNet<B>,
    config: RetinaFaceConfig,
    device: B::Device,
}

impl<B: ConvBackend> RetinaFace<B> {
    /// Loads `mobilenet0.25_Final.pth` (see datasets/fetch_real.py for where it comes from).
    pub fn load(
        path: &Path,
        config: RetinaFaceConfig,
        device: &B::Device,
    ) -> Result<Self, DetectError> {
        config.validate()?;
        Ok(Self {
            net: RetinaFaceNet::load(path, device)?,
            config,
            device: device.clone(),
        })
    }

    /// The thresholds and sizes it runs with.
    pub fn config(&self) -> &RetinaFaceConfig {
        &self.config
    }

    /// Detections on `image` at its own resolution (no `max_side` resizing).
    fn detect_full(&self, image: &RgbImage) -> Result<Vec<Detection>, DetectError> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        if w == 0 || h == 0 {
            return Err(DetectError::ImageSize(image.width(), image.height()));
        }
        // CHW, BGR order, minus the means: what the reference feeds (cv2.imread, no scaling).
        let mut input = vec![0.0f32; 3 * h * w];
        for (i, p) in image.pixels().enumerate() {
            for (c, &rgb_channel) in [2usize, 1, 0].iter().enumerate() {
                input[c * h * w + i] = p[rgb_channel] as f32 - BGR_MEAN[c];
            }
        }
        let x = Tensor::<B, 4>::from_data(TensorData::new(input, [1, 3, h, w]), &self.device);
        let raw = self.net.forward(x);
        let priors = priors(h, w);
        debug_assert_eq!(priors.len(), raw.scores.len());
        let (wf, hf) = (w as f32, h as f32);
        let mut candidates: Vec<usize> = (0..priors.len())
            .filter(|&p| raw.scores[p] > self.config.confidence)
            .collect();
        candidates.sort_by(|&a, &b| raw.scores[b].total_cmp(&raw.scores[a]));
        candidates.truncate(self.config.top_k);
        let boxes: Vec<BBox> = candidates
            .iter()
            .map(|&p| {
                let [cx, cy, pw, ph] = priors[p];
                let l = &raw.loc[p * 4..p * 4 + 4];
                let (bw, bh) = (
                    pw * (l[2] * VARIANCE[1]).exp(),
                    ph * (l[3] * VARIANCE[1]).exp(),
                );
                let (x1, y1) = (
                    cx + l[0] * VARIANCE[0] * pw - bw / 2.0,
                    cy + l[1] * VARIANCE[0] * ph - bh / 2.0,
                );
                BBox::new(x1 * wf, y1 * hf, (x1 + bw) * wf, (y1 + bh) * hf)
            })
            .collect();
        let order: Vec<usize> = (0..candidates.len()).collect();
        let mut keep = nms(&boxes, &order, self.config.nms_iou);
        keep.truncate(self.config.keep_top_k);
        Ok(keep
            .into_iter()
            .map(|k| {
                let p = candidates[k];
                let [cx, cy, pw, ph] = priors[p];
                let l = &raw.landmarks[p * 10..p * 10 + 10];
                let landmarks = std::array::from_fn(|i| {
                    Point::new(
                        (cx + l[2 * i] * VARIANCE[0] * pw) * wf,
                        (cy + l[2 * i + 1] * VARIANCE[0] * ph) * hf,
                    )
                });
                Detection {
                    bbox: boxes[k],
                    score: raw.scores[p],
                    landmarks,
                }
            })
            .collect())
    }
}

impl<B: ConvBackend> FaceDetector for RetinaFace<B> {
    fn detect(&self, image: &RgbImage) -> Result<Vec<Detection>, DetectError> {
        let longer = image.width().max(image.height());
        let Some(max_side) = self.config.max_side.filter(|&m| longer > m) else {
            return self.detect_full(image);
        };
        let scale = max_side as f32 / longer as f32;
        let (w, h) = (
            ((image.width() as f32 * scale).round() as u32).max(1),
            ((image.height() as f32 * scale).round() as u32).max(1),
        );
        let small = image::imageops::resize(image, w, h, FilterType::Triangle);
        let (sx, sy) = (
            image.width() as f32 / w as f32,
            image.height() as f32 / h as f32,
        );
        let mut faces = self.detect_full(&small)?;
        for f in &mut faces {
            f.bbox = BBox::new(
                f.bbox.x1 * sx,
                f.bbox.y1 * sy,
                f.bbox.x2 * sx,
                f.bbox.y2 * sy,
            );
            for p in &mut f.landmarks {
                *p = Point::new(p.x * sx, p.y * sy);
            }
        }
        Ok(faces)
    }
}

/// Number of priors (network outputs) for an image size; `ANCHORS` per cell on three levels.
pub fn num_priors(height: usize, width: usize) -> usize {
    STEPS
        .iter()
        .map(|&s| height.div_ceil(s) * width.div_ceil(s) * ANCHORS)
        .sum()
}
