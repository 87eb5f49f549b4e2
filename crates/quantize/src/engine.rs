//! One CPU runtime for both precisions. An [`Engine`] runs a [`Graph`] whose layers each hold
//! f32 or int8 weights: all-f32 is the float engine (BatchNorm folded, channels last, f32 GEMM),
//! a quantized model is the same graph with int8 layers and a u8 scale per value, so the two are
//! compared on one engine. A value is u8 when its producer is quantized and f32 otherwise;
//! a layer that needs the other form converts its input with the value's calibrated parameters.

use std::borrow::Cow;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::calibrate::QuantParams;
use crate::conv::{
    describe_conv, im2col_weights, tile_rows, Activation, ConvError, Im2col, Output, QConv2d,
    QTensor,
};
use crate::elementwise::{self, ElementwiseError};
use crate::epilogue::finish_float_rows;
use crate::gemm::Kernel;
use crate::graph::{out_size, ConvLayer, Graph, GraphError, Node, WeightData, INPUT_SIZE};
use crate::grouped::{line, relayout, Grouped, Window};

/// A layer's weights: f32, or int8 symmetric per output channel (`real = q * scales[o]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Weights {
    /// f32 values.
    F32(Vec<f32>),
    /// int8 values with one scale per output channel.
    I8 {
        /// The values.
        q: Vec<i8>,
        /// Real value of one step, per output channel.
        scales: Vec<f32>,
    },
}

impl WeightData for Weights {
    fn count(&self) -> usize {
        match self {
            Self::F32(w) => w.len(),
            Self::I8 { q, .. } => q.len(),
        }
    }
}

impl Weights {
    /// Whether the layer runs in int8.
    pub fn is_int8(&self) -> bool {
        matches!(self, Self::I8 { .. })
    }
}

/// The u8 grid of the image input: pixel `p` stands for `(p - 128) / 127.5`, half a step from
/// insightface's `(p - 127.5) / 127.5` (the first int8 convolution's bias absorbs the shift).
pub const IMAGE_PARAMS: QuantParams = QuantParams {
    scale: 1.0 / 127.5,
    zero: 128,
};

/// Why an engine could not be built or run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EngineError {
    /// The graph is invalid.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A convolution failed.
    #[error("layer {layer}: {source}")]
    Conv {
        /// The node.
        layer: usize,
        /// Why.
        source: ConvError,
    },
    /// An addition failed.
    #[error("layer {layer}: {source}")]
    Elementwise {
        /// The node.
        layer: usize,
        /// Why.
        source: ElementwiseError,
    },
    /// A value read as int8 has no grid.
    #[error("value {0} is read as int8 but has no calibrated range")]
    Uncalibrated(usize),
    /// The grids do not match the graph's values.
    #[error("{got} quantisation parameters for {values} values")]
    Params {
        /// Grids given.
        got: usize,
        /// Values in the graph.
        values: usize,
    },
    /// A face is not 112x112 with the model's planes.
    #[error("face {index} has {got} bytes, the model takes {expected} (112x112 faces, its planes interleaved)")]
    Face {
        /// Its position in the batch.
        index: usize,
        /// Its bytes.
        got: usize,
        /// A 112x112 face's bytes.
        expected: usize,
    },
    /// A fusion model's inputs do not fit its branches.
    #[error("fusion: {0}")]
    Fusion(String),
}

#[derive(Debug)]
enum Conv {
    F32(FloatConv),
    I8(QConv2d),
}

#[derive(Debug)]
enum Layer {
    Conv {
        input: usize,
        conv: Conv,
    },
    Affine {
        input: usize,
        scale: Vec<f32>,
        shift: Vec<f32>,
        /// int8 form: output byte for (channel, input byte).
        table: Option<Vec<u8>>,
    },
    Add {
        a: usize,
        b: usize,
    },
}

/// Calibration's view of each computed value: `(value, real numbers)`.
type Observe<'a> = dyn FnMut(usize, &[f32]) + 'a;

/// A runnable graph (see the module docs).
#[derive(Debug)]
pub struct Engine {
    architecture: String,
    layers: Vec<Layer>,
    /// Per value: the u8 grid, for quantized values (and those a quantized layer reads).
    params: Vec<Option<QuantParams>>,
    /// Per value: whether its producer writes u8.
    quantized: Vec<bool>,
    readers: Vec<usize>,
    embedding_dim: usize,
    /// Planes of the input image (interleaved bytes per pixel).
    input_channels: usize,
    kernel: Kernel,
    int8_weights: usize,
}

impl Engine {
    /// The float engine of a graph.
    pub fn float(graph: &Graph) -> Result<Self, EngineError> {
        let graph = Graph {
            architecture: graph.architecture.clone(),
            nodes: graph
                .nodes
                .iter()
                .map(|node| map_weights(node, |w| Weights::F32(w.clone())))
                .collect(),
        };
        Self::new(&graph, None)
    }

    /// An engine over layers with f32 or int8 weights; `params` (one per value, the image
    /// first) is required for every value an int8 layer reads or writes.
    pub fn new(
        graph: &Graph<Weights>,
        params: Option<&[Option<QuantParams>]>,
    ) -> Result<Self, EngineError> {
        let shapes = graph.shapes()?;
        let values = shapes.len();
        let params = match params {
            Some(p) if p.len() != values => {
                return Err(EngineError::Params {
                    got: p.len(),
                    values,
                })
            }
            Some(p) => p.to_vec(),
            None => vec![None; values],
        };
        let need = |v: usize| params[v].ok_or(EngineError::Uncalibrated(v));
        let mut quantized = vec![false; values];
        quantized[0] = graph
            .nodes
            .first()
            .is_some_and(|n| matches!(n, Node::Conv { conv, .. } if conv.weights.is_int8()));
        let mut layers = Vec::with_capacity(graph.nodes.len());
        let mut int8_weights = 0;
        for (i, node) in graph.nodes.iter().enumerate() {
            let conv_err = |source| EngineError::Conv { layer: i, source };
            let layer = match node {
                Node::Conv { input, conv } => {
                    let built = build_conv(conv).map_err(conv_err)?;
                    if matches!(built, Conv::I8(_)) {
                        need(*input)?;
                    }
                    // Quantized layers write u8 (the float first layer of a quantized model
                    // too); all-f32 graphs and the embedding stay f32.
                    quantized[i + 1] = params[i + 1].is_some();
                    Layer::Conv {
                        input: *input,
                        conv: built,
                    }
                }
                Node::Affine {
                    input,
                    scale,
                    shift,
                } => {
                    let table = if quantized[*input] {
                        quantized[i + 1] = true;
                        Some(affine_table(scale, shift, need(*input)?, need(i + 1)?))
                    } else {
                        None
                    };
                    Layer::Affine {
                        input: *input,
                        scale: scale.clone(),
                        shift: shift.clone(),
                        table,
                    }
                }
                Node::Add { a, b } => {
                    if quantized[*a] || quantized[*b] {
                        for v in [*a, *b, i + 1] {
                            need(v)?;
                        }
                        quantized[i + 1] = true;
                    }
                    Layer::Add { a: *a, b: *b }
                }
                Node::Linear {
                    input,
                    weights,
                    bias,
                } => {
                    // A convolution whose kernel covers the whole map: same weights, same
                    // order, and the map itself is its im2col matrix (no copy).
                    let [h, w, c] = shapes[*input];
                    let conv = ConvLayer {
                        weights: weights.clone(),
                        shape: [bias.len(), c, h, w],
                        bias: bias.clone(),
                        prelu: None,
                        stride: 1,
                        padding: 0,
                        groups: 1,
                    };
                    let built = build_conv(&conv).map_err(conv_err)?;
                    if matches!(built, Conv::I8(_)) {
                        need(*input)?;
                    }
                    Layer::Conv {
                        input: *input,
                        conv: built,
                    }
                }
            };
            if let Node::Conv {
                conv: ConvLayer { weights, .. },
                ..
            }
            | Node::Linear { weights, .. } = node
            {
                if weights.is_int8() {
                    int8_weights += weights.count();
                }
            }
            layers.push(layer);
        }
        Ok(Self {
            architecture: graph.architecture.clone(),
            layers,
            params,
            quantized,
            readers: graph.readers(),
            embedding_dim: graph.embedding_dim(),
            input_channels: graph.input_channels(),
            kernel: Kernel::detect(),
            int8_weights,
        })
    }

    /// Uses this GEMM kernel (tests compare kernels; the default is the best available).
    pub fn with_kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = kernel;
        self
    }

    /// The backbone it was built from.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// Values per embedding.
    pub fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }

    /// Number of int8 weights (0 for the float engine).
    pub fn int8_weights(&self) -> usize {
        self.int8_weights
    }

    /// Planes of each input face: 3 for RGB (1 for a near-infrared or depth branch).
    pub fn input_channels(&self) -> usize {
        self.input_channels
    }

    /// Embeds aligned 112x112 RGB faces (interleaved bytes; `input_channels` per pixel);
    /// embeddings are not normalized.
    pub fn embed(&self, faces: &[&[u8]]) -> Result<Vec<Vec<f32>>, EngineError> {
        self.run(faces, &mut |_, _| ())
    }

    /// As [`Engine::embed`], handing every computed value (as real numbers, channels last) to
    /// `observe(value, data)`: what calibration watches.
    pub fn run(
        &self,
        faces: &[&[u8]],
        observe: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        self.run_timed(faces, Some(observe), &mut |_, _| ())
    }

    /// Where the time of one forward pass goes: per layer, its description and seconds.
    pub fn profile(&self, faces: &[&[u8]]) -> Result<Vec<(String, f64)>, EngineError> {
        let mut times = Vec::with_capacity(self.layers.len());
        self.run_timed(faces, None, &mut |i, seconds| {
            times.push((self.describe(i), seconds))
        })?;
        Ok(times)
    }

    /// A layer in a few words, e.g. "7: int8 conv 3x3/2 64->64 groups 64".
    pub fn describe(&self, i: usize) -> String {
        let conv = |c: &Conv| match c {
            Conv::I8(q) => format!("int8 {}", q.describe()),
            Conv::F32(f) => format!("f32 {}", f.describe()),
        };
        let what = match &self.layers[i] {
            Layer::Conv { conv: c, .. } => conv(c),
            Layer::Affine { table, .. } => {
                format!("{} affine", if table.is_some() { "int8" } else { "f32" })
            }
            Layer::Add { .. } => {
                format!("{} add", if self.quantized[i + 1] { "int8" } else { "f32" })
            }
        };
        format!("{i}: {what}")
    }

    fn run_timed(
        &self,
        faces: &[&[u8]],
        mut observe: Option<&mut Observe<'_>>,
        timing: &mut dyn FnMut(usize, f64),
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let expected = INPUT_SIZE * INPUT_SIZE * self.input_channels;
        for (index, face) in faces.iter().enumerate() {
            if face.len() != expected {
                return Err(EngineError::Face {
                    index,
                    got: face.len(),
                    expected,
                });
            }
        }
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let shape = [faces.len(), INPUT_SIZE, INPUT_SIZE, self.input_channels];
        let pixels: Vec<u8> = faces.concat();
        let image = if self.quantized[0] {
            Activation::U8(QTensor {
                data: pixels,
                shape,
                scale: IMAGE_PARAMS.scale,
                zero: IMAGE_PARAMS.zero,
            })
        } else {
            let data = pixels.iter().map(|&p| face_embed::input_value(p)).collect();
            Activation::F32 { data, shape }
        };
        let mut values: Vec<Option<Activation>> = vec![None; self.layers.len() + 1];
        values[0] = Some(image);
        let mut remaining = self.readers.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let start = std::time::Instant::now();
            let out = self.layer(i, layer, &values)?;
            timing(i, start.elapsed().as_secs_f64());
            let read = match layer {
                Layer::Conv { input, .. } | Layer::Affine { input, .. } => [Some(*input), None],
                Layer::Add { a, b } => [Some(*a), Some(*b)],
            };
            for v in read.into_iter().flatten() {
                remaining[v] -= 1;
                if remaining[v] == 0 {
                    values[v] = None;
                }
            }
            if let Some(observe) = observe.as_mut() {
                observe(i + 1, &to_f32(&out));
            }
            values[i + 1] = Some(out);
        }
        let Some(Activation::F32 { data, .. }) = values.pop().flatten() else {
            unreachable!("the graph ends in a linear layer, which writes f32");
        };
        Ok(data
            .chunks(self.embedding_dim)
            .map(<[f32]>::to_vec)
            .collect())
    }

    fn layer(
        &self,
        i: usize,
        layer: &Layer,
        values: &[Option<Activation>],
    ) -> Result<Activation, EngineError> {
        let get = |v: usize| {
            values[v]
                .as_ref()
                .expect("values live until their last reader")
        };
        let out_params = self.quantized[i + 1].then(|| self.params[i + 1]).flatten();
        let conv_err = |source| EngineError::Conv { layer: i, source };
        let run_conv = |conv: &Conv, input: usize, output: Option<QuantParams>| match conv {
            Conv::I8(q) => {
                let x = as_u8(get(input), self.params[input]);
                let output = output.map_or(Output::F32, |p| Output::U8 {
                    scale: p.scale,
                    zero: p.zero,
                });
                q.forward(&x, output, self.kernel).map_err(conv_err)
            }
            Conv::F32(f) => {
                let (data, shape) = as_f32(get(input));
                Ok(f.forward(&data, shape, output))
            }
        };
        Ok(match layer {
            Layer::Conv { input, conv } => run_conv(conv, *input, out_params)?,
            Layer::Affine {
                input,
                scale,
                shift,
                table,
            } => match table {
                Some(table) => {
                    let x = as_u8(get(*input), self.params[*input]);
                    let c = x.shape[3];
                    let p = out_params.expect("int8 affine has output params");
                    let mut data = vec![0u8; x.data.len()];
                    data.par_chunks_mut(c * 64)
                        .zip(x.data.par_chunks(c * 64))
                        .for_each(|(o, v)| {
                            for (o, v) in o.chunks_exact_mut(c).zip(v.chunks_exact(c)) {
                                for ((o, &q), lookup) in
                                    o.iter_mut().zip(v).zip(table.chunks_exact(256))
                                {
                                    *o = lookup[q as usize];
                                }
                            }
                        });
                    Activation::U8(QTensor {
                        data,
                        shape: x.shape,
                        scale: p.scale,
                        zero: p.zero,
                    })
                }
                None => {
                    let (x, shape) = as_f32(get(*input));
                    let mut data = x.into_owned();
                    for row in data.chunks_exact_mut(shape[3]) {
                        for ((v, s), t) in row.iter_mut().zip(scale).zip(shift) {
                            *v = *v * s + t;
                        }
                    }
                    Activation::F32 { data, shape }
                }
            },
            Layer::Add { a, b } => match out_params {
                Some(p) => {
                    let x = as_u8(get(*a), self.params[*a]);
                    let y = as_u8(get(*b), self.params[*b]);
                    Activation::U8(
                        elementwise::add(&x, &y, p)
                            .map_err(|source| EngineError::Elementwise { layer: i, source })?,
                    )
                }
                None => {
                    let (x, shape) = as_f32(get(*a));
                    let (y, _) = as_f32(get(*b));
                    let data = x.iter().zip(y.iter()).map(|(x, y)| x + y).collect();
                    Activation::F32 { data, shape }
                }
            },
        })
    }
}

/// Replaces a node's weights (the rest is copied).
pub(crate) fn map_weights<A, B>(node: &Node<A>, mut f: impl FnMut(&A) -> B) -> Node<B> {
    match node {
        Node::Conv { input, conv } => Node::Conv {
            input: *input,
            conv: ConvLayer {
                weights: f(&conv.weights),
                shape: conv.shape,
                bias: conv.bias.clone(),
                prelu: conv.prelu.clone(),
                stride: conv.stride,
                padding: conv.padding,
                groups: conv.groups,
            },
        },
        Node::Affine {
            input,
            scale,
            shift,
        } => Node::Affine {
            input: *input,
            scale: scale.clone(),
            shift: shift.clone(),
        },
        Node::Add { a, b } => Node::Add { a: *a, b: *b },
        Node::Linear {
            input,
            weights,
            bias,
        } => Node::Linear {
            input: *input,
            weights: f(weights),
            bias: bias.clone(),
        },
    }
}

fn build_conv(conv: &ConvLayer<Weights>) -> Result<Conv, ConvError> {
    Ok(match &conv.weights {
        Weights::I8 { q, scales } => Conv::I8(QConv2d::from_quantized(
            q,
            scales.clone(),
            conv.shape,
            conv.groups,
            Some(&conv.bias),
            conv.prelu.as_deref(),
            conv.stride,
            conv.padding,
        )?),
        Weights::F32(w) => Conv::F32(FloatConv::new(w, conv)),
    })
}

/// `out[c][q] = quantize(scale[c] * real(q) + shift[c])`: a u8-to-u8 per-channel affine is a
/// lookup.
fn affine_table(scale: &[f32], shift: &[f32], input: QuantParams, output: QuantParams) -> Vec<u8> {
    let mut table = Vec::with_capacity(scale.len() * 256);
    for (s, t) in scale.iter().zip(shift) {
        for q in 0..256 {
            let real = input.scale * (q as f32 - input.zero as f32);
            table.push(output.quantize(s * real + t));
        }
    }
    table
}

fn to_f32(a: &Activation) -> Cow<'_, [f32]> {
    match a {
        Activation::F32 { data, .. } => Cow::Borrowed(data),
        Activation::U8(t) => Cow::Owned(
            t.data
                .iter()
                .map(|&q| t.scale * (q as f32 - t.zero as f32))
                .collect(),
        ),
    }
}

fn as_f32(a: &Activation) -> (Cow<'_, [f32]>, [usize; 4]) {
    (to_f32(a), a.shape())
}

/// The value as u8 on its grid (`params`; a u8 value is already on it).
fn as_u8(a: &Activation, params: Option<QuantParams>) -> Cow<'_, QTensor> {
    match a {
        Activation::U8(t) => Cow::Borrowed(t),
        Activation::F32 { data, shape } => {
            let p = params.expect("checked when the engine was built");
            Cow::Owned(QTensor {
                data: data.iter().map(|&v| p.quantize(v)).collect(),
                shape: *shape,
                scale: p.scale,
                zero: p.zero,
            })
        }
    }
}

/// An f32 convolution with BatchNorm folded: im2col and the `gemm` crate for dense layers,
/// direct loops for grouped ones; bias and PReLU fused.
#[derive(Debug)]
struct FloatConv {
    /// Dense: `[k, cout]` in im2col order `(ky, kx, ci)`; grouped: `[k * k][cpg][cout]`.
    weights: Vec<f32>,
    bias: Vec<f32>,
    prelu: Option<Vec<f32>>,
    shape: [usize; 4],
    groups: usize,
    stride: usize,
    padding: usize,
}

impl FloatConv {
    fn new(w: &[f32], conv: &ConvLayer<Weights>) -> Self {
        let cout = conv.shape[0];
        let weights = if conv.groups == 1 {
            im2col_weights(w, conv.shape, 1)
        } else {
            relayout(w, conv.shape, cout / conv.groups)
        };
        Self {
            weights,
            bias: conv.bias.clone(),
            prelu: conv.prelu.clone(),
            shape: conv.shape,
            groups: conv.groups,
            stride: conv.stride,
            padding: conv.padding,
        }
    }

    fn describe(&self) -> String {
        describe_conv(self.shape, self.groups, self.stride)
    }

    /// `x` is `[n, h, w, c]` (shapes were checked when the graph was built). Writes u8 on
    /// `output`'s grid when given.
    fn forward(
        &self,
        x: &[f32],
        [n, h, w, c]: [usize; 4],
        output: Option<QuantParams>,
    ) -> Activation {
        let [cout, cpg, kh, kw] = self.shape;
        let side = |size, k| out_size(size, k, self.stride, self.padding);
        let (oh, ow) = (side(h, kh), side(w, kw));
        let m = n * oh * ow;
        let shape = [n, oh, ow, cout];
        let (bias, alpha) = (&self.bias, self.prelu.as_deref());
        // Tiles of output pixels as the int8 layers do: a line for grouped layers, up to 64
        // pixels of im2col rows and one single-threaded GEMM for dense ones; but small maps
        // (the last stages) in one multi-threaded GEMM, as every tile would stream all of the
        // layer's f32 weights (9 MiB in IResNet's last stage).
        let whole = self.groups == 1 && m < 256;
        let tile = match (self.groups, whole) {
            (1, true) => m,
            (1, false) => tile_rows(m),
            _ => ow,
        };
        let lda = cpg * kh * kw;
        let im2col = Im2col::new([n, h, w, c], [kh, kw], self.stride, self.padding, lda);
        let g = Grouped::of(self.shape, self.groups, self.stride, self.padding, [h, w]);
        let sums = |t: usize, scratch: &mut (Vec<f32>, Window), y: &mut [f32]| {
            if self.groups > 1 {
                return line(g, &mut scratch.1, x, |v| v, &self.weights, t, y);
            }
            let rows = y.len() / cout;
            let a = im2col.rows(x, 0.0, t * tile, rows, &mut scratch.0);
            cpu_conv::matmul_rows(a, rows, lda, &self.weights, cout, y, whole);
        };
        match output {
            None => {
                let mut y = vec![0f32; m * cout];
                y.par_chunks_mut(tile * cout).enumerate().for_each_init(
                    Default::default,
                    |scratch, (t, y)| {
                        sums(t, scratch, y);
                        finish_float_rows(y, bias, alpha, None)
                    },
                );
                Activation::F32 { data: y, shape }
            }
            Some(p) => {
                let (inv, offset) = (1.0 / p.scale, p.zero as f32 + 0.5);
                let mut data = vec![0u8; m * cout];
                data.par_chunks_mut(tile * cout).enumerate().for_each_init(
                    || (Vec::new(), Default::default()),
                    |(y, scratch), (t, q)| {
                        y.resize(q.len(), 0.0);
                        sums(t, scratch, y);
                        finish_float_rows(y, bias, alpha, Some((inv, offset, q)))
                    },
                );
                Activation::U8(QTensor {
                    data,
                    shape,
                    scale: p.scale,
                    zero: p.zero,
                })
            }
        }
    }
}

/// The engine embeds like any other model for `eval` and the server (batches of 32).
impl face_embed::Embedder for Engine {
    fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }

    fn embed(&self, faces: &[image::RgbImage]) -> Result<Vec<Vec<f32>>, face_embed::EmbedError> {
        let mut out = Vec::with_capacity(faces.len());
        for batch in faces.chunks(32) {
            let raw: Vec<&[u8]> = batch.iter().map(|f| f.as_raw().as_slice()).collect();
            out.extend(
                Engine::embed(self, &raw)
                    .map_err(|e| face_embed::EmbedError::Input(e.to_string()))?,
            );
        }
        Ok(out)
    }
}
