//! The face service on the int8 CPU engine, built without Burn: `.aq8` models from
//! `arcface quantize`, and faces that arrive already aligned to 112x112 (clients or cameras that
//! align upstream; other images have no face). `arcface serve` is the full service (RetinaFace
//! detection, Burn or int8 models); this one is for small deployments.
//!
//!   cargo build --release -p face-serve --features int8 --bin face-serve-int8
//!   face-serve-int8 --model m.aq8 --gallery faces.db --addr 127.0.0.1:50051

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use face_search::{Gallery, GalleryConfig};
use face_serve::{FaceServer, Limits, Pipeline};

#[derive(Parser)]
#[command(
    about = "arcface's gRPC face service on the int8 engine, for aligned 112x112 faces, without Burn"
)]
struct Cli {
    /// An int8 model from `arcface quantize`.
    #[arg(long)]
    model: PathBuf,
    /// Gallery: a SQLite file (created when missing) or a `postgres://` URL shared by replicas.
    #[arg(long)]
    gallery: String,
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// Cosine similarity at and above which `Verify` says "same person".
    #[arg(long, default_value_t = 0.3)]
    threshold: f32,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let model = quantize::QuantizedModel::load(&cli.model)?;
    let engine = model.engine()?;
    let dim = face_embed::Embedder::embedding_dim(&engine);
    let gallery = Gallery::open_location(&cli.gallery, GalleryConfig::new(dim))?;
    eprintln!(
        "gallery {}: {} faces; int8 model {} (D={dim}); listening on {}",
        gallery.location(),
        gallery.len(),
        cli.model.display(),
        cli.addr
    );
    let pipeline = Pipeline::new(
        Box::new(face_detect::AlignedFaces),
        Box::new(engine),
        Limits::default(),
    );
    let server = FaceServer::new(pipeline, Arc::new(gallery), cli.threshold);
    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(cli.addr).await?;
        face_serve::serve(listener, server, face_serve::shutdown_signal()).await?;
        Ok(())
    })
}
