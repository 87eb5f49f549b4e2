//! 1:N search at scale: builds a gallery of random normalized vectors (1,000,000 x 512 by
//! default, the setup of `../shared/peers/bench_search.py`), then times single-query top-10
//! search and batches of 64 for f32, f16 and int8 storage, with recall@1 / recall@10 against
//! exact f32 for random queries and for probes (a gallery row plus noise, cosine ~0.8); and an
//! IVF index on a subset, by nprobe. Prints one JSON object on stdout.
//!
//! cargo run --release -p arcface-benches --bin search-bench -- [--n 1000000] [--dim 512]
//!     [--ivf-n 200000] [--runs 31]

use std::time::Instant;

use face_search::{FlatIndex, Hit, IvfConfig, IvfIndex, Precision};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// A standard-normal vector, normalized (Box-Muller).
fn unit(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(dim);
    while v.len() < dim {
        let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
        let r = (-2.0 * u1.ln()).sqrt();
        v.push((r * (std::f64::consts::TAU * u2).cos()) as f32);
        v.push((r * (std::f64::consts::TAU * u2).sin()) as f32);
    }
    v.truncate(dim);
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn probe(rng: &mut StdRng, v: &[f32]) -> Vec<f32> {
    let noise = unit(rng, v.len());
    let p: Vec<f32> = v.iter().zip(&noise).map(|(a, b)| a + 0.75 * b).collect();
    let n = p.iter().map(|x| x * x).sum::<f32>().sqrt();
    p.iter().map(|x| x / n).collect()
}

/// Milliseconds of each call of `f`, one per item.
fn times_ms<T>(items: impl Iterator<Item = T>, mut f: impl FnMut(T)) -> Vec<f64> {
    items
        .map(|item| {
            let t = Instant::now();
            f(item);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn recall(found: &[Vec<Hit>], truth: &[Vec<Hit>], k: usize) -> f64 {
    let hits: usize = found
        .iter()
        .zip(truth)
        .map(|(f, t)| {
            f.iter()
                .take(k)
                .filter(|h| t.iter().take(k).any(|x| x.id == h.id))
                .count()
        })
        .sum();
    hits as f64 / (k * found.len()) as f64
}

fn main() {
    let (n, dim, ivf_n, runs) = (
        arg("--n", 1_000_000),
        arg("--dim", 512),
        arg("--ivf-n", 200_000),
        arg("--runs", 31),
    );
    let k = 10;
    let mut rng = StdRng::seed_from_u64(0);
    let t = Instant::now();
    let rows: Vec<Vec<f32>> = (0..n).map(|_| unit(&mut rng, dim)).collect();
    eprintln!(
        "{n} x {dim} generated in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let random: Vec<Vec<f32>> = (0..100).map(|_| unit(&mut rng, dim)).collect();
    let probes: Vec<Vec<f32>> = (0..100)
        .map(|i| probe(&mut rng, &rows[(i * 9973) % n]))
        .collect();
    let batches: Vec<Vec<Vec<f32>>> = (0..5)
        .map(|_| (0..64).map(|_| unit(&mut rng, dim)).collect())
        .collect();
    let mut results = serde_json::Map::new();
    // Exact f32 results for the random queries and the probes, from the first (f32) pass.
    let mut truth: Option<[Vec<Vec<Hit>>; 2]> = None;
    for precision in [
        Precision::F32,
        Precision::F16,
        Precision::Int8,
        Precision::Sq4,
    ] {
        let mut index = FlatIndex::new(dim, precision);
        index.reserve(n);
        let t = Instant::now();
        for (i, r) in rows.iter().enumerate() {
            index.add(i as i64, r).expect("valid row");
        }
        let add_s = t.elapsed().as_secs_f64();
        // Single queries: warm-up, then `runs` timed ones.
        for q in random.iter().take(2) {
            index.search(q, k).unwrap();
        }
        let single = times_ms(random.iter().cycle().take(runs), |q| {
            std::hint::black_box(index.search(q, k).unwrap());
        });
        let batch = times_ms(batches.iter(), |b| {
            std::hint::black_box(index.search_batch(b, k).unwrap());
        });
        let found_random = index.search_batch(&random, k).unwrap();
        let found_probes = index.search_batch(&probes, k).unwrap();
        let [truth_random, truth_probes] =
            truth.get_or_insert_with(|| [found_random.clone(), found_probes.clone()]);
        let at1 = |f: &[Vec<Hit>], t: &[Vec<Hit>]| recall(f, t, 1);
        let entry = json!({
            "bytes": index.bytes(),
            "add_s": add_s,
            "single_query_ms_median": median(single.clone()),
            "single_query_ms_min": single.iter().cloned().fold(f64::INFINITY, f64::min),
            "batch64_ms_median": median(batch.clone()),
            "batch64_qps": 64.0 / (median(batch) / 1e3),
            "recall@1_random": at1(&found_random, truth_random),
            "recall@10_random": recall(&found_random, truth_random, k),
            "recall@1_probe": at1(&found_probes, truth_probes),
            "recall@10_probe": recall(&found_probes, truth_probes, k),
        });
        eprintln!("{precision:?}: {entry}");
        results.insert(format!("{precision:?}").to_lowercase(), entry);
    }
    // IVF on a subset (training and assignment cost grow with rows x cells).
    let m = ivf_n.min(n);
    if m >= 10_000 {
        let subset = &rows[..m];
        let mut exact = FlatIndex::new(dim, Precision::F32);
        for (i, r) in subset.iter().enumerate() {
            exact.add(i as i64, r).unwrap();
        }
        let probes: Vec<Vec<f32>> = (0..100)
            .map(|i| probe(&mut rng, &subset[(i * 7919) % m]))
            .collect();
        let truth_random = exact.search_batch(&random, k).unwrap();
        let truth_probes = exact.search_batch(&probes, k).unwrap();
        let nlist = ((4.0 * (m as f64).sqrt()) as usize).next_power_of_two() / 2;
        let config = IvfConfig {
            nlist,
            nprobe: 1,
            iterations: 5,
            seed: 0,
        };
        let t = Instant::now();
        let sample: Vec<Vec<f32>> = subset
            .iter()
            .step_by((m / (32 * nlist)).max(1))
            .cloned()
            .collect();
        let mut ivf = IvfIndex::train(dim, Precision::F32, &sample, config).unwrap();
        for (i, r) in subset.iter().enumerate() {
            ivf.add(i as i64, r).unwrap();
        }
        let build_s = t.elapsed().as_secs_f64();
        let exact_single = median(times_ms(random.iter(), |q| {
            std::hint::black_box(exact.search(q, k).unwrap());
        }));
        let mut by_nprobe = serde_json::Map::new();
        for nprobe in [4, 16, 64] {
            ivf.set_nprobe(nprobe);
            let single = median(times_ms(random.iter(), |q| {
                std::hint::black_box(ivf.search(q, k).unwrap());
            }));
            let r = json!({
                "single_query_ms_median": single,
                "recall@10_random": recall(&ivf.search_batch(&random, k).unwrap(), &truth_random, k),
                "recall@10_probe": recall(&ivf.search_batch(&probes, k).unwrap(), &truth_probes, k),
                "recall@1_probe": recall(&ivf.search_batch(&probes, k).unwrap(), &truth_probes, 1),
            });
            eprintln!("IVF nlist {nlist} nprobe {nprobe}: {r}");
            by_nprobe.insert(nprobe.to_string(), r);
        }
        results.insert(
            "ivf_f32_subset".into(),
            json!({"n": m, "nlist": nlist, "build_s": build_s,
                   "exact_f32_single_query_ms_median": exact_single, "by_nprobe": by_nprobe}),
        );
    }
    let out = json!({
        "n": n, "dim": dim, "k": k,
        "threads": rayon::current_num_threads(),
        "kernels": format!("{:?}", face_search::Kernels::detect()),
        "results": results,
    });
    println!("{out}");
}
