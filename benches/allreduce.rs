//! The all-reduce a multi-node run makes after every backward pass, timed over loopback:
//! `cargo run --release -p arcface-benches --bin allreduce-bench -- [NODES] [FLOATS|r50] [RUNS]`
//! spawns NODES processes of itself (default 2), each summing a tensor of FLOATS f32 (default:
//! IResNet-50's parameter count) through `trainer::RingCollective`, RUNS times after one warm-up.
//! Rank 0 prints one JSON line: the median and each run's milliseconds, and the bus bandwidth
//! (2 (N - 1) / N x bytes / time, NCCL's convention). docs/scaling.md records its numbers.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Instant;

use burn::backend::Flex;
use burn::module::Module;
use burn::tensor::Tensor;
use trainer::{ClusterConfig, Collective, RingCollective};

// As in the `arcface` binary that trains.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    iresnet::keep_freed_memory();
    if let Ok(rank) = std::env::var("ALLREDUCE_RANK") {
        return node(rank.parse().expect("rank"));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nodes: usize = args.first().map_or(2, |a| a.parse().expect("NODES"));
    let floats: usize = match args.get(1).map(String::as_str) {
        None | Some("r50") => r50_parameters(),
        Some(n) => n.parse().expect("FLOATS: a count or r50"),
    };
    let runs: usize = args.get(2).map_or(10, |a| a.parse().expect("RUNS"));
    let port = test_support::net::free_ports(nodes as u16);
    let exe = std::env::current_exe().expect("own path");
    let children: Vec<_> = (0..nodes)
        .map(|rank| {
            Command::new(&exe)
                .env("ALLREDUCE_RANK", rank.to_string())
                .env("ALLREDUCE_SHAPE", format!("{nodes} {floats} {runs} {port}"))
                .spawn()
                .expect("spawn a node")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().expect("node").success(), "a node failed");
    }
}

/// IResNet-50's parameter count (embedding 512): the floats of its gradient.
fn r50_parameters() -> usize {
    let config = iresnet::BackboneConfig::from_name("r50").expect("r50");
    config
        .init::<Flex>(&Default::default())
        .expect("IResNet-50")
        .num_params()
}

fn node(rank: usize) {
    let shape = std::env::var("ALLREDUCE_SHAPE").expect("shape");
    let v: Vec<usize> = shape
        .split(' ')
        .map(|x| x.parse().expect("number"))
        .collect();
    let (nodes, floats, runs, port) = (v[0], v[1], v[2], v[3] as u16);
    let coordinator = SocketAddr::from(([127, 0, 0, 1], port));
    let ring = RingCollective::join(&ClusterConfig::local(nodes, rank, coordinator)).expect("join");
    let device = Default::default();
    let values: Vec<f32> = (0..floats)
        .map(|i| ((i % 1000) as f32) * (rank + 1) as f32)
        .collect();
    let tensor = Tensor::<Flex, 1>::from_floats(values.as_slice(), &device);
    // Warm-up, and a check: node r sends (i % 1000) x (r + 1).
    let sum = Collective::<Flex>::sum(&ring, tensor.clone(), "warm-up").expect("sum");
    let got: Vec<f32> = sum.into_data().to_vec().expect("f32");
    let factor = (nodes * (nodes + 1) / 2) as f32;
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, &x)| x == (i % 1000) as f32 * factor));
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let sum = Collective::<Flex>::sum(&ring, tensor.clone(), "timed").expect("sum");
        ms.push(start.elapsed().as_secs_f64() * 1e3);
        drop(sum);
    }
    if rank == 0 {
        let mut sorted = ms.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let bytes = 4.0 * floats as f64;
        let bus = 2.0 * (nodes - 1) as f64 / nodes as f64 * bytes / (median / 1e3) / 1e9;
        println!(
            "{}",
            serde_json::json!({
                "nodes": nodes, "floats": floats, "mb": bytes / 1e6, "median_ms": median,
                "runs_ms": ms, "bus_gb_per_s": bus,
            })
        );
    }
}
