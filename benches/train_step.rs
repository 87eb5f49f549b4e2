//! One training step, the step PyTorch's baseline times (`../shared/peer-baselines.md`,
//! tools/bench_peers_train.py): forward, ArcFace (s 64, m 0.5) over 1000 classes, backward, SGD
//! (lr 0.1, momentum 0.9, weight decay 5e-4, dampening 0) on backbone and head; batch 32; then the
//! trained backbone's batch-1 embedding in evaluation mode. Steps take seconds, so this is a plain
//! timing binary (median of a few steps after a warm-up) rather than criterion; it also splits a
//! step into its phases.
//!
//! cargo bench -p arcface-benches --bench train_step [-- r18,r50,mbf [steps]]
//! `BENCH_BACKEND=tch-cpu` (or `tch-cuda`; build with `--features tch`) runs it on LibTorch
//! instead of flex. Side by side with PyTorch: tools/bench_train.sh.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use arcface_benches::face_batch;
use arcface_loss::{ArcFace, MarginFcConfig, MarginHead};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use iresnet::{Backbone, BackboneConfig, ConvAutodiffBackend};
use trainer::{Model, OptimizerSettings};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds per phase of one step: (total, forward, backward, optimiser).
type Phases = (f64, f64, f64, f64);

fn bench_model<B: ConvAutodiffBackend>(name: &str, steps: usize, device: &B::Device) {
    let batch = 32;
    let spec = BackboneConfig::from_name(name).expect("a backbone name");
    let backbone = spec.init::<B>(device).expect("backbone");
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
    .init::<B>(device)
    .expect("head");
    let mut model = Model::new(backbone, head);
    let mut optimizer = OptimizerSettings::default().init::<B, Model<B, _, _>>(5e-4);
    let x = face_batch::<B>(batch, device);
    let labels: Vec<usize> = (0..batch).map(|i| (i * 37) % 1000).collect();
    let mut phases: Vec<Phases> = Vec::new();
    for step in 0..=steps {
        let t0 = Instant::now();
        let out = model
            .head
            .forward(model.backbone.embed(x.clone()), &labels, step as u64)
            .expect("forward");
        // Reading the loss waits for the forward pass.
        let _loss = out.loss.clone().into_scalar();
        let t1 = Instant::now();
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        B::sync(device).expect("sync");
        let t2 = Instant::now();
        model = optimizer.step(0.1, model, grads);
        // The updated weights exist once read.
        let _ = model.head.valid();
        B::sync(device).expect("sync");
        let t3 = Instant::now();
        if step > 0 {
            let secs = |a: Instant, b: Instant| (b - a).as_secs_f64();
            phases.push((secs(t0, t3), secs(t0, t1), secs(t1, t2), secs(t2, t3)));
        }
    }
    let embed_s = embed_latency(&model.backbone.valid(), steps.max(5), device);
    let pick = |f: fn(&Phases) -> f64| median(phases.iter().map(f).collect());
    let step_s = pick(|p| p.0);
    println!(
        "{name:5}  {batch:5}  {:10.0}  {:6.2}  {:10.0}  {:11.0}  {:12.0}  {:13.2}",
        step_s * 1e3,
        batch as f64 / step_s,
        pick(|p| p.1) * 1e3,
        pick(|p| p.2) * 1e3,
        pick(|p| p.3) * 1e3,
        embed_s * 1e3
    );
}

/// Median seconds of a batch-1 embedding (evaluation mode, one warm-up call).
fn embed_latency<B: Backend, M: Backbone<B>>(model: &M, runs: usize, device: &B::Device) -> f64 {
    let x = face_batch::<B>(1, device);
    let _ = model.embed(x.clone()).into_data();
    let times = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            let _ = model.embed(x.clone()).into_data();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    median(times)
}

fn run<B: ConvAutodiffBackend>(models: &str, steps: usize, device: &B::Device) {
    println!(
        "model  batch  step_ms(median of {steps})  img/s  forward_ms  backward_ms  optimizer_ms  embed_b1_ms"
    );
    for name in models.split(',') {
        bench_model::<B>(name, steps, device);
    }
}

fn main() {
    // As the `arcface` binary does.
    iresnet::keep_freed_memory();
    // `cargo bench` passes `--bench`; the rest are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let models = args.first().map_or("r18,r50,mbf", String::as_str);
    let steps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let backend = std::env::var("BENCH_BACKEND").unwrap_or_else(|_| "flex".into());
    println!("backend {backend}");
    match backend.as_str() {
        "flex" => {
            run::<burn::backend::Autodiff<burn::backend::Flex>>(models, steps, &Default::default())
        }
        #[cfg(feature = "tch")]
        "tch-cpu" => run::<burn::backend::Autodiff<burn::backend::LibTorch>>(
            models,
            steps,
            &burn::backend::libtorch::LibTorchDevice::Cpu,
        ),
        #[cfg(feature = "tch")]
        "tch-cuda" => run::<burn::backend::Autodiff<burn::backend::LibTorch>>(
            models,
            steps,
            &burn::backend::libtorch::LibTorchDevice::Cuda(0),
        ),
        other => panic!("BENCH_BACKEND={other}: flex, or tch-cpu / tch-cuda with --features tch"),
    }
}
