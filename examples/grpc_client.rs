//! A client of `arcface serve`: enrol the face in one photo, search with another, verify the
//! two, and check the server's health.
//!
//!   arcface serve --model mbf.aq8 --gallery faces.db &
//!   cargo run -p arcface-examples --example grpc_client -- alice.jpg alice2.jpg
//!
//! Any gRPC language works the same way from proto/arcface.proto.

use anyhow::{Context, Result};
use face_serve::proto::face_service_client::FaceServiceClient;
use face_serve::proto::{
    face_input::Source, EnrollRequest, FaceInput, SearchRequest, VerifyRequest,
};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

fn image(path: &str) -> Result<Option<FaceInput>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    Ok(Some(FaceInput {
        source: Some(Source::Image(bytes)),
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [first, second] = args.as_slice() else {
        anyhow::bail!("usage: grpc_client FIRST_PHOTO SECOND_PHOTO [ADDR env ARCFACE_ADDR]");
    };
    let addr = std::env::var("ARCFACE_ADDR").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let channel = tonic::transport::Channel::from_shared(addr.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;

    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "arcface.v1.FaceService".into(),
        })
        .await?
        .into_inner();
    println!("health: {:?}", health.status());

    let mut faces = FaceServiceClient::new(channel);
    let enrolled = faces
        .enroll(EnrollRequest {
            identity: first.clone(),
            metadata: String::new(),
            face: image(first)?,
        })
        .await?
        .into_inner();
    println!("enrolled {first} as face {}", enrolled.face_id);

    let found = faces
        .search(SearchRequest {
            face: image(second)?,
            top_k: 3,
        })
        .await?
        .into_inner();
    for m in &found.matches {
        println!("  {:.3}  face {}  {}", m.score, m.face_id, m.identity);
    }

    let verdict = faces
        .verify(VerifyRequest {
            a: image(first)?,
            b: image(second)?,
        })
        .await?
        .into_inner();
    println!(
        "verify: cosine {:.3} -> {} (threshold {})",
        verdict.score,
        if verdict.same {
            "same person"
        } else {
            "different people"
        },
        verdict.threshold
    );
    Ok(())
}
