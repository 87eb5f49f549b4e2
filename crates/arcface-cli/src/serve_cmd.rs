//! `arcface serve`: the gRPC face service (crates/face-serve).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use face_search::{Gallery, GalleryConfig, IndexKind, IvfConfig, Precision};
use face_serve::Limits;
use iresnet::ConvBackend;

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  \
    arcface serve --model mbf.aq8 --gallery faces.db --addr 127.0.0.1:50051\n\n\
    Clients: proto/arcface.proto (any gRPC language), `cargo run -p arcface-examples --example \
    grpc_client`, grpcurl through server reflection. Health: grpc.health.v1.\n\
    Stop with Ctrl-C or SIGTERM: requests in flight finish first.")]
pub struct ServeArgs {
    #[command(flatten)]
    detector: crate::faces::DetectorChoice,
    /// Embedding model: a model file (`arcface import`, `arcface train`) or an int8 `.aq8`
    /// (`arcface quantize`) [default: insightface's w600k_mbf as `arcface fetch` imports it].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Gallery: a SQLite file (created when missing), or a PostgreSQL database that several
    /// replicas share, `postgres://USER@HOST:PORT/DB` (each keeps its own in-memory index and
    /// follows the enrolments and deletions made through the others; docs/scaling.md).
    #[arg(long, value_name = "FILE_OR_URL")]
    gallery: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// Cosine similarity at and above which `Verify` answers "same person".
    #[arg(long, default_value_t = 0.3)]
    threshold: f32,
    /// How the in-memory search index stores embeddings: f32, f16, int8, or sq4 (a 4-bit
    /// first pass, then the best candidates rescored on f16 rows: the fastest single query).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Search through IVF cells (approximate; for galleries past a few million) with this many
    /// cells; exact search without it.
    #[arg(long)]
    ivf_cells: Option<usize>,
    /// IVF cells searched per query.
    #[arg(long, default_value_t = 32, requires = "ivf_cells")]
    ivf_probe: usize,
    /// Largest request or response, in MiB.
    #[arg(long, default_value_t = 16)]
    max_message_mb: usize,
    /// Largest image side accepted, in pixels.
    #[arg(long, default_value_t = 4096)]
    max_image_side: u32,
    /// Faces returned per image (the best ones).
    #[arg(long, default_value_t = 32)]
    max_faces: usize,
    /// Largest top_k of a search.
    #[arg(long, default_value_t = 100)]
    max_top_k: usize,
    /// Deadline for requests that bring none, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    deadline_ms: u64,
    /// Requests processed at once (more wait their turn).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Faces embedded per call at most.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// How long the embedding worker waits to fill a batch, in milliseconds.
    #[arg(long, default_value_t = 2)]
    batch_window_ms: u64,
}

pub fn run<B: ConvBackend>(args: &ServeArgs, device: &B::Device) -> Result<()> {
    let detector = args.detector.load::<B>(device)?;
    let model = face_models::cache::model(args.model.as_deref())?;
    let embedder = crate::eval_cmd::load_embedder::<B>(&model, device)?;
    let dim = embedder.embedding_dim();
    let index = match args.ivf_cells {
        Some(nlist) => IndexKind::Ivf(IvfConfig {
            nlist,
            nprobe: args.ivf_probe,
            ..IvfConfig::default()
        }),
        None => IndexKind::Exact,
    };
    let gallery = Gallery::open_location(
        &args.gallery,
        GalleryConfig {
            dim,
            precision: args.precision,
            index,
        },
    )
    .with_context(|| format!("opening the gallery {}", args.gallery))?;
    eprintln!(
        "gallery {}: {} faces; model {} (D={dim}); listening on {}",
        gallery.location(),
        gallery.len(),
        model.display(),
        args.addr
    );
    let limits = Limits {
        max_message_bytes: args.max_message_mb << 20,
        max_image_side: args.max_image_side,
        max_faces: args.max_faces,
        max_top_k: args.max_top_k,
        deadline: Duration::from_millis(args.deadline_ms),
        concurrency: args.concurrency,
        max_batch: args.max_batch,
        batch_window: Duration::from_millis(args.batch_window_ms),
    };
    let pipeline = face_serve::Pipeline::new(detector, embedder, limits);
    let server = face_serve::FaceServer::new(pipeline, Arc::new(gallery), args.threshold);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("listening on {}", args.addr))?;
        face_serve::serve(listener, server, face_serve::shutdown_signal()).await?;
        eprintln!("stopped");
        Ok(())
    })
}
