//! Shared by the integration tests: fixture paths and the real-data fetch.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use test_support::{fixture, read_json, real_data, repo_root};

/// The backend these tests run on.
pub type B = iresnet::CpuBackend;

/// The fixed test input both sides compute (see tools/make_backbone_fixtures.py).
pub fn fixed_input(n: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(n * 3 * 112 * 112);
    for b in 0..n {
        for c in 0..3 {
            for h in 0..112 {
                for w in 0..112 {
                    let v = 0.37 * (b + 1) as f64
                        + 0.11 * c as f64
                        + 0.013 * (h * (c + 1)) as f64
                        + 0.029 * w as f64;
                    x.push(v.sin() as f32);
                }
            }
        }
    }
    x
}

/// Largest |a - b| relative to the largest |b|.
pub fn max_relative_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

/// Cosine similarity in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// A `[1, D]` tensor's values.
pub fn to_vec(t: burn::tensor::Tensor<B, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

use iresnet::burn;

/// The sha256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
