//! Real faces for the real checks (eval, quantize): insightface's released w600k_mbf and the
//! registry photos (datasets/fetch_real.py), detected with RetinaFace and aligned with
//! face-align.
//!
//! The packages hold no second photo of anyone, so a genuine pair is a face and the same face
//! found again in a degraded copy of its photo (70% scale, JPEG quality 60: a different
//! detection, landmarks, alignment and pixels).

use std::path::Path;

use face_align::{align_face, BBox, Interpolation, Template};
use face_detect::{FaceDetector, RetinaFace, RetinaFaceConfig};
use image::RgbImage;
use iresnet::{AnyBackbone, BackboneConfig};

/// The backend real-face tests run on.
pub type B = burn::backend::Flex;

/// Faces at least 40 px wide (smaller ones are below any sane quality gate), aligned to 112x112.
fn faces(det: &RetinaFace<B>, photo: &RgbImage) -> Vec<(BBox, RgbImage)> {
    let template = Template::arcface(112).unwrap();
    det.detect(photo)
        .unwrap()
        .into_iter()
        .filter(|d| d.bbox.x2 - d.bbox.x1 >= 40.0)
        .map(|d| {
            let crop = align_face(photo, &d.landmarks, &template, Interpolation::Bilinear).unwrap();
            (d.bbox, crop.image)
        })
        .collect()
}

fn degraded(photo: &RgbImage, scale: f32) -> RgbImage {
    let (w, h) = (
        (photo.width() as f32 * scale) as u32,
        (photo.height() as f32 * scale) as u32,
    );
    let small = image::imageops::resize(photo, w, h, image::imageops::FilterType::Triangle);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 60)
        .encode_image(&small)
        .unwrap();
    image::load_from_memory(&jpeg).unwrap().to_rgb8()
}

fn centre(b: &BBox) -> (f32, f32) {
    ((b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0)
}

/// The imported w600k_mbf.
pub fn w600k_mbf(cache: &Path) -> AnyBackbone<B> {
    iresnet::import::import_file::<B>(
        &cache.join("models/w600k_mbf.onnx"),
        &BackboneConfig::from_name("mbf").unwrap(),
        &Default::default(),
    )
    .expect("w600k_mbf")
}

/// Every face at least 40 px wide in the registry photos, aligned, with the same face found
/// again in the degraded copy: (originals, copies, names).
pub fn face_pairs(cache: &Path) -> (Vec<RgbImage>, Vec<RgbImage>, Vec<String>) {
    let det = RetinaFace::<B>::load(
        &cache.join("models/retinaface_mnet025.pth"),
        RetinaFaceConfig::default(),
        &Default::default(),
    )
    .expect("RetinaFace weights");
    let scale = 0.7;
    let (mut originals, mut copies, mut names) = (Vec::new(), Vec::new(), Vec::new());
    let mut photos: Vec<_> = std::fs::read_dir(cache.join("decoded"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    photos.sort();
    for path in photos {
        let photo = image::open(&path).unwrap().to_rgb8();
        if photo.width() < 200 {
            continue; // already an aligned crop
        }
        let found = faces(&det, &photo);
        let again = faces(&det, &degraded(&photo, scale));
        for (k, (bbox, crop)) in found.iter().enumerate() {
            // The same face in the copy: the detection whose centre, scaled back, is nearest.
            let (cx, cy) = centre(bbox);
            let nearest = again.iter().min_by(|a, b| {
                let d = |x: &BBox| {
                    let (x, y) = centre(x);
                    (x / scale - cx).powi(2) + (y / scale - cy).powi(2)
                };
                d(&a.0).total_cmp(&d(&b.0))
            });
            if let Some((b, copy)) = nearest {
                let (x, y) = centre(b);
                if ((x / scale - cx).powi(2) + (y / scale - cy).powi(2)).sqrt()
                    < 0.25 * (bbox.x2 - bbox.x1)
                {
                    originals.push(crop.clone());
                    copies.push(copy.clone());
                    names.push(format!(
                        "{}#{k}",
                        path.file_stem().unwrap().to_string_lossy()
                    ));
                }
            }
        }
    }
    (originals, copies, names)
}

/// Cosine scores of normalized embeddings: genuine (face i against its copy) and impostor (face
/// i against every other face and its copy).
pub fn pair_scores(a: &[Vec<f32>], b: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>) {
    let cos = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| (p * q) as f64).sum::<f64>();
    let genuine = a.iter().zip(b).map(|(x, y)| cos(x, y)).collect();
    let mut impostor = Vec::new();
    for i in 0..a.len() {
        for j in 0..a.len() {
            if i != j {
                impostor.push(cos(&a[i], &a[j]));
                impostor.push(cos(&a[i], &b[j]));
            }
        }
    }
    (genuine, impostor)
}
