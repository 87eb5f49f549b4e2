//! A bounded load test for the face service on loopback: N concurrent clients for T seconds,
//! reporting p50 / p99 latency, throughput and errors; and `populate`, which bulk-fills a
//! gallery with random faces for the search load.
//!
//!   face-load embed  --addr 127.0.0.1:50051 --image photo.jpg --clients 4 --seconds 20
//!   face-load search --addr 127.0.0.1:50051 --dim 512 --clients 4 --seconds 20
//!   face-load populate --gallery big.db --faces 1000000 --dim 512

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use face_serve::proto::face_service_client::FaceServiceClient;
use face_serve::proto::{self, face_input::Source};

#[derive(Parser)]
#[command(about = "Load test for `arcface serve` (N clients for T seconds) and gallery filler")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Load {
    /// Server address; several, comma-separated, spread the clients over service replicas
    /// (client i talks to address i mod N).
    #[arg(long, default_value = "127.0.0.1:50051", value_delimiter = ',')]
    addr: Vec<String>,
    /// Concurrent clients, each with its own connection, one request at a time.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// How long to run.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Untimed requests per client before timing starts.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// `Embed` of one photo (detect + align + embed).
    Embed {
        #[command(flatten)]
        load: Load,
        #[arg(long)]
        image: PathBuf,
        /// Send the photo scaled to fit WIDTHxHEIGHT and padded to exactly that size (JPEG),
        /// e.g. 640x480.
        #[arg(long)]
        fit: Option<String>,
    },
    /// `Detect` of one photo.
    Detect {
        #[command(flatten)]
        load: Load,
        #[arg(long)]
        image: PathBuf,
    },
    /// `Search` (top-k) with random query embeddings.
    Search {
        #[command(flatten)]
        load: Load,
        #[arg(long, default_value_t = 512)]
        dim: usize,
        #[arg(long, default_value_t = 10)]
        top_k: u32,
    },
    /// Fill a gallery database with random normalized faces (bulk transactions).
    Populate {
        /// A SQLite file, or a `postgres://` URL.
        #[arg(long)]
        gallery: String,
        #[arg(long, default_value_t = 1_000_000)]
        faces: usize,
        #[arg(long, default_value_t = 512)]
        dim: usize,
    },
}

/// xorshift64*: random queries without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
    fn unit(&mut self, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|_| self.next()).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }
}

#[derive(Clone)]
enum Call {
    Embed(Vec<u8>),
    Detect(Vec<u8>),
    Search(usize, u32),
}

async fn one(
    c: &mut FaceServiceClient<tonic::transport::Channel>,
    call: &Call,
    rng: &mut Rng,
) -> Result<(), tonic::Status> {
    match call {
        Call::Embed(image) => c
            .embed(proto::EmbedRequest {
                image: image.clone(),
            })
            .await
            .map(drop),
        Call::Detect(image) => c
            .detect(proto::DetectRequest {
                image: image.clone(),
            })
            .await
            .map(drop),
        Call::Search(dim, k) => c
            .search(proto::SearchRequest {
                face: Some(proto::FaceInput {
                    source: Some(Source::Embedding(proto::Embedding {
                        values: rng.unit(*dim),
                    })),
                }),
                top_k: *k,
            })
            .await
            .map(drop),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn load(load: Load, call: Call, what: &str) -> Result<(), Box<dyn std::error::Error>> {
    let until = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut tasks = Vec::new();
    for client in 0..load.clients {
        let url = format!("http://{}", load.addr[client % load.addr.len()]);
        let (call, until, warmup) = (call.clone(), until.clone(), load.warmup);
        let seconds = load.seconds;
        tasks.push(tokio::spawn(async move {
            let mut c = FaceServiceClient::connect(url)
                .await?
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            let mut rng = Rng(0x9E3779B97F4A7C15 ^ (client as u64 + 1));
            for _ in 0..warmup {
                let _ = one(&mut c, &call, &mut rng).await;
            }
            let end = *until
                .lock()
                .unwrap()
                .get_or_insert_with(|| Instant::now() + Duration::from_secs_f64(seconds));
            let (mut times, mut errors) = (Vec::new(), Vec::new());
            while Instant::now() < end {
                let t = Instant::now();
                match one(&mut c, &call, &mut rng).await {
                    Ok(()) => times.push(t.elapsed().as_secs_f64() * 1e3),
                    Err(e) => errors.push(format!("{:?}: {}", e.code(), e.message())),
                }
            }
            Ok::<_, tonic::transport::Error>((times, errors))
        }));
    }
    let (mut times, mut errors) = (Vec::new(), Vec::new());
    for t in tasks {
        let (t, e) = t.await??;
        times.extend(t);
        errors.extend(e);
    }
    times.sort_by(f64::total_cmp);
    let report = serde_json::json!({
        "rpc": what,
        "clients": load.clients,
        "replicas": load.addr.len(),
        "seconds": load.seconds,
        "requests": times.len() + errors.len(),
        "errors": errors.len(),
        "first_errors": errors.iter().take(3).collect::<Vec<_>>(),
        "per_second": times.len() as f64 / load.seconds,
        "p50_ms": percentile(&times, 0.5),
        "p90_ms": percentile(&times, 0.9),
        "p99_ms": percentile(&times, 0.99),
        "max_ms": times.last().copied().unwrap_or(f64::NAN),
    });
    if load.json {
        println!("{report}");
    } else {
        println!(
            "{what}: {} clients x {:.0} s: {} ok, {} errors, {:.1}/s; latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            load.clients, load.seconds, times.len(), errors.len(), report["per_second"].as_f64().unwrap_or(0.0),
            report["p50_ms"].as_f64().unwrap_or(f64::NAN), report["p90_ms"].as_f64().unwrap_or(f64::NAN),
            report["p99_ms"].as_f64().unwrap_or(f64::NAN), report["max_ms"].as_f64().unwrap_or(f64::NAN)
        );
        for e in errors.iter().take(3) {
            println!("  error: {e}");
        }
    }
    Ok(())
}

fn populate(gallery: String, faces: usize, dim: usize) -> Result<(), Box<dyn std::error::Error>> {
    let g = face_search::Gallery::open_location(&gallery, face_search::GalleryConfig::new(dim))?;
    let mut rng = Rng(42);
    let t = Instant::now();
    let chunk = 20_000;
    let mut done = 0;
    while done < faces {
        let n = chunk.min(faces - done);
        let rows: Vec<(String, Vec<f32>)> = (0..n)
            .map(|i| (format!("random-{}", done + i), rng.unit(dim)))
            .collect();
        let refs: Vec<(&str, Option<&str>, &[f32])> = rows
            .iter()
            .map(|(id, v)| (id.as_str(), None, v.as_slice()))
            .collect();
        g.enroll_many(&refs)?;
        done += n;
        eprint!(
            "\r{done} / {faces} faces ({:.0} s)",
            t.elapsed().as_secs_f64()
        );
    }
    eprintln!();
    println!("{}: {} faces", g.location(), g.len());
    Ok(())
}

/// `bytes` scaled to fit `WxH`, centred on grey, as JPEG (quality 90).
fn fitted(bytes: &[u8], size: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let (w, h) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .ok_or("--fit takes WIDTHxHEIGHT, e.g. 640x480")?;
    let img = image::load_from_memory(bytes)?.to_rgb8();
    let scale = (w as f32 / img.width() as f32).min(h as f32 / img.height() as f32);
    let (sw, sh) = (
        (img.width() as f32 * scale) as u32,
        (img.height() as f32 * scale) as u32,
    );
    let small = image::imageops::resize(
        &img,
        sw.max(1),
        sh.max(1),
        image::imageops::FilterType::Triangle,
    );
    let mut canvas = image::RgbImage::from_pixel(w, h, image::Rgb([128, 128, 128]));
    image::imageops::overlay(
        &mut canvas,
        &small,
        ((w - sw) / 2) as i64,
        ((h - sh) / 2) as i64,
    );
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&canvas)?;
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Embed {
            load: l,
            image,
            fit,
        } => {
            let bytes = std::fs::read(image)?;
            let bytes = match fit {
                Some(size) => fitted(&bytes, &size)?,
                None => bytes,
            };
            load(l, Call::Embed(bytes), "Embed").await
        }
        Command::Detect { load: l, image } => {
            load(l, Call::Detect(std::fs::read(image)?), "Detect").await
        }
        Command::Search {
            load: l,
            dim,
            top_k,
        } => load(l, Call::Search(dim, top_k), "Search").await,
        Command::Populate {
            gallery,
            faces,
            dim,
        } => {
            tokio::task::spawn_blocking(move || {
                populate(gallery, faces, dim).map_err(|e| e.to_string())
            })
            .await??;
            Ok(())
        }
    }
}
