//! Image bytes to faces: decode (bounded), then the shared `face_pipeline` (detect, align to
//! the ArcFace template) and embedding batched across requests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use face_detect::{Detection, FaceDetector};
use face_embed::Embedder;
pub use face_pipeline::Faces;
use face_pipeline::{decode_photo, FaceFinder, PhotoError, PhotoLimits};
use image::RgbImage;

use crate::batcher::{self, EmbedBatcher};

/// What one request may ask of the server.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Largest request or response message.
    pub max_message_bytes: usize,
    /// Largest decoded image side, in pixels.
    pub max_image_side: u32,
    /// Faces returned per image (the best ones; the response says when there were more).
    pub max_faces: usize,
    /// Largest `top_k` of a search.
    pub max_top_k: usize,
    /// Deadline for requests that do not bring their own (`grpc-timeout`).
    pub deadline: Duration,
    /// Requests processed at once; more wait.
    pub concurrency: usize,
    /// Faces embedded per call at most.
    pub max_batch: usize,
    /// How long the batcher waits for more faces before it runs a batch.
    pub batch_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 << 20,
            max_image_side: 4096,
            max_faces: 32,
            max_top_k: 100,
            deadline: crate::DEFAULT_DEADLINE,
            concurrency: 64,
            max_batch: 32,
            batch_window: Duration::from_millis(2),
        }
    }
}

/// Why an image could not be turned into faces.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The request carried no bytes.
    #[error("empty image")]
    Empty,
    /// The bytes are no image the server decodes.
    #[error("not an image the server reads (PNG, JPEG, BMP): {0}")]
    Decode(String),
    /// The image is larger than `max_image_side` (checked before decoding its pixels).
    #[error("image is {width}x{height}; the server takes at most {max} pixels a side")]
    TooLarge {
        /// The image's width.
        width: u32,
        /// The image's height.
        height: u32,
        /// The limit.
        max: u32,
    },
    /// The request needs a face and the image has none.
    #[error("no face found")]
    NoFace,
    /// Detection, alignment or embedding failed.
    #[error(transparent)]
    Faces(#[from] face_pipeline::PipelineError),
}

impl PipelineError {
    /// Bad input (the client's to fix) as opposed to a server-side failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::Empty
                | Self::Decode(_)
                | Self::TooLarge { .. }
                | Self::NoFace
                | Self::Faces(face_pipeline::PipelineError::Align(_))
        )
    }
}

/// The shared detector and aligner, and the batched embedder, used by every request.
pub struct Pipeline {
    finder: Mutex<FaceFinder<Box<dyn FaceDetector + Send>>>,
    batcher: EmbedBatcher,
    dim: usize,
    limits: Limits,
}

impl Pipeline {
    /// The pipeline, with its embedding batcher started.
    pub fn new(
        detector: Box<dyn FaceDetector + Send>,
        embedder: Box<dyn Embedder + Send>,
        limits: Limits,
    ) -> Arc<Self> {
        let dim = embedder.embedding_dim();
        let finder = FaceFinder::new(detector).with_max_faces(limits.max_faces);
        Arc::new(Self {
            finder: Mutex::new(finder),
            batcher: batcher::embedder(embedder, limits.max_batch, limits.batch_window),
            dim,
            limits,
        })
    }

    /// What each request may ask.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The embedder's size.
    pub fn embedding_dim(&self) -> usize {
        self.dim
    }

    /// Decodes `bytes`, refusing empty input, unknown formats and images past the size limit
    /// before decoding the pixels (the shared `face_pipeline::decode_photo`).
    pub fn decode(&self, bytes: &[u8]) -> Result<RgbImage, PipelineError> {
        let max = self.limits.max_image_side;
        let limits = PhotoLimits {
            max_side: Some(max),
            max_pixels: u64::from(max) * u64::from(max),
        };
        decode_photo(bytes, limits).map_err(|e| match e {
            PhotoError::Empty => PipelineError::Empty,
            PhotoError::TooLarge { width, height, .. } => {
                PipelineError::TooLarge { width, height, max }
            }
            PhotoError::Decode(m) => PipelineError::Decode(m),
            PhotoError::Io(e) => PipelineError::Decode(e.to_string()),
        })
    }

    /// Faces in `image`, best first, at most `max_faces`.
    pub fn detect(&self, image: &RgbImage) -> Result<Faces<Detection>, PipelineError> {
        Ok(self.finder().detect(image)?)
    }

    /// Aligned 112x112 crops of `faces`.
    pub fn align(
        &self,
        image: &RgbImage,
        faces: &[Detection],
    ) -> Result<Vec<RgbImage>, PipelineError> {
        Ok(self.finder().align(image, faces)?)
    }

    fn finder(&self) -> std::sync::MutexGuard<'_, FaceFinder<Box<dyn FaceDetector + Send>>> {
        self.finder.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// L2-normalized embeddings of aligned crops, batched with other requests'.
    pub async fn embed_aligned(
        &self,
        crops: Vec<RgbImage>,
    ) -> Result<Vec<Vec<f32>>, PipelineError> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let count = crops.len();
        let raw = self
            .batcher
            .submit(crops)
            .await
            .map_err(face_pipeline::PipelineError::Embed)?;
        Ok(face_pipeline::normalized_embeddings(&raw, count, self.dim)?)
    }
}
