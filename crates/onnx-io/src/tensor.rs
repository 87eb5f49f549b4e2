//! Tensors in and out of `TensorProto`: decoded to `f32` (weights) or `i64` (shapes), encoded
//! as little-endian `raw_data` the way PyTorch's exporter writes them.

use crate::proto::TensorProto;

/// A dense row-major `f32` array with its shape: what a weight tensor decodes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl Array {
    /// An array of `shape` over `data`.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// A vector of `n` copies of `value`.
    pub fn filled(n: usize, value: f32) -> Self {
        Self::new(vec![n], vec![value; n])
    }

    /// `[r, c]` to `[c, r]`; other ranks are returned as they are (callers check shapes).
    pub fn transposed(&self) -> Array {
        if self.shape.len() != 2 {
            return self.clone();
        }
        let (rows, cols) = (self.shape[0], self.shape[1]);
        let mut data = vec![0.0; self.data.len()];
        for r in 0..rows {
            for c in 0..cols {
                data[c * rows + r] = self.data[r * cols + c];
            }
        }
        Array::new(vec![cols, rows], data)
    }
}

/// The ONNX element types these tools write (`TensorProto.DataType` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// 32-bit float.
    F32 = 1,
    /// 64-bit integer (shapes, axes).
    I64 = 7,
    /// 16-bit IEEE float.
    F16 = 10,
}

fn le_chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N).map(|b| {
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        a
    })
}

impl TensorProto {
    /// The shape, refusing negative dimensions.
    pub fn shape(&self) -> Result<Vec<usize>, String> {
        self.dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
            .collect()
    }

    /// Decodes a float, half, double or integer tensor to `f32`.
    pub fn to_array(&self) -> Result<Array, String> {
        if self.data_location == 1 {
            return Err("stored in an external data file, which is not supported".into());
        }
        let shape = self.shape()?;
        let n: usize = shape.iter().product();
        let raw = &self.raw_data;
        let data: Vec<f32> = match self.data_type {
            1 if !raw.is_empty() => le_chunks::<4>(raw).map(f32::from_le_bytes).collect(),
            1 => self.float_data.clone(),
            10 | 16 => {
                let bits: Vec<u16> = if raw.is_empty() {
                    self.int32_data.iter().map(|&v| v as u16).collect()
                } else {
                    le_chunks::<2>(raw).map(u16::from_le_bytes).collect()
                };
                if self.data_type == 10 {
                    bits.into_iter()
                        .map(|b| half::f16::from_bits(b).to_f32())
                        .collect()
                } else {
                    bits.into_iter()
                        .map(|b| half::bf16::from_bits(b).to_f32())
                        .collect()
                }
            }
            11 if !raw.is_empty() => le_chunks::<8>(raw)
                .map(|b| f64::from_le_bytes(b) as f32)
                .collect(),
            11 => self.double_data.iter().map(|&v| v as f32).collect(),
            6 | 7 => self.to_i64()?.into_iter().map(|v| v as f32).collect(),
            other => return Err(format!("data type {other} is not a numeric type")),
        };
        if data.len() != n {
            return Err(format!(
                "holds {} values but its shape {shape:?} needs {n}",
                data.len()
            ));
        }
        Ok(Array::new(shape, data))
    }

    /// Decodes an integer tensor (int64 or int32), as shape arithmetic uses them.
    pub fn to_i64(&self) -> Result<Vec<i64>, String> {
        let raw = &self.raw_data;
        match self.data_type {
            7 if !raw.is_empty() => Ok(le_chunks::<8>(raw).map(i64::from_le_bytes).collect()),
            7 => Ok(self.int64_data.clone()),
            6 if !raw.is_empty() => Ok(le_chunks::<4>(raw)
                .map(|b| i64::from(i32::from_le_bytes(b)))
                .collect()),
            6 => Ok(self.int32_data.iter().map(|&v| i64::from(v)).collect()),
            other => Err(format!("data type {other} is not an integer type")),
        }
    }

    /// A named tensor of `shape` stored as `dtype` (`F32` or `F16`; `I64` values are rounded).
    pub fn from_f32(name: &str, shape: &[usize], data: &[f32], dtype: DataType) -> Self {
        let raw_data = match dtype {
            DataType::F32 => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DataType::F16 => data
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            DataType::I64 => data
                .iter()
                .flat_map(|&v| (v.round() as i64).to_le_bytes())
                .collect(),
        };
        Self {
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: dtype as i32,
            name: name.into(),
            raw_data,
            ..Default::default()
        }
    }

    /// A named one-dimensional int64 tensor.
    pub fn from_i64(name: &str, data: &[i64]) -> Self {
        Self {
            dims: vec![data.len() as i64],
            data_type: DataType::I64 as i32,
            name: name.into(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }
}
