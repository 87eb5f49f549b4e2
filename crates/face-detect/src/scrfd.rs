//! SCRFD (Guo et al. 2021), insightface's default detector, run from insightface's own ONNX
//! files (`scrfd_500m_bnkps.onnx`, `det_10g.onnx`, ...) on Burn, with insightface's pre- and
//! post-processing (`model_zoo/scrfd.py`): letterbox resize into the detection size, anchor
//! centres per stride, distance decoding of boxes and landmarks, "+1"-area NMS.

use std::path::Path;

use burn::tensor::{backend::Backend, Tensor, TensorData};
use cpu_conv::ConvBackend;
use face_align::{BBox, Point};
use image::RgbImage;
use onnx_io::Array;
use serde::{Deserialize, Serialize};

use crate::detection::{nms, Detection, FaceDetector};
use crate::error::DetectError;
use crate::onnx_net::OnnxNet;
use crate::resize::resize_linear;

/// Detection settings, with insightface's `FaceAnalysis` values as defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrfdConfig {
    /// Keep anchors whose face score is at least this.
    pub det_thresh: f32,
    /// Non-maximum suppression IoU.
    pub nms_iou: f32,
    /// The network's input `[width, height]`: photos are scaled to fit and padded (multiples
    /// of 32; larger finds smaller faces, slower).
    pub input_size: [u32; 2],
}

impl Default for ScrfdConfig {
    fn default() -> Self {
        Self {
            det_thresh: 0.5,
            nms_iou: 0.4,
            input_size: [640, 640],
        }
    }
}

impl ScrfdConfig {
    /// Refuses thresholds outside their ranges and input sizes the strides do not divide.
    pub fn validate(&self) -> Result<(), DetectError> {
        if !(0.0..1.0).contains(&self.det_thresh) {
            return Err(DetectError::Config(format!(
                "det_thresh {} is not in [0, 1)",
                self.det_thresh
            )));
        }
        if !(self.nms_iou > 0.0 && self.nms_iou <= 1.0) {
            return Err(DetectError::Config(format!(
                "nms_iou {} is not in (0, 1]",
                self.nms_iou
            )));
        }
        let [w, h] = self.input_size;
        if w == 0 || h == 0 || w % 32 != 0 || h % 32 != 0 {
            return Err(DetectError::Config(format!(
                "input_size {w}x{h}: both sides must be positive multiples of 32"
            )));
        }
        Ok(())
    }
}

/// One output level: its stride and anchors per cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Level {
    stride: usize,
    anchors: usize,
}

/// An SCRFD detector with landmarks on any Burn backend.
pub struct Scrfd<B: Backend> {
    net: OnnxNet<B>,
    levels: Vec<Level>,
    config: ScrfdConfig,
    device: B::Device,
}

/// Pixel scaling insightface applies: `(x - 127.5) / 128`, RGB order.
const MEAN: f32 = 127.5;
const STD: f32 = 128.0;

impl<B: ConvBackend> Scrfd<B> {
    /// Loads an SCRFD ONNX file with keypoints (9 outputs: 3 strides x 2 anchors, or 15:
    /// 5 strides x 1 anchor; outputs ordered scores, boxes, landmarks as insightface exports).
    pub fn load(path: &Path, config: ScrfdConfig, device: &B::Device) -> Result<Self, DetectError> {
        config.validate()?;
        let net = OnnxNet::load(path, device)?;
        let levels = match net.output_names.len() {
            9 => [8, 16, 32].map(|stride| Level { stride, anchors: 2 }).to_vec(),
            15 => [8, 16, 32, 64, 128]
                .map(|stride| Level { stride, anchors: 1 })
                .to_vec(),
            n => {
                return Err(DetectError::Model {
                    path: path.to_path_buf(),
                    message: format!(
                        "{n} outputs: an SCRFD model with five landmarks has 9 or 15 (a `*_bnkps`/`*_kps` file); \
                         models without keypoints cannot feed alignment"
                    ),
                })
            }
        };
        Ok(Self {
            net,
            levels,
            config,
            device: device.clone(),
        })
    }

    /// The settings it runs with.
    pub fn config(&self) -> &ScrfdConfig {
        &self.config
    }

    /// insightface's letterbox: the photo scaled to fit the input (aspect kept, OpenCV's
    /// bilinear resize), top-left, zero padding; returns the network input and the scale.
    fn letterbox(&self, image: &RgbImage) -> Result<(Tensor<B, 4>, f32), DetectError> {
        let (w, h) = (image.width(), image.height());
        if w == 0 || h == 0 {
            return Err(DetectError::ImageSize(w, h));
        }
        let [iw, ih] = self.config.input_size;
        let im_ratio = h as f64 / w as f64;
        let (new_w, new_h) = if im_ratio > ih as f64 / iw as f64 {
            ((ih as f64 / im_ratio) as u32, ih)
        } else {
            (iw, (iw as f64 * im_ratio) as u32)
        };
        if new_w == 0 || new_h == 0 {
            return Err(DetectError::ImageSize(w, h));
        }
        let scale = (new_h as f64 / h as f64) as f32;
        let small = resize_linear(image, new_w, new_h);
        let (iw, ih) = (iw as usize, ih as usize);
        let mut input = vec![(0.0 - MEAN) / STD; 3 * ih * iw];
        for (x, y, p) in small.enumerate_pixels() {
            for c in 0..3 {
                input[c * ih * iw + y as usize * iw + x as usize] = (p[c] as f32 - MEAN) / STD;
            }
        }
        let x = Tensor::from_data(TensorData::new(input, [1, 3, ih, iw]), &self.device);
        Ok((x, scale))
    }

    /// The network's raw outputs (scores, box and landmark distances per level, in stride
    /// units) on the letterboxed photo, and the letterbox scale.
    pub fn raw_outputs(&self, image: &RgbImage) -> Result<(Vec<Array>, f32), DetectError> {
        let (x, scale) = self.letterbox(image)?;
        Ok((self.net.run(x)?, scale))
    }
}

/// A candidate before NMS, in letterbox pixels.
struct Candidate {
    score: f32,
    bbox: BBox,
    landmarks: [Point; 5],
}

impl<B: ConvBackend> Scrfd<B> {
    fn candidates(&self, outs: &[Array]) -> Result<Vec<Candidate>, DetectError> {
        let [iw, ih] = self.config.input_size.map(|v| v as usize);
        let n = self.levels.len();
        let mut found = Vec::new();
        for (l, level) in self.levels.iter().enumerate() {
            let (fw, fh) = (iw / level.stride, ih / level.stride);
            let k = fw * fh * level.anchors;
            let (scores, boxes, kps) = (&outs[l].data, &outs[l + n].data, &outs[l + 2 * n].data);
            if scores.len() != k || boxes.len() != 4 * k || kps.len() != 10 * k {
                return Err(DetectError::Model {
                    path: self.net.path().to_path_buf(),
                    message: format!(
                        "stride {}: outputs hold {}/{}/{} values, expected {k} scores for a {iw}x{ih} input",
                        level.stride,
                        scores.len(),
                        boxes.len(),
                        kps.len()
                    ),
                });
            }
            let s = level.stride as f32;
            for (a, &score) in scores.iter().enumerate() {
                if score < self.config.det_thresh {
                    continue;
                }
                let cell = a / level.anchors;
                let (cx, cy) = ((cell % fw) as f32 * s, (cell / fw) as f32 * s);
                let d = &boxes[4 * a..4 * a + 4];
                let p = &kps[10 * a..10 * a + 10];
                found.push(Candidate {
                    score,
                    bbox: BBox::new(cx - d[0] * s, cy - d[1] * s, cx + d[2] * s, cy + d[3] * s),
                    landmarks: std::array::from_fn(|i| {
                        Point::new(cx + p[2 * i] * s, cy + p[2 * i + 1] * s)
                    }),
                });
            }
        }
        Ok(found)
    }
}

impl<B: ConvBackend> FaceDetector for Scrfd<B> {
    fn detect(&self, image: &RgbImage) -> Result<Vec<Detection>, DetectError> {
        let (outs, scale) = self.raw_outputs(image)?;
        let mut found = self.candidates(&outs)?;
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        // Back to photo pixels before NMS, as insightface does (its areas' "+1" is in those).
        for c in &mut found {
            let b = c.bbox;
            c.bbox = BBox::new(b.x1 / scale, b.y1 / scale, b.x2 / scale, b.y2 / scale);
            for p in &mut c.landmarks {
                *p = Point::new(p.x / scale, p.y / scale);
            }
        }
        let boxes: Vec<BBox> = found.iter().map(|c| c.bbox).collect();
        let order: Vec<usize> = (0..found.len()).collect();
        Ok(nms(&boxes, &order, self.config.nms_iou)
            .into_iter()
            .map(|i| Detection {
                bbox: found[i].bbox,
                score: found[i].score,
                landmarks: found[i].landmarks,
            })
            .collect())
    }
}
