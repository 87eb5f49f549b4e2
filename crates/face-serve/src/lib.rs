//! The arcface-rs gRPC face service (`proto/arcface.proto`): `Detect`, `Embed`, `Verify`,
//! `Enroll`, `Delete`, `Search`, beside the standard health service (`grpc.health.v1`) and
//! server reflection.
//!
//! Any [`FaceDetector`](face_detect::FaceDetector) and [`Embedder`](face_embed::Embedder) plug in:
//! detection runs on the blocking pool under a lock, embedding on one worker thread that batches
//! the faces of concurrent requests ([`batcher`]). Requests are bounded: message size, image
//! dimensions, faces per image, results per search, a deadline and a concurrency limit
//! ([`Limits`]). Bad input answers `INVALID_ARGUMENT` with the reason; nothing a client sends
//! panics the server.

pub mod batcher;
pub mod pipeline;
mod service;

use std::future::Future;
use std::time::Duration;

pub use pipeline::{Limits, Pipeline, PipelineError};
pub use service::FaceServer;

/// Generated protobuf types, server and client (documented in `proto/arcface.proto`, which
/// prost does not copy onto every generated item).
#[allow(missing_docs)]
pub mod proto {
    tonic::include_proto!("arcface.v1");

    /// The compiled `arcface.proto`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/arcface_descriptor.bin"));
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// Binding or reading the socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The listener failed to accept.
    #[error("listener: {0}")]
    Incoming(Box<dyn std::error::Error + Send + Sync>),
}

/// Serves `server` on `listener` until `shutdown` completes, then finishes the requests in
/// flight (graceful shutdown) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: FaceServer,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let limits = server.limits().clone();
    let (mut reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<proto::face_service_server::FaceServiceServer<FaceServer>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let faces = proto::face_service_server::FaceServiceServer::new(server)
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes);
    tracing::info!(addr = ?listener.local_addr()?, "serving");
    tonic::transport::Server::builder()
        .timeout(limits.deadline)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            limits.concurrency,
        ))
        .add_service(health)
        .add_service(reflection)
        .add_service(faces)
        .serve_with_incoming_shutdown(
            // TCP_NODELAY: without it small responses wait for the peer's delayed ACK (~40 ms
            // per call on loopback, measured).
            tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
                .map_err(ServeError::Incoming)?,
            shutdown,
        )
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (what `docker stop` sends).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Default deadline for a request without its own (`grpc-timeout`).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
