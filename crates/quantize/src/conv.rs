//! A quantised 2-D convolution on channels-last u8 activations: im2col rows (padding filled
//! with the input's zero point, which stands for a real 0), the integer GEMM, and one fused
//! epilogue per output value: zero-point correction, per-channel scale, bias, optional PReLU, and
//! either f32 out or requantisation to u8.

use rayon::prelude::*;

use crate::gemm::{gemm_u8i8, GemmError, Kernel, PackedWeights};

/// u8 activations `[n, h, w, c]` (channels last) with one scale and zero point:
/// `real = scale * (q - zero)`.
#[derive(Debug, Clone, PartialEq)]
pub struct QTensor {
    pub data: Vec<u8>,
    pub shape: [usize; 4],
    pub scale: f32,
    pub zero: u8,
}

/// How an output is produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Output {
    /// Real values.
    F32,
    /// Requantised with this scale and zero point.
    U8 { scale: f32, zero: u8 },
}

/// A convolution with weights quantised symmetric per output channel.
#[derive(Debug, Clone)]
pub struct QConv2d {
    weights: PackedWeights,
    weight_scales: Vec<f32>,
    bias: Vec<f32>,
    prelu: Option<Vec<f32>>,
    cin: usize,
    kernel: [usize; 2],
    stride: usize,
    padding: usize,
}

/// Why a convolution was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConvError {
    #[error("weights have {got} values, {cout}x{cin}x{kh}x{kw} expected")]
    Weights {
        got: usize,
        cout: usize,
        cin: usize,
        kh: usize,
        kw: usize,
    },
    #[error("{what} has {got} values for {cout} output channels")]
    PerChannel {
        what: &'static str,
        got: usize,
        cout: usize,
    },
    #[error("input has {got} channels, the convolution takes {expected}")]
    Channels { got: usize, expected: usize },
    #[error("input shape {shape:?} does not match its {len} bytes")]
    Shape { shape: [usize; 4], len: usize },
    #[error("a {h}x{w} input with padding {padding} is smaller than the {kh}x{kw} kernel")]
    TooSmall {
        h: usize,
        w: usize,
        padding: usize,
        kh: usize,
        kw: usize,
    },
    #[error("non-finite weight, bias or slope")]
    NonFinite,
    #[error(transparent)]
    Gemm(#[from] GemmError),
}

impl QConv2d {
    /// Quantises f32 weights `[cout, cin, kh, kw]` (PyTorch's layout): per output channel,
    /// `scale = max|w| / 127`, `q = round(w / scale)` in -127..=127.
    pub fn new(
        weights: &[f32],
        [cout, cin, kh, kw]: [usize; 4],
        bias: Option<&[f32]>,
        prelu: Option<&[f32]>,
        stride: usize,
        padding: usize,
    ) -> Result<Self, ConvError> {
        if weights.len() != cout * cin * kh * kw {
            return Err(ConvError::Weights {
                got: weights.len(),
                cout,
                cin,
                kh,
                kw,
            });
        }
        let per_channel = |what, v: Option<&[f32]>| match v {
            Some(v) if v.len() != cout => Err(ConvError::PerChannel {
                what,
                got: v.len(),
                cout,
            }),
            _ => Ok(()),
        };
        per_channel("bias", bias)?;
        per_channel("PReLU slopes", prelu)?;
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        if !finite(weights) || !bias.is_none_or(finite) || !prelu.is_none_or(finite) {
            return Err(ConvError::NonFinite);
        }
        let k = cin * kh * kw;
        let mut b = vec![0i8; k * cout];
        let mut weight_scales = Vec::with_capacity(cout);
        for o in 0..cout {
            let w = &weights[o * k..(o + 1) * k];
            let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            weight_scales.push(scale);
            // PyTorch order (ci, ky, kx) -> im2col order (ky, kx, ci).
            for ci in 0..cin {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let v = w[(ci * kh + ky) * kw + kx];
                        let row = (ky * kw + kx) * cin + ci;
                        b[row * cout + o] = (v / scale).round().clamp(-127.0, 127.0) as i8;
                    }
                }
            }
        }
        Ok(Self {
            weights: PackedWeights::pack(&b, k, cout),
            weight_scales,
            bias: bias.map_or_else(|| vec![0.0; cout], <[f32]>::to_vec),
            prelu: prelu.map(<[f32]>::to_vec),
            cin,
            kernel: [kh, kw],
            stride: stride.max(1),
            padding,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.weights.n()
    }

    /// The weights as the integer arithmetic sees them (`q * scale`), `[cout, cin, kh, kw]`.
    pub fn dequantised_weights(&self) -> Vec<f32> {
        let (cout, cin, [kh, kw]) = (self.out_channels(), self.cin, self.kernel);
        let k = cin * kh * kw;
        let mut unpacked = vec![0i8; k * cout];
        // Recover from a GEMM against unit rows: row r of the identity picks B's row r.
        let lda = self.weights.lda();
        let mut eye = vec![0u8; k * lda];
        for r in 0..k {
            eye[r * lda + r] = 1;
        }
        let mut c = vec![0i32; k * cout];
        gemm_u8i8(&eye, k, &self.weights, &mut c, Kernel::Scalar).expect("sizes match");
        for (u, v) in unpacked.iter_mut().zip(&c) {
            *u = *v as i8;
        }
        let mut out = vec![0f32; cout * k];
        for o in 0..cout {
            for ci in 0..cin {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let row = (ky * kw + kx) * cin + ci;
                        out[o * k + (ci * kh + ky) * kw + kx] =
                            unpacked[row * cout + o] as f32 * self.weight_scales[o];
                    }
                }
            }
        }
        out
    }

    /// Output height and width for an input's.
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let [kh, kw] = self.kernel;
        (
            (h + 2 * self.padding).saturating_sub(kh) / self.stride + 1,
            (w + 2 * self.padding).saturating_sub(kw) / self.stride + 1,
        )
    }

    /// Runs the convolution: the real outputs `[n, oh, ow, cout]`, and with [`Output::U8`] the
    /// same requantised.
    pub fn forward(
        &self,
        x: &QTensor,
        output: Output,
        kernel: Kernel,
    ) -> Result<(Vec<f32>, Option<QTensor>), ConvError> {
        let [n, h, w, c] = x.shape;
        if x.data.len() != n * h * w * c {
            return Err(ConvError::Shape {
                shape: x.shape,
                len: x.data.len(),
            });
        }
        if c != self.cin {
            return Err(ConvError::Channels {
                got: c,
                expected: self.cin,
            });
        }
        let [kh, kw] = self.kernel;
        if h + 2 * self.padding < kh || w + 2 * self.padding < kw {
            return Err(ConvError::TooSmall {
                h,
                w,
                padding: self.padding,
                kh,
                kw,
            });
        }
        let (oh, ow) = self.out_size(h, w);
        let lda = self.weights.lda();
        let m = n * oh * ow;
        let mut rows = vec![0u8; m * lda];
        // One task per output row (ow pixels), over rayon's threads.
        rows.par_chunks_mut(ow * lda)
            .enumerate()
            .for_each(|(line, chunk)| {
                let (b, oy) = (line / oh, line % oh);
                for ox in 0..ow {
                    let row = &mut chunk[ox * lda..][..lda];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * self.stride + ky) as isize - self.padding as isize;
                            let ix = (ox * self.stride + kx) as isize - self.padding as isize;
                            let dst = &mut row[(ky * kw + kx) * c..][..c];
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                dst.fill(x.zero);
                            } else {
                                let src = ((b * h + iy as usize) * w + ix as usize) * c;
                                dst.copy_from_slice(&x.data[src..src + c]);
                            }
                        }
                    }
                }
            });
        let cout = self.out_channels();
        let mut acc = vec![0i32; m * cout];
        gemm_u8i8(&rows, m, &self.weights, &mut acc, kernel)?;
        // Epilogue: real = s_x * s_w[o] * (acc - z_x * colsum[o]) + bias[o], PReLU, out.
        let sums = self.weights.column_sums();
        let z = x.zero as i32;
        let mut real = vec![0f32; m * cout];
        real.par_chunks_mut(cout * ow.max(1))
            .zip(acc.par_chunks(cout * ow.max(1)))
            .for_each(|(out, acc)| {
                for (r, out) in acc.chunks(cout).zip(out.chunks_mut(cout)) {
                    for o in 0..cout {
                        let centred = r[o].wrapping_sub(z.wrapping_mul(sums[o]));
                        let mut y = x.scale * self.weight_scales[o] * centred as f32 + self.bias[o];
                        if let Some(alpha) = &self.prelu {
                            if y < 0.0 {
                                y *= alpha[o];
                            }
                        }
                        out[o] = y;
                    }
                }
            });
        let quantised = match output {
            Output::F32 => None,
            Output::U8 { scale, zero } => {
                // floor(v + 0.5) after the zero point: round-half-up, inlined (f32::round is a
                // libm call without SSE4.1); it differs from round-half-away only at exact ties
                // below the zero point, by one step.
                let (inv, offset) = (1.0 / scale, zero as f32 + 0.5);
                let mut data = vec![0u8; real.len()];
                data.par_chunks_mut(cout * ow)
                    .zip(real.par_chunks(cout * ow))
                    .for_each(|(q, y)| {
                        for (q, y) in q.iter_mut().zip(y) {
                            *q = (y * inv + offset).clamp(0.0, 255.0) as u8;
                        }
                    });
                Some(QTensor {
                    data,
                    shape: [n, oh, ow, cout],
                    scale,
                    zero,
                })
            }
        };
        Ok((real, quantised))
    }
}
