//! The residual addition of two u8 tensors with their own scales (`out + shortcut`),
//! requantised to the sum's scale and zero point. (PReLU needs no layer of its own: it is
//! fused into every convolution's epilogue.)

use rayon::prelude::*;

use crate::calibrate::QuantParams;
use crate::conv::QTensor;

/// Why an elementwise layer was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ElementwiseError {
    /// The two inputs differ in shape.
    #[error("shapes differ: {0:?} and {1:?}")]
    Shapes([usize; 4], [usize; 4]),
}

/// `a + b` in real values, requantised to `out`.
pub fn add(a: &QTensor, b: &QTensor, out: QuantParams) -> Result<QTensor, ElementwiseError> {
    if a.shape != b.shape || a.data.len() != b.data.len() {
        return Err(ElementwiseError::Shapes(a.shape, b.shape));
    }
    // q = (x - za) * sa / so + (y - zb) * sb / so + zo, as two multiply-adds per value.
    let inv = 1.0 / out.scale;
    let (ka, kb) = (a.scale * inv, b.scale * inv);
    let offset = out.zero as f32 + 0.5 - a.zero as f32 * ka - b.zero as f32 * kb;
    let mut data = vec![0u8; a.data.len()];
    data.par_chunks_mut(16384)
        .zip(a.data.par_chunks(16384).zip(b.data.par_chunks(16384)))
        .for_each(|(o, (x, y))| {
            for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                *o = crate::epilogue::to_u8(x as f32 * ka + y as f32 * kb + offset);
            }
        });
    Ok(QTensor {
        data,
        shape: a.shape,
        scale: out.scale,
        zero: out.zero,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(data: Vec<u8>, c: usize, scale: f32, zero: u8) -> QTensor {
        let n = data.len() / c;
        QTensor {
            data,
            shape: [1, 1, n, c],
            scale,
            zero,
        }
    }

    #[test]
    fn add_requantises_the_real_sum() {
        // a: scale 0.1 zero 100 -> reals -10..; b: scale 0.5 zero 0.
        let a = tensor(vec![100, 110, 90, 255], 2, 0.1, 100);
        let b = tensor(vec![0, 4, 2, 0], 2, 0.5, 0);
        let out = QuantParams {
            scale: 0.25,
            zero: 20,
        };
        let s = add(&a, &b, out).unwrap();
        // Reals: 0 + 0, 1 + 2, -1 + 1, 15.5 + 0 -> /0.25 + 20 -> 20, 32, 20, 82.
        assert_eq!(s.data, vec![20, 32, 20, 82]);
        assert_eq!((s.scale, s.zero), (0.25, 20));
        assert!(matches!(
            add(&a, &tensor(vec![0; 6], 2, 1.0, 0), out),
            Err(ElementwiseError::Shapes(..))
        ));
    }
}
