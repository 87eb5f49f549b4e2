//! The `FaceDataset` trait every source implements.

use std::path::PathBuf;

use image::RgbImage;

use crate::error::{DataError, Result};

/// One sample: a decoded RGB face and its identity.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceSample {
    /// The decoded face.
    pub image: RgbImage,
    /// Its identity, `0..num_identities`.
    pub label: usize,
}

/// A labelled face dataset with random access.
pub trait FaceDataset: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of identities; labels are `0..num_identities()`.
    fn num_identities(&self) -> usize;

    /// The identity of sample `index`, without decoding its image (samplers use this).
    fn label(&self, index: usize) -> Result<usize>;

    /// Sample `index`, decoded.
    fn get(&self, index: usize) -> Result<FaceSample>;

    /// Where the data lives, for error messages and reports.
    fn source(&self) -> PathBuf;

    /// `Err(OutOfRange)` unless `index < len()`.
    fn check_index(&self, index: usize) -> Result<()> {
        if index < self.len() {
            Ok(())
        } else {
            Err(DataError::OutOfRange {
                index,
                len: self.len(),
            })
        }
    }
}

/// A dataset chosen at run time (`Box<dyn FaceDataset>`) is a dataset too.
impl<D: FaceDataset + ?Sized> FaceDataset for Box<D> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn num_identities(&self) -> usize {
        (**self).num_identities()
    }
    fn label(&self, index: usize) -> Result<usize> {
        (**self).label(index)
    }
    fn get(&self, index: usize) -> Result<FaceSample> {
        (**self).get(index)
    }
    fn source(&self) -> PathBuf {
        (**self).source()
    }
}

/// Decodes encoded image bytes (JPEG, PNG, BMP) to RGB, naming the source on failure. A JPEG
/// without its end-of-image marker is refused: decoders fill a truncated file's missing part
/// with grey rather than failing, and that would train on half a face. Images past
/// `face_pipeline::DEFAULT_MAX_PIXELS` are refused from their header.
pub fn decode(bytes: &[u8], path: &std::path::Path, index: usize) -> Result<RgbImage> {
    if bytes.starts_with(&[0xFF, 0xD8]) {
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        let tail = &bytes[end.saturating_sub(64)..end];
        if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
            return Err(DataError::Decode {
                path: path.to_path_buf(),
                index,
                reason: "truncated JPEG (no end-of-image marker)".into(),
            });
        }
    }
    // Bounded like every photo (face_pipeline's default): a record can declare a huge image.
    face_pipeline::decode_photo(bytes, face_pipeline::PhotoLimits::default()).map_err(|e| {
        DataError::Decode {
            path: path.to_path_buf(),
            index,
            reason: e.to_string(),
        }
    })
}

/// Lossless PNG bytes of an image (what the synthetic set is written and packed as).
pub fn encode_png(image: &RgbImage) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| DataError::Config {
            what: "PNG encoding",
            reason: e.to_string(),
        })?;
    Ok(out.into_inner())
}
