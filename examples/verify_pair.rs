//! Are two aligned faces the same person?
//!
//! cargo run -p arcface-examples --example verify_pair -- MODEL FACE_A.png FACE_B.png [THRESHOLD]
//!
//! MODEL is a file from `arcface import`. Prints the cosine similarity of the two embeddings and
//! the decision at THRESHOLD (default 0.3, a common operating point for insightface models).

use std::path::PathBuf;

use anyhow::{Context, Result};
use arcface_examples::read_aligned_face;
use iresnet::preprocess::faces_to_tensor;
use iresnet::record::load_model;
use iresnet::{Backbone, CpuBackend as B};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, a, b, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: verify_pair MODEL FACE_A FACE_B [THRESHOLD]");
    };
    let threshold: f32 = rest
        .first()
        .map(|t| t.parse())
        .transpose()
        .context("THRESHOLD")?
        .unwrap_or(0.3);
    let device = Default::default();
    let (net, _) = load_model::<B>(&PathBuf::from(model), &device)?;
    let faces = [
        read_aligned_face(a.as_ref())?,
        read_aligned_face(b.as_ref())?,
    ];
    let batch = faces_to_tensor::<B>(&[&faces[0], &faces[1]], &device)?;
    // L2-normalize, then the cosine is a dot product.
    let emb = net.embed(batch);
    let norm = emb.clone().powf_scalar(2.0).sum_dim(1).sqrt();
    let emb = emb.div(norm);
    let v = emb
        .into_data()
        .to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let d = v.len() / 2;
    let cosine: f32 = v[..d].iter().zip(&v[d..]).map(|(x, y)| x * y).sum();
    let verdict = if cosine >= threshold {
        "same person"
    } else {
        "different people"
    };
    println!("cosine {cosine:.4} -> {verdict} (threshold {threshold})");
    Ok(())
}
