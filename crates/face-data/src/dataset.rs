//! The `FaceDataset` trait every source implements.

use std::path::PathBuf;

use image::{GrayImage, RgbImage};

use crate::error::{DataError, Result};

/// One sample: a decoded RGB face and its identity, with the near-infrared and depth images of
/// the same moment when the dataset carries them (`docs/multimodal.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct FaceSample {
    /// The decoded face.
    pub image: RgbImage,
    /// Its identity, `0..num_identities`.
    pub label: usize,
    /// The near-infrared image, same size.
    pub nir: Option<GrayImage>,
    /// The depth map, same size (nearer is brighter, 0 = no reading).
    pub depth: Option<GrayImage>,
}

impl FaceSample {
    /// An RGB-only sample.
    pub fn new(image: RgbImage, label: usize) -> Self {
        Self {
            image,
            label,
            nir: None,
            depth: None,
        }
    }
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

    /// The name of identity `label`, when the source names its identities (folder names, a
    /// `.rec`'s `names.json`, the synthetic set's people): how datasets are merged and how
    /// continual learning recognises people it already knows. `None` by default.
    fn identity_name(&self, label: usize) -> Option<String> {
        let _ = label;
        None
    }

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
    fn identity_name(&self, label: usize) -> Option<String> {
        (**self).identity_name(label)
    }
}

/// Each identity's sample indices, in label order (without decoding an image); a label past
/// `num_identities` is an error naming the sample.
pub fn by_identity<D: FaceDataset + ?Sized>(data: &D) -> Result<Vec<Vec<usize>>> {
    let n = data.num_identities();
    let mut groups = vec![Vec::new(); n];
    for i in 0..data.len() {
        let label = data.label(i)?;
        groups
            .get_mut(label)
            .ok_or_else(|| DataError::Config {
                what: "dataset",
                reason: format!(
                    "{}: sample {i} has label {label} >= {n} identities",
                    data.source().display()
                ),
            })?
            .push(i);
    }
    Ok(groups)
}

/// The images of samples `indices`, decoded on rayon's threads, in order: what embedding a
/// dataset's faces in batches needs.
pub fn images<D: FaceDataset + ?Sized>(data: &D, indices: &[usize]) -> Result<Vec<RgbImage>> {
    use rayon::prelude::*;
    (indices.par_iter())
        .map(|&i| data.get(i).map(|s| s.image))
        .collect()
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

/// Lossless PNG bytes of an image, RGB or grey (what the synthetic set is written and packed
/// as).
pub fn encode_png<P>(image: &image::ImageBuffer<P, Vec<u8>>) -> Result<Vec<u8>>
where
    P: image::PixelWithColorType<Subpixel = u8>,
{
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| DataError::Config {
            what: "PNG encoding",
            reason: e.to_string(),
        })?;
    Ok(out.into_inner())
}
