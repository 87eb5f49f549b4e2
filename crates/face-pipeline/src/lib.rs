//! Photos to faces to embeddings: decode within limits ([`decode_photo`]), detect
//! ([`FaceDetector`]), align to the ArcFace template, embed ([`Embedder`]). The CLI (`arcface align`, `arcface embed --detect`) and the gRPC
//! service run this one pipeline, with any detector and any embedder, Burn or not.
//!
//! ```no_run
//! # fn demo(detector: impl face_detect::FaceDetector, embedder: impl face_embed::Embedder) {
//! use face_pipeline::FacePipeline;
//! let pipeline = FacePipeline::new(detector, embedder);
//! let photo = image::open("group.jpg").unwrap().to_rgb8();
//! for face in pipeline.run(&photo).unwrap().faces {
//!     println!("{:?} {:.3}", face.detection.bbox, face.embedding[0]);
//! }
//! # }
//! ```

mod photo;

pub use photo::{decode_photo, read_photo, PhotoError, PhotoLimits, DEFAULT_MAX_PIXELS};

use face_align::{align_face, Interpolation, Template};
use face_detect::{Detection, FaceDetector};
use face_embed::Embedder;
use image::RgbImage;

/// Why a photo could not be turned into faces or embeddings.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The detector failed or panicked.
    #[error("detection failed: {0}")]
    Detect(String),
    /// A face's landmarks give no usable alignment (degenerate or far off the photo).
    #[error("alignment failed: {0}")]
    Align(String),
    /// The embedder failed or returned a missing, non-finite or zero embedding.
    #[error("embedding failed: {0}")]
    Embed(String),
}

/// What was found in one photo, best first.
#[derive(Debug, Clone)]
pub struct Faces<T> {
    /// The faces kept, best first.
    pub faces: Vec<T>,
    /// More faces were found than the pipeline keeps (`max_faces`).
    pub truncated: bool,
}

/// A detected face, its aligned crop and its L2-normalized embedding.
#[derive(Debug, Clone)]
pub struct EmbeddedFace {
    /// Box, score and landmarks on the photo.
    pub detection: Detection,
    /// The face aligned to the template.
    pub crop: RgbImage,
    /// The crop's embedding, L2-normalized.
    pub embedding: Vec<f32>,
}

/// Detection and alignment: the half of the pipeline that needs no embedder (`arcface align`
/// writes its crops; the service batches its embeddings across requests).
#[derive(Debug, Clone)]
pub struct FaceFinder<D> {
    detector: D,
    template: Template,
    max_faces: usize,
}

impl<D: FaceDetector> FaceFinder<D> {
    /// 112x112 crops, every face kept.
    pub fn new(detector: D) -> Self {
        Self {
            detector,
            template: Template::arcface(112).expect("112 is the ArcFace size"),
            max_faces: usize::MAX,
        }
    }

    /// Crops of another size: a multiple of 112 or 128 ([`Template::arcface`]).
    pub fn with_template(mut self, template: Template) -> Self {
        self.template = template;
        self
    }

    /// Keeps the best `max_faces` faces of a photo.
    pub fn with_max_faces(mut self, max_faces: usize) -> Self {
        self.max_faces = max_faces;
        self
    }

    /// The detector, e.g. to read its configuration.
    pub fn detector(&self) -> &D {
        &self.detector
    }

    /// Faces in `image`, best first, at most `max_faces`. A detector that panics is reported
    /// as an error, so one bad photo does not take a server or a batch job down.
    pub fn detect(&self, image: &RgbImage) -> Result<Faces<Detection>, PipelineError> {
        let found =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.detector.detect(image)))
                .map_err(|_| PipelineError::Detect("the detector panicked".into()))?;
        let mut faces = found.map_err(|e| PipelineError::Detect(e.to_string()))?;
        faces.sort_by(|a, b| b.score.total_cmp(&a.score));
        let truncated = faces.len() > self.max_faces;
        faces.truncate(self.max_faces);
        Ok(Faces { faces, truncated })
    }

    /// The crop of one detection, aligned to the template by its five landmarks.
    pub fn align_one(
        &self,
        image: &RgbImage,
        detection: &Detection,
    ) -> Result<RgbImage, PipelineError> {
        align_face(
            image,
            &detection.landmarks,
            &self.template,
            Interpolation::Bilinear,
        )
        .map(|a| a.image)
        .map_err(|e| PipelineError::Align(e.to_string()))
    }

    /// Crops of every detection; the first that cannot be aligned is the error.
    pub fn align(
        &self,
        image: &RgbImage,
        detections: &[Detection],
    ) -> Result<Vec<RgbImage>, PipelineError> {
        detections
            .iter()
            .map(|d| self.align_one(image, d))
            .collect()
    }
}

/// L2-normalized embeddings of aligned crops; a missing embedding, or one that is not finite,
/// is zero or has the wrong size, is an error rather than a silently wrong vector.
pub fn embed_crops(
    embedder: &(impl Embedder + ?Sized),
    crops: &[RgbImage],
) -> Result<Vec<Vec<f32>>, PipelineError> {
    if crops.is_empty() {
        return Ok(Vec::new());
    }
    let raw = embedder
        .embed(crops)
        .map_err(|e| PipelineError::Embed(e.to_string()))?;
    normalized_embeddings(&raw, crops.len(), embedder.embedding_dim())
}

/// An embedder's raw output for `faces` crops, checked (one finite, non-zero, `dim`-sized vector
/// per face) and L2-normalized: what is stored, searched and returned. The service, which
/// batches its embedder across requests, checks each request's share with this too.
pub fn normalized_embeddings(
    raw: &[Vec<f32>],
    faces: usize,
    dim: usize,
) -> Result<Vec<Vec<f32>>, PipelineError> {
    if raw.len() != faces {
        return Err(PipelineError::Embed(format!(
            "the embedder returned {} embeddings for {faces} faces",
            raw.len()
        )));
    }
    raw.iter()
        .map(|v| face_embed::normalized(v, dim).map_err(|e| PipelineError::Embed(e.to_string())))
        .collect()
}

/// The whole pipeline: a [`FaceFinder`] and an embedder.
#[derive(Debug, Clone)]
pub struct FacePipeline<D, E> {
    finder: FaceFinder<D>,
    embedder: E,
}

impl<D: FaceDetector, E: Embedder> FacePipeline<D, E> {
    /// 112x112 crops (what every embedder takes), every face kept.
    pub fn new(detector: D, embedder: E) -> Self {
        Self::from_finder(FaceFinder::new(detector), embedder)
    }

    /// A pipeline on a configured finder (crop size, `max_faces`).
    pub fn from_finder(finder: FaceFinder<D>, embedder: E) -> Self {
        Self { finder, embedder }
    }

    /// The detect-and-align half.
    pub fn finder(&self) -> &FaceFinder<D> {
        &self.finder
    }

    /// The embedder, e.g. for its embedding size.
    pub fn embedder(&self) -> &E {
        &self.embedder
    }

    /// Every face of `image` (best first), aligned and embedded.
    pub fn run(&self, image: &RgbImage) -> Result<Faces<EmbeddedFace>, PipelineError> {
        // The crops stay one slice (what `Embedder::embed` takes) and move into the faces after.
        let found = self.finder.detect(image)?;
        let crops = self.finder.align(image, &found.faces)?;
        let embeddings = embed_crops(&self.embedder, &crops)?;
        let faces = (found.faces.into_iter().zip(crops).zip(embeddings))
            .map(|((detection, crop), embedding)| EmbeddedFace {
                detection,
                crop,
                embedding,
            })
            .collect();
        Ok(Faces {
            faces,
            truncated: found.truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use face_detect::{AlignedFaces, DetectError};

    /// Embeds a crop as its mean red, green and blue (enough to tell crops apart).
    struct MeanColour;
    impl Embedder for MeanColour {
        fn embedding_dim(&self) -> usize {
            3
        }
        fn embed(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, face_embed::EmbedError> {
            Ok(faces
                .iter()
                .map(|f| {
                    let mut sum = [0f32; 3];
                    for p in f.pixels() {
                        (0..3).for_each(|c| sum[c] += p[c] as f32);
                    }
                    sum.to_vec()
                })
                .collect())
        }
    }

    /// Three faces, reported worst first, anywhere in the photo.
    struct ThreeFaces;
    impl FaceDetector for ThreeFaces {
        fn detect(&self, _: &RgbImage) -> Result<Vec<Detection>, DetectError> {
            let face = AlignedFaces.detect(&RgbImage::new(112, 112))?.remove(0);
            Ok([0.2, 0.9, 0.5]
                .iter()
                .map(|&score| Detection {
                    score,
                    ..face.clone()
                })
                .collect())
        }
    }

    struct Panics;
    impl FaceDetector for Panics {
        fn detect(&self, _: &RgbImage) -> Result<Vec<Detection>, DetectError> {
            panic!("a detector bug")
        }
    }

    fn reddish() -> RgbImage {
        RgbImage::from_fn(112, 112, |x, _| image::Rgb([200, (x % 7) as u8, 10]))
    }

    #[test]
    fn an_aligned_face_comes_back_as_itself_and_embedded() {
        let face = reddish();
        let out = FacePipeline::new(AlignedFaces, MeanColour)
            .run(&face)
            .unwrap();
        assert_eq!(out.faces.len(), 1);
        assert!(!out.truncated);
        let found = &out.faces[0];
        // The template's landmarks map onto themselves: the crop is the photo.
        let diff = found
            .crop
            .pixels()
            .zip(face.pixels())
            .map(|(a, b)| (a[0] as i32 - b[0] as i32).abs())
            .max()
            .unwrap();
        assert!(diff <= 1, "crop differs by {diff}");
        let n: f32 = found.embedding.iter().map(|v| v * v).sum();
        assert!((n - 1.0).abs() < 1e-5, "not L2-normalized: {n}");
        assert!(found.embedding[0] > 0.99, "{:?}", found.embedding);
    }

    #[test]
    fn faces_come_best_first_and_are_cut_to_max_faces() {
        let finder = FaceFinder::new(ThreeFaces).with_max_faces(2);
        let found = finder.detect(&reddish()).unwrap();
        let scores: Vec<f32> = found.faces.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.5]);
        assert!(found.truncated);
    }

    /// Fails whenever it is called.
    struct Refuses;
    impl Embedder for Refuses {
        fn embedding_dim(&self) -> usize {
            3
        }
        fn embed(&self, _: &[RgbImage]) -> Result<Vec<Vec<f32>>, face_embed::EmbedError> {
            Err(face_embed::EmbedError::Model("called without faces".into()))
        }
    }

    #[test]
    fn a_photo_without_faces_gives_no_faces_and_no_embedder_call() {
        let out = FacePipeline::new(AlignedFaces, Refuses)
            .run(&RgbImage::new(640, 480))
            .unwrap();
        assert!(out.faces.is_empty());
    }

    #[test]
    fn a_panicking_detector_is_an_error() {
        let err = FaceFinder::new(Panics).detect(&reddish()).unwrap_err();
        assert!(
            matches!(err, PipelineError::Detect(ref m) if m.contains("panicked")),
            "{err}"
        );
    }

    #[test]
    fn a_black_crop_embeds_to_zero_and_is_refused() {
        let err = FacePipeline::new(AlignedFaces, MeanColour)
            .run(&RgbImage::new(112, 112))
            .unwrap_err();
        assert!(
            matches!(err, PipelineError::Embed(ref m) if m.contains("zero")),
            "{err}"
        );
    }
}
