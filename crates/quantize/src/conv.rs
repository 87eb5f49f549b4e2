//! A quantized 2-D convolution on channels-last u8 activations: im2col rows (padding filled
//! with the input's zero point, which stands for a real 0), the integer GEMM, and one fused
//! epilogue per output value: zero-point correction, per-channel scale, bias, optional PReLU, and
//! either f32 out or requantisation to u8.

use rayon::prelude::*;

use crate::epilogue::{dequantise_rows, requantise_rows, Affine};
use crate::gemm::{rows_unchecked, GemmError, Kernel, PackedWeights};
use crate::graph::out_size;
use crate::grouped::{exact_in_f32, line, relayout, Grouped, Window};

/// u8 activations `[n, h, w, c]` (channels last) with one scale and zero point:
/// `real = scale * (q - zero)`.
#[derive(Debug, Clone, PartialEq)]
pub struct QTensor {
    /// Channels-last u8 values.
    pub data: Vec<u8>,
    /// `[N, H, W, C]`.
    pub shape: [usize; 4],
    /// Real value of one step.
    pub scale: f32,
    /// The u8 that stands for real 0.
    pub zero: u8,
}

/// How an output is produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Output {
    /// Real values.
    F32,
    /// Requantised with this scale and zero point.
    U8 {
        /// Real value of one step.
        scale: f32,
        /// The u8 that stands for real 0.
        zero: u8,
    },
}

/// A tensor between layers, channels last `[n, h, w, c]`: real values, or u8 with a scale.
#[derive(Debug, Clone, PartialEq)]
pub enum Activation {
    /// f32 values.
    F32 {
        /// Channels-last values.
        data: Vec<f32>,
        /// `[N, H, W, C]`.
        shape: [usize; 4],
    },
    /// u8 values on a grid.
    U8(QTensor),
}

impl Activation {
    /// `[N, H, W, C]`.
    pub fn shape(&self) -> [usize; 4] {
        match self {
            Self::F32 { shape, .. } => *shape,
            Self::U8(t) => t.shape,
        }
    }
}

/// Weights quantized symmetric per output channel: `scale = max|w| / 127`,
/// `q = round(w / scale)` in -127..=127; `weights` holds `cout` equal runs.
pub fn quantize_per_channel(weights: &[f32], cout: usize) -> (Vec<i8>, Vec<f32>) {
    let per = weights.len() / cout.max(1);
    let mut q = Vec::with_capacity(weights.len());
    let mut scales = Vec::with_capacity(cout);
    for w in weights.chunks(per.max(1)).take(cout) {
        let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        scales.push(scale);
        q.extend(
            w.iter()
                .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8),
        );
    }
    (q, scales)
}

/// How the integer products are computed.
#[derive(Debug, Clone)]
enum Arithmetic {
    /// im2col rows times packed weights (the GEMM kernels).
    Dense(PackedWeights),
    /// Direct loops for grouped and depthwise layers; weights `[k * k][cpg][cout]`.
    Grouped(Vec<f32>),
}

/// A convolution with weights quantized symmetric per output channel, dense or grouped.
#[derive(Debug, Clone)]
pub struct QConv2d {
    arithmetic: Arithmetic,
    weight_scales: Vec<f32>,
    bias: Vec<f32>,
    prelu: Option<Vec<f32>>,
    shape: [usize; 4],
    groups: usize,
    stride: usize,
    padding: usize,
}

/// Why a convolution was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConvError {
    /// The weights do not fill the shape.
    #[error("weights have {got} values, {cout}x{cin}x{kh}x{kw} expected")]
    Weights {
        /// Values given.
        got: usize,
        /// Output channels.
        cout: usize,
        /// Input channels.
        cin: usize,
        /// Kernel height.
        kh: usize,
        /// Kernel width.
        kw: usize,
    },
    /// A per-channel array of the wrong length.
    #[error("{what} has {got} values for {cout} output channels")]
    PerChannel {
        /// Which array.
        what: &'static str,
        /// Its length.
        got: usize,
        /// Output channels.
        cout: usize,
    },
    /// The input's channels are not the layer's.
    #[error("input has {got} channels, the convolution takes {expected}")]
    Channels {
        /// The input's.
        got: usize,
        /// The layer's.
        expected: usize,
    },
    /// The input's bytes do not fill its shape.
    #[error("input shape {shape:?} does not match its {len} bytes")]
    Shape {
        /// `[N, H, W, C]`.
        shape: [usize; 4],
        /// Bytes given.
        len: usize,
    },
    /// The padded input is smaller than the kernel.
    #[error("a {h}x{w} input with padding {padding} is smaller than the {kh}x{kw} kernel")]
    TooSmall {
        /// Input height.
        h: usize,
        /// Input width.
        w: usize,
        /// Padding.
        padding: usize,
        /// Kernel height.
        kh: usize,
        /// Kernel width.
        kw: usize,
    },
    /// Groups that do not divide the channels.
    #[error("grouped convolution: {0}")]
    Groups(String),
    /// A NaN or infinite weight, bias or slope.
    #[error("non-finite weight, bias or slope")]
    NonFinite,
    /// The matrix product refused its operands.
    #[error(transparent)]
    Gemm(#[from] GemmError),
}

impl QConv2d {
    /// Quantises f32 weights `[cout, cin, kh, kw]` (PyTorch's layout) per output channel.
    pub fn new(
        weights: &[f32],
        shape: [usize; 4],
        bias: Option<&[f32]>,
        prelu: Option<&[f32]>,
        stride: usize,
        padding: usize,
    ) -> Result<Self, ConvError> {
        Self::new_grouped(weights, shape, 1, bias, prelu, stride, padding)
    }

    /// As [`QConv2d::new`] with `groups` (weights `[cout, cin / groups, k, k]`).
    pub fn new_grouped(
        weights: &[f32],
        shape: [usize; 4],
        groups: usize,
        bias: Option<&[f32]>,
        prelu: Option<&[f32]>,
        stride: usize,
        padding: usize,
    ) -> Result<Self, ConvError> {
        check_weights(weights.len(), shape)?;
        if !weights.iter().all(|x| x.is_finite()) {
            return Err(ConvError::NonFinite);
        }
        let (q, scales) = quantize_per_channel(weights, shape[0]);
        Self::from_quantized(&q, scales, shape, groups, bias, prelu, stride, padding)
    }

    /// A convolution from weights already quantized (as a model file stores them).
    #[allow(clippy::too_many_arguments)]
    pub fn from_quantized(
        quantized: &[i8],
        weight_scales: Vec<f32>,
        shape: [usize; 4],
        groups: usize,
        bias: Option<&[f32]>,
        prelu: Option<&[f32]>,
        stride: usize,
        padding: usize,
    ) -> Result<Self, ConvError> {
        let [cout, cpg, kh, kw] = shape;
        check_weights(quantized.len(), shape)?;
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
        per_channel("weight scales", Some(&weight_scales))?;
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        if !finite(&weight_scales) || !bias.is_none_or(finite) || !prelu.is_none_or(finite) {
            return Err(ConvError::NonFinite);
        }
        if groups == 0 || cout % groups != 0 || (groups > 1 && kh != kw) {
            return Err(ConvError::Groups(format!(
                "{groups} groups for {cout} outputs with a {kh}x{kw} kernel"
            )));
        }
        let opg = cout / groups;
        let arithmetic = if groups > 1 && exact_in_f32(kh, cpg) {
            let real: Vec<f32> = quantized.iter().map(|&v| v as f32).collect();
            Arithmetic::Grouped(relayout(&real, shape, opg))
        } else {
            // Dense, or a grouped layer too wide for exact f32 sums run as dense on its
            // block-diagonal expansion.
            let b = im2col_weights(quantized, shape, groups);
            Arithmetic::Dense(PackedWeights::pack(&b, cpg * groups * kh * kw, cout))
        };
        Ok(Self {
            arithmetic,
            weight_scales,
            bias: bias.map_or_else(|| vec![0.0; cout], <[f32]>::to_vec),
            prelu: prelu.map(<[f32]>::to_vec),
            shape,
            groups,
            stride: stride.max(1),
            padding,
        })
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.shape[0]
    }

    /// "conv 3x3/2 64->128 groups 2".
    pub fn describe(&self) -> String {
        describe_conv(self.shape, self.groups, self.stride)
    }

    /// Output height and width for an input's.
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let [_, _, kh, kw] = self.shape;
        (
            out_size(h, kh, self.stride, self.padding),
            out_size(w, kw, self.stride, self.padding),
        )
    }

    /// Runs the convolution: real outputs `[n, oh, ow, cout]` ([`Output::F32`]) or the same
    /// requantised ([`Output::U8`]).
    pub fn forward(
        &self,
        x: &QTensor,
        output: Output,
        kernel: Kernel,
    ) -> Result<Activation, ConvError> {
        let [n, h, w, c] = x.shape;
        if x.data.len() != n * h * w * c {
            return Err(ConvError::Shape {
                shape: x.shape,
                len: x.data.len(),
            });
        }
        let [cout, cpg, kh, kw] = self.shape;
        if c != cpg * self.groups {
            return Err(ConvError::Channels {
                got: c,
                expected: cpg * self.groups,
            });
        }
        if h + 2 * self.padding < kh || w + 2 * self.padding < kw {
            return Err(ConvError::TooSmall {
                h,
                w,
                padding: self.padding,
                kh,
                kw,
            });
        }
        if !kernel.available() {
            return Err(GemmError::Unsupported(kernel).into());
        }
        let (oh, ow) = self.out_size(h, w);
        let shape = [n, oh, ow, cout];
        let len = n * oh * ow * cout;
        let z = x.zero as i32;
        let correction: Vec<i32> = match &self.arithmetic {
            Arithmetic::Dense(packed) => packed
                .column_sums()
                .iter()
                .map(|s| z.wrapping_mul(*s))
                .collect(),
            Arithmetic::Grouped(_) => vec![0; cout],
        };
        // A u8 output's scale is folded into the affine (PReLU commutes with a positive
        // factor); an f32 output's factor is 1, which changes no bit.
        let inv = match output {
            Output::F32 => 1.0,
            Output::U8 { scale, .. } => 1.0 / scale,
        };
        let scale: Vec<f32> = self
            .weight_scales
            .iter()
            .map(|s| s * x.scale * inv)
            .collect();
        let bias: Vec<f32> = self.bias.iter().map(|b| b * inv).collect();
        let f = Affine {
            scale: &scale,
            bias: &bias,
            alpha: self.prelu.as_deref(),
        };
        Ok(match output {
            Output::F32 => {
                let mut data = vec![0f32; len];
                self.tiles(x, ow, &mut data, kernel, |acc, out| {
                    dequantise_rows(acc, &correction, f, out)
                });
                Activation::F32 { data, shape }
            }
            Output::U8 { scale, zero } => {
                // floor(v + 0.5) after the zero point: round-half-up, inlined (f32::round is a
                // libm call without SSE4.1); it differs from round-half-away only at exact ties
                // below the zero point, by one step.
                let offset = zero as f32 + 0.5;
                let mut data = vec![0u8; len];
                self.tiles(x, ow, &mut data, kernel, |acc, out| {
                    requantise_rows(acc, &correction, f, offset, out)
                });
                Activation::U8(QTensor {
                    data,
                    shape,
                    scale,
                    zero,
                })
            }
        })
    }

    /// The output in tiles of whole rows (output pixels), one rayon task each: the tile's
    /// accumulators (and, for dense layers, its im2col rows) are made in a per-task buffer that
    /// stays in cache and `finish` turns them into output values at once, so no layer-sized
    /// i32 or im2col array is ever written out to memory and read back.
    fn tiles<T: Send>(
        &self,
        x: &QTensor,
        ow: usize,
        out: &mut [T],
        kernel: Kernel,
        finish: impl Fn(&[i32], &mut [T]) + Sync,
    ) {
        let [cout, _, kh, kw] = self.shape;
        match &self.arithmetic {
            Arithmetic::Dense(packed) => {
                let im2col =
                    Im2col::new(x.shape, [kh, kw], self.stride, self.padding, packed.lda());
                let tile = tile_rows(out.len() / cout);
                out.par_chunks_mut(tile * cout).enumerate().for_each_init(
                    || (Vec::new(), Vec::new()),
                    |(rows, acc), (t, out)| {
                        let m = out.len() / cout;
                        let a = im2col.rows(&x.data, x.zero, t * tile, m, rows);
                        acc.resize(m * cout, 0);
                        rows_unchecked(a, m, packed, acc, kernel);
                        finish(acc, out);
                    },
                );
            }
            Arithmetic::Grouped(weights) => {
                let [_, h, w, _] = x.shape;
                let g = Grouped::of(self.shape, self.groups, self.stride, self.padding, [h, w]);
                let z = x.zero as i32;
                out.par_chunks_mut(ow * cout).enumerate().for_each_init(
                    || (Window::default(), Vec::new()),
                    |(window, acc), (i, out)| {
                        acc.resize(ow * cout, 0);
                        let value = |q: u8| (q as i32 - z) as f32;
                        line(g, window, &x.data, value, weights, i, acc);
                        finish(acc, out);
                    },
                );
            }
        }
    }
}

/// Output pixels per dense task: up to 64 (the tile's im2col rows and accumulators stay in L2),
/// fewer on small maps so that both threads get work, and a multiple of 4 (the VNNI kernel's
/// row block).
pub(crate) fn tile_rows(m: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    (m.div_ceil(4 * threads).div_ceil(4) * 4).clamp(4, 64)
}

/// PyTorch weights `[cout, cpg, kh, kw]` of a layer with `groups` groups as the `k x cout`
/// matrix its im2col rows multiply (`k = cin * kh * kw`, row order `(ky, kx, ci)`); zero outside
/// each output's group (block-diagonal), so a grouped layer can run as a dense one.
pub(crate) fn im2col_weights<T: Copy + Default>(
    w: &[T],
    [cout, cpg, kh, kw]: [usize; 4],
    groups: usize,
) -> Vec<T> {
    let (cin, taps, opg) = (cpg * groups, kh * kw, cout / groups);
    let mut b = vec![T::default(); cin * taps * cout];
    for o in 0..cout {
        let first = (o / opg) * cpg;
        for ci in 0..cpg {
            for t in 0..taps {
                b[((t * cin) + first + ci) * cout + o] = w[(o * cpg + ci) * taps + t];
            }
        }
    }
    b
}

/// The im2col matrix of one layer's input `x` (`[n, h, w, c]`, channels last) for a `kh x kw`
/// kernel: one row of `lda` values per output pixel in `(ky, kx, c)` order, `pad` where the
/// kernel overhangs the border (the int8 engine pads with the zero point, a real 0) and after
/// the `kh * kw * c` values. Read a tile of rows at a time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Im2col {
    shape: [usize; 4],
    kernel: [usize; 2],
    stride: usize,
    padding: usize,
    lda: usize,
    /// Every row is already a contiguous run of the input (1x1 stride-1 layers, and a kernel
    /// covering the whole map as the embedding layer's): the input itself is the matrix.
    is_input: bool,
}

impl Im2col {
    pub fn new(
        shape: [usize; 4],
        kernel: [usize; 2],
        stride: usize,
        padding: usize,
        lda: usize,
    ) -> Self {
        let ([_, h, w, c], [kh, kw]) = (shape, kernel);
        let pointwise = kh == 1 && kw == 1 && stride == 1;
        let whole_map = kh == h && kw == w;
        Self {
            shape,
            kernel,
            stride,
            padding,
            lda,
            is_input: lda == kh * kw * c && padding == 0 && (pointwise || whole_map),
        }
    }

    /// Rows `first..first + m`: a slice of `x` itself where it is the matrix, else written
    /// into `buffer`.
    pub fn rows<'a, T: Copy>(
        &self,
        x: &'a [T],
        pad: T,
        first: usize,
        m: usize,
        buffer: &'a mut Vec<T>,
    ) -> &'a [T] {
        let lda = self.lda;
        if self.is_input {
            return &x[first * lda..(first + m) * lda];
        }
        buffer.resize(m * lda, pad);
        let ([_, h, w, c], [kh, kw]) = (self.shape, self.kernel);
        let (stride, padding) = (self.stride, self.padding);
        let (oh, ow) = (
            out_size(h, kh, stride, padding),
            out_size(w, kw, stride, padding),
        );
        let inside =
            |i: usize, size: usize| (i >= padding && i - padding < size).then(|| i - padding);
        for (r, row) in (first..).zip(buffer.chunks_exact_mut(lda)) {
            let (b, oy, ox) = (r / (oh * ow), (r / ow) % oh, r % ow);
            let (taps, tail) = row.split_at_mut(kh * kw * c);
            tail.fill(pad);
            for (t, tap) in taps.chunks_exact_mut(c).enumerate() {
                let (ky, kx) = (t / kw, t % kw);
                match (inside(oy * stride + ky, h), inside(ox * stride + kx, w)) {
                    (Some(iy), Some(ix)) => {
                        let src = ((b * h + iy) * w + ix) * c;
                        tap.copy_from_slice(&x[src..src + c]);
                    }
                    _ => tap.fill(pad),
                }
            }
        }
        buffer
    }
}

fn check_weights(len: usize, [cout, cin, kh, kw]: [usize; 4]) -> Result<(), ConvError> {
    if len != cout * cin * kh * kw || len == 0 {
        return Err(ConvError::Weights {
            got: len,
            cout,
            cin,
            kh,
            kw,
        });
    }
    Ok(())
}

/// "conv 3x3/2 64->128 groups 2".
pub(crate) fn describe_conv(
    [cout, cpg, kh, kw]: [usize; 4],
    groups: usize,
    stride: usize,
) -> String {
    let mut s = format!("conv {kh}x{kw}/{stride} {}->{cout}", cpg * groups);
    if groups > 1 {
        s += &format!(" groups {groups}");
    }
    s
}
