//! From 8-bit RGB pixels to the tensors backbones take.

use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::error::{BackboneError, Result};

/// Side of the aligned faces every backbone takes (and the input its head's `Linear` is sized
/// for).
pub const INPUT_SIZE: usize = 112;

/// Packs aligned 112x112 RGB faces (interleaved `HWC` bytes, one slice per face) into a
/// normalized `[N, 3, 112, 112]` batch.
pub fn faces_to_tensor<B: Backend>(faces: &[&[u8]], device: &B::Device) -> Result<Tensor<B, 4>> {
    let plane = INPUT_SIZE * INPUT_SIZE;
    let mut data = Vec::with_capacity(faces.len() * 3 * plane);
    for face in faces {
        if face.len() != 3 * plane {
            return Err(BackboneError::BadInput(vec![face.len()]));
        }
        for c in 0..3 {
            data.extend(
                face.iter()
                    .skip(c)
                    .step_by(3)
                    .map(|&p| face_embed::input_value(p)),
            );
        }
    }
    let shape = [faces.len(), 3, INPUT_SIZE, INPUT_SIZE];
    Ok(Tensor::from_data(TensorData::new(data, shape), device))
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = crate::CpuBackend;

    #[test]
    fn packs_hwc_bytes_into_normalised_chw() {
        let mut face = vec![0u8; 3 * INPUT_SIZE * INPUT_SIZE];
        // Pixel (row 0, col 1): R=255, G=0, B=127.
        face[3] = 255;
        face[5] = 127;
        let t = faces_to_tensor::<B>(&[&face], &Default::default()).unwrap();
        assert_eq!(t.dims(), [1, 3, INPUT_SIZE, INPUT_SIZE]);
        let v = t.into_data().to_vec::<f32>().unwrap();
        let plane = INPUT_SIZE * INPUT_SIZE;
        assert_eq!(v[1], 1.0);
        assert_eq!(v[plane + 1], -1.0);
        assert!((v[2 * plane + 1] - (127.0 - 127.5) / 127.5).abs() < 1e-7);
        assert_eq!(v[0], -1.0);
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let short = vec![0u8; 100];
        assert!(faces_to_tensor::<B>(&[&short], &Default::default()).is_err());
    }
}
