//! What flows through a pipeline: an 8-bit RGB image until `ToTensor`, an f32 CHW tensor after.

use image::RgbImage;

use crate::error::AugmentError;

/// A 3 x H x W f32 tensor, channel-major like PyTorch's.
#[derive(Debug, Clone, PartialEq)]
pub struct Chw {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `3 * height * width` values, channel-major.
    pub data: Vec<f32>,
}

impl Chw {
    /// A tensor of `data`, which must hold `3 * height * width` values.
    pub fn new(height: usize, width: usize, data: Vec<f32>) -> Result<Self, AugmentError> {
        let expected = 3 * height * width;
        if data.len() != expected {
            return Err(AugmentError::TensorShape {
                shape: [3, height, width],
                len: data.len(),
                expected,
            });
        }
        if height == 0 || width == 0 {
            return Err(AugmentError::EmptyImage(width as u32, height as u32));
        }
        Ok(Self {
            height,
            width,
            data,
        })
    }

    /// Channel `c` as a slice of `H * W` values.
    pub fn channel(&self, c: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.data[c * n..(c + 1) * n]
    }
}

/// The value a transform receives and returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// Before `ToTensor`: 8-bit RGB.
    Image(RgbImage),
    /// After `ToTensor`: f32 CHW.
    Tensor(Chw),
}

impl Sample {
    pub(crate) fn into_image(self, transform: &'static str) -> Result<RgbImage, AugmentError> {
        match self {
            Sample::Image(img) => Ok(img),
            Sample::Tensor(_) => Err(AugmentError::Stage {
                transform,
                expected: "8-bit images",
                where_: "before ToTensor",
            }),
        }
    }

    pub(crate) fn into_tensor(self, transform: &'static str) -> Result<Chw, AugmentError> {
        match self {
            Sample::Tensor(t) => Ok(t),
            Sample::Image(_) => Err(AugmentError::Stage {
                transform,
                expected: "tensors",
                where_: "after ToTensor",
            }),
        }
    }
}

/// An image from raw interleaved bytes with `channels` per pixel: 3 is taken as RGB, anything
/// else is an error (not a panic), as is an empty image.
pub fn rgb_from_raw(
    width: u32,
    height: u32,
    channels: usize,
    bytes: Vec<u8>,
) -> Result<RgbImage, AugmentError> {
    if width == 0 || height == 0 {
        return Err(AugmentError::EmptyImage(width, height));
    }
    if channels != 3 {
        return Err(AugmentError::Channels(channels));
    }
    let expected = width as usize * height as usize * 3;
    if bytes.len() != expected {
        return Err(AugmentError::TensorShape {
            shape: [3, height as usize, width as usize],
            len: bytes.len(),
            expected,
        });
    }
    Ok(RgbImage::from_raw(width, height, bytes).expect("length checked"))
}
