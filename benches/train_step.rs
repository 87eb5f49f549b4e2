//! One training step on the CPU (flex), the step PyTorch's baseline times
//! (`../shared/peer-baselines.md`, tools/bench_peers_train.py): forward, ArcFace (s 64, m 0.5)
//! over 1000 classes, backward, SGD (lr 0.1, momentum 0.9, weight decay 5e-4, dampening 0) on
//! backbone and head; batch 32. Steps take seconds, so this is a plain timing binary (median of
//! a few steps after a warm-up) rather than criterion; it also splits a step into its phases.
//!
//! cargo bench -p arcface-benches --bench train_step [-- r18,r50,mbf [steps]]
//! Side by side with PyTorch: tools/bench_train.sh.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use arcface_benches::face_batch;
use arcface_loss::{ArcFace, MarginFcConfig, MarginHead};
use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use iresnet::{Backbone, BackboneConfig};
use trainer::{Model, OptimizerSettings};

type B = Autodiff<Flex>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // As the `arcface` binary does.
    iresnet::keep_freed_memory();
    // `cargo bench` passes `--bench`; the rest are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let models = args
        .first()
        .map_or("r18,r50,mbf", String::as_str)
        .to_string();
    let steps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let batch = 32;
    let device = Default::default();
    println!(
        "model  batch  step_ms(median of {steps})  img/s  forward_ms  backward_ms  optimizer_ms"
    );
    for name in models.split(',') {
        let spec = BackboneConfig::from_name(name).expect("a backbone name");
        let backbone = spec.init::<B>(&device).expect("backbone");
        let head = MarginFcConfig {
            num_classes: 1000,
            embedding_dim: backbone.embedding_dim(),
            margin: ArcFace {
                scale: 64.0,
                margin: 0.5,
                form: Default::default(),
            }
            .into(),
            ..MarginFcConfig::default()
        }
        .init::<B>(&device)
        .expect("head");
        let mut model = Model::new(backbone, head);
        let mut optimizer = OptimizerSettings::default().init::<B, Model<B, _, _>>(5e-4);
        let x = face_batch::<B>(batch, &device);
        let labels: Vec<usize> = (0..batch).map(|i| (i * 37) % 1000).collect();
        let (mut total, mut forward, mut backward, mut update) = (vec![], vec![], vec![], vec![]);
        for step in 0..=steps {
            let t0 = Instant::now();
            let out = model
                .head
                .forward(model.backbone.embed(x.clone()), &labels, step as u64)
                .expect("forward");
            // Reading the loss waits for the forward pass (flex is eager; this is for clarity).
            let loss = out.loss.clone().into_scalar();
            let t1 = Instant::now();
            let grads = GradientsParams::from_grads(out.loss.backward(), &model);
            B::sync(&device).expect("sync");
            let t2 = Instant::now();
            model = optimizer.step(0.1, model, grads);
            // The updated weights exist once read.
            let _ = model.head.valid();
            B::sync(&device).expect("sync");
            let t3 = Instant::now();
            if step > 0 {
                total.push((t3 - t0).as_secs_f64());
                forward.push((t1 - t0).as_secs_f64());
                backward.push((t2 - t1).as_secs_f64());
                update.push((t3 - t2).as_secs_f64());
            }
            let _ = loss;
        }
        let step_s = median(total);
        println!(
            "{name:5}  {batch:5}  {:10.0}  {:6.2}  {:10.0}  {:11.0}  {:12.0}",
            step_s * 1e3,
            batch as f64 / step_s,
            median(forward) * 1e3,
            median(backward) * 1e3,
            median(update) * 1e3
        );
    }
}
