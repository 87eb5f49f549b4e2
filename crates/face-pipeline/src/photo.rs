//! Photos from bytes or files, bounded before any pixel is decoded: a small file can declare
//! a huge image (a 420 KB PNG of 12000 x 12000 pixels decodes to 432 MB, and detecting on it
//! takes many GB), so the header's size is checked first.

use std::io::Cursor;
use std::path::Path;

use image::{ImageDecoder, RgbImage};

/// The largest photo every command takes by default: 50 megapixels (an 8000 x 6000 camera
/// photo); `--max-pixels` raises it.
pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;

/// What a photo may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhotoLimits {
    /// Width times height at most.
    pub max_pixels: u64,
    /// Each side at most, if set (the service's `max_image_side`).
    pub max_side: Option<u32>,
}

impl Default for PhotoLimits {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_side: None,
        }
    }
}

impl PhotoLimits {
    /// At most `max_pixels` pixels, any shape.
    pub fn pixels(max_pixels: u64) -> Self {
        Self {
            max_pixels,
            max_side: None,
        }
    }
}

/// Why bytes are not a photo we take.
#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    /// No bytes at all.
    #[error("empty image")]
    Empty,
    /// Not PNG, JPEG or BMP, or damaged.
    #[error("not an image arcface-rs reads (PNG, JPEG, BMP): {0}")]
    Decode(String),
    /// Larger than the limits (found in the header, before decoding).
    #[error("image is {width}x{height}, past the limit of {limit}")]
    TooLarge {
        /// The header's width.
        width: u32,
        /// The header's height.
        height: u32,
        /// The limit it broke, in words (raise it with `--max-pixels`).
        limit: String,
    },
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Decodes `bytes` as RGB after checking the declared size against `limits`.
pub fn decode_photo(bytes: &[u8], limits: PhotoLimits) -> Result<RgbImage, PhotoError> {
    if bytes.is_empty() {
        return Err(PhotoError::Empty);
    }
    let decode = |e: image::ImageError| PhotoError::Decode(e.to_string());
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PhotoError::Decode(e.to_string()))?;
    if reader.format().is_none() {
        return Err(PhotoError::Decode("unknown format".into()));
    }
    // One decoder: its header gives the size, checked before any pixel is decoded.
    let decoder = reader.into_decoder().map_err(decode)?;
    let (width, height) = decoder.dimensions();
    let too_large = |limit: String| PhotoError::TooLarge {
        width,
        height,
        limit,
    };
    if width == 0 || height == 0 {
        return Err(too_large("a positive size".into()));
    }
    if let Some(side) = limits.max_side.filter(|&s| width > s || height > s) {
        return Err(too_large(format!("{side} pixels a side")));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(too_large(format!(
            "{} pixels (--max-pixels)",
            limits.max_pixels
        )));
    }
    // `into_rgb8` moves an RGB image out instead of copying it (the common case, and the
    // training loader's hot path).
    Ok(image::DynamicImage::from_decoder(decoder)
        .map_err(decode)?
        .into_rgb8())
}

/// Reads and decodes the photo at `path` within `limits`.
pub fn read_photo(path: &Path, limits: PhotoLimits) -> Result<RgbImage, PhotoError> {
    decode_photo(&std::fs::read(path)?, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        RgbImage::new(width, height)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn sizes_are_checked_before_decoding() {
        let bytes = png(40, 30);
        assert_eq!(
            decode_photo(&bytes, PhotoLimits::pixels(1200))
                .unwrap()
                .dimensions(),
            (40, 30)
        );
        let err = decode_photo(&bytes, PhotoLimits::pixels(1199)).unwrap_err();
        assert!(
            matches!(
                err,
                PhotoError::TooLarge {
                    width: 40,
                    height: 30,
                    ..
                }
            ),
            "{err}"
        );
        let side = PhotoLimits {
            max_side: Some(35),
            ..PhotoLimits::default()
        };
        assert!(matches!(
            decode_photo(&bytes, side),
            Err(PhotoError::TooLarge { .. })
        ));
        assert!(matches!(decode_photo(&[], side), Err(PhotoError::Empty)));
        assert!(matches!(
            decode_photo(b"not an image", side),
            Err(PhotoError::Decode(_))
        ));
    }

    /// A PNG whose header declares 12000 x 12000 pixels over a few hundred bytes of data:
    /// refused from the header, with no 432 MB allocation.
    #[test]
    fn a_tiny_file_declaring_a_huge_image_is_refused_from_its_header() {
        let mut bytes = png(1, 1);
        // IHDR's width and height follow the 8-byte signature, the chunk length and "IHDR".
        bytes[16..20].copy_from_slice(&12000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&12000u32.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode_photo(&bytes, PhotoLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                PhotoError::TooLarge {
                    width: 12000,
                    height: 12000,
                    ..
                }
            ),
            "{err}"
        );
    }

    /// PNG's CRC-32 (the IEEE polynomial), so the forged header passes the decoder's check.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
