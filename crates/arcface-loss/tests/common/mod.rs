//! Shared test helpers: tensors from nested rows in a chosen dtype, values back as f64, the
//! NumPy reference fixture.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use serde::Deserialize;

pub type Cpu = burn::backend::Flex;
pub type Ad = burn::backend::Autodiff<Cpu>;

pub fn matrix<B: Backend>(rows: &[Vec<f64>], dtype: DType) -> Tensor<B, 2> {
    let (n, d) = (rows.len(), rows[0].len());
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [n, d]), (&Default::default(), dtype))
}

pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

pub fn rows<B: Backend>(t: Tensor<B, 2>) -> Vec<Vec<f64>> {
    let [_, d] = t.dims();
    values(t).chunks(d).map(<[f64]>::to_vec).collect()
}

/// Deterministic pseudo-random numbers (no RNG crate needed in tests).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    pub fn matrix(&mut self, n: usize, d: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|_| (0..d).map(|_| self.normal()).collect())
            .collect()
    }
}

#[derive(Deserialize)]
pub struct Case {
    pub name: String,
    pub config: serde_json::Value,
    pub logits: Vec<Vec<f64>>,
    pub loss: f64,
}

#[derive(Deserialize)]
pub struct Fixture {
    pub numpy: String,
    pub embeddings: Vec<Vec<f64>>,
    pub centres: Vec<Vec<f64>>,
    pub labels: Vec<usize>,
    pub target_angles: Vec<f64>,
    pub cosine: Vec<Vec<f64>>,
    pub cases: Vec<Case>,
}

pub fn fixture() -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../datasets/fixtures/losses/margin_heads.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run tools/make_loss_fixtures.py)", path.display()));
    serde_json::from_str(&text).expect("fixture parses")
}
