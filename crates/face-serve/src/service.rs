//! The `FaceService` RPCs over a [`Pipeline`] and a [`Gallery`].

use std::sync::Arc;

use face_detect::Detection;
use face_search::{Gallery, SearchError};
use tonic::{Request, Response, Status};

use crate::batcher::{self, SearchBatcher};
use crate::pipeline::{Faces, Limits, Pipeline, PipelineError};
use crate::proto::{self, face_input::Source, face_service_server::FaceService};

/// The service: cheap to clone (shared state behind `Arc`s).
#[derive(Clone)]
pub struct FaceServer {
    pipeline: Arc<Pipeline>,
    gallery: Arc<Gallery>,
    /// Concurrent searches share one pass over the gallery.
    searcher: Arc<SearchBatcher>,
    threshold: f32,
}

impl FaceServer {
    /// `threshold`: the cosine similarity at and above which `Verify` says "same person".
    pub fn new(pipeline: Arc<Pipeline>, gallery: Arc<Gallery>, threshold: f32) -> Self {
        let window = pipeline.limits().batch_window;
        let searcher = Arc::new(batcher::searcher(gallery.clone(), 16, window));
        Self {
            pipeline,
            gallery,
            searcher,
            threshold,
        }
    }

    /// What each request may ask.
    pub fn limits(&self) -> &Limits {
        self.pipeline.limits()
    }

    /// Decode, detect and align on the blocking pool (CPU work off the async threads).
    async fn faces(
        &self,
        image: Vec<u8>,
    ) -> Result<(Faces<Detection>, Vec<image::RgbImage>), Status> {
        let pipeline = self.pipeline.clone();
        blocking(move || {
            let decoded = pipeline.decode(&image)?;
            let faces = pipeline.detect(&decoded)?;
            let crops = pipeline.align(&decoded, &faces.faces)?;
            Ok::<_, PipelineError>((faces, crops))
        })
        .await?
        .map_err(status)
    }

    /// One embedding for a `FaceInput`: the best face of an image, or a given embedding
    /// (checked and normalized).
    async fn embedding(
        &self,
        input: Option<proto::FaceInput>,
        what: &str,
    ) -> Result<Vec<f32>, Status> {
        match input.and_then(|i| i.source) {
            None => Err(Status::invalid_argument(format!(
                "{what}: no image or embedding given"
            ))),
            Some(Source::Embedding(e)) => {
                face_search::normalized(&e.values, self.pipeline.embedding_dim())
                    .map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
            }
            Some(Source::Image(bytes)) => {
                let (faces, mut crops) = self.faces(bytes).await?;
                if faces.faces.is_empty() {
                    return Err(Status::invalid_argument(format!("{what}: no face found")));
                }
                crops.truncate(1);
                let mut e = self.pipeline.embed_aligned(crops).await.map_err(status)?;
                Ok(e.remove(0))
            }
        }
    }

    async fn gallery<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Gallery) -> Result<T, SearchError> + Send + 'static,
    ) -> Result<T, Status> {
        let gallery = self.gallery.clone();
        blocking(move || f(&gallery)).await?.map_err(search_status)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))
}

fn status(e: PipelineError) -> Status {
    if e.is_bad_input() {
        Status::invalid_argument(e.to_string())
    } else {
        tracing::error!(error = %e, "pipeline");
        Status::internal(e.to_string())
    }
}

fn search_status(e: SearchError) -> Status {
    match e {
        SearchError::Dimension { .. } | SearchError::BadEmbedding(_) | SearchError::Config(_) => {
            Status::invalid_argument(e.to_string())
        }
        _ => {
            tracing::error!(error = %e, "gallery");
            Status::internal(e.to_string())
        }
    }
}

fn face(d: &Detection) -> proto::Face {
    proto::Face {
        r#box: Some(proto::Box {
            x1: d.bbox.x1,
            y1: d.bbox.y1,
            x2: d.bbox.x2,
            y2: d.bbox.y2,
        }),
        score: d.score,
        landmarks: d
            .landmarks
            .iter()
            .map(|p| proto::Point { x: p.x, y: p.y })
            .collect(),
    }
}

#[tonic::async_trait]
impl FaceService for FaceServer {
    async fn detect(
        &self,
        request: Request<proto::DetectRequest>,
    ) -> Result<Response<proto::DetectResponse>, Status> {
        let (faces, _) = self.faces(request.into_inner().image).await?;
        Ok(Response::new(proto::DetectResponse {
            faces: faces.faces.iter().map(face).collect(),
            truncated: faces.truncated,
        }))
    }

    async fn embed(
        &self,
        request: Request<proto::EmbedRequest>,
    ) -> Result<Response<proto::EmbedResponse>, Status> {
        let (faces, crops) = self.faces(request.into_inner().image).await?;
        let embeddings = self.pipeline.embed_aligned(crops).await.map_err(status)?;
        Ok(Response::new(proto::EmbedResponse {
            faces: faces
                .faces
                .iter()
                .zip(embeddings)
                .map(|(d, values)| proto::EmbeddedFace {
                    face: Some(face(d)),
                    embedding: Some(proto::Embedding { values }),
                })
                .collect(),
            truncated: faces.truncated,
        }))
    }

    async fn verify(
        &self,
        request: Request<proto::VerifyRequest>,
    ) -> Result<Response<proto::VerifyResponse>, Status> {
        let r = request.into_inner();
        let (a, b) = tokio::try_join!(self.embedding(r.a, "a"), self.embedding(r.b, "b"))?;
        let score: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        Ok(Response::new(proto::VerifyResponse {
            score,
            same: score >= self.threshold,
            threshold: self.threshold,
        }))
    }

    async fn enroll(
        &self,
        request: Request<proto::EnrollRequest>,
    ) -> Result<Response<proto::EnrollResponse>, Status> {
        let r = request.into_inner();
        if r.identity.trim().is_empty() {
            return Err(Status::invalid_argument("identity is empty"));
        }
        let embedding = self.embedding(r.face, "face").await?;
        let metadata = (!r.metadata.is_empty()).then_some(r.metadata);
        let identity = r.identity;
        let face_id = self
            .gallery(move |g| g.enroll(&identity, metadata.as_deref(), &embedding))
            .await?;
        Ok(Response::new(proto::EnrollResponse { face_id }))
    }

    async fn delete(
        &self,
        request: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        use proto::delete_request::Target;
        let deleted = match request.into_inner().target {
            None => return Err(Status::invalid_argument("no face_id or identity given")),
            Some(Target::FaceId(id)) => {
                self.gallery(move |g| g.delete(id).map(usize::from)).await?
            }
            Some(Target::Identity(identity)) => {
                self.gallery(move |g| g.delete_identity(&identity)).await?
            }
        };
        Ok(Response::new(proto::DeleteResponse {
            deleted: deleted as u32,
        }))
    }

    async fn search(
        &self,
        request: Request<proto::SearchRequest>,
    ) -> Result<Response<proto::SearchResponse>, Status> {
        let r = request.into_inner();
        let max = self.limits().max_top_k;
        let k = match r.top_k {
            0 => 10.min(max),
            k if k as usize > max => {
                return Err(Status::invalid_argument(format!(
                    "top_k {k} is above the server's limit of {max}"
                )))
            }
            k => k as usize,
        };
        let query = self.embedding(r.face, "face").await?;
        let matches = self
            .searcher
            .submit((query, k))
            .await
            .map_err(Status::internal)?
            .map_err(search_status)?;
        Ok(Response::new(proto::SearchResponse {
            matches: matches
                .into_iter()
                .map(|m| proto::Match {
                    face_id: m.face_id,
                    identity: m.identity,
                    metadata: m.metadata.unwrap_or_default(),
                    score: m.score,
                })
                .collect(),
        }))
    }
}
