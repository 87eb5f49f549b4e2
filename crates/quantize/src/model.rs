//! Post-training quantisation of a [`Graph`] and the quantized model file.
//!
//! Calibration runs the float engine over aligned faces and watches every value; each gets a u8
//! grid by the chosen [`Method`]. Weights become int8 per output channel, except the first
//! convolution and the embedding layer when asked to stay f32.
//!
//! File (`.aq8`): magic `ARCFQ8\r\n`, format version (u32), payload length (u64), CRC-32 of the
//! payload (u32), then the payload: a JSON header (architecture, options, per-value grids, the
//! graph with each weight array replaced by its place in the blob) and the blob of
//! little-endian weights. Written atomically; loading checks magic, version, length, checksum
//! and every array's place before building anything.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::calibrate::{Method, Observer, QuantParams};
use crate::conv::quantize_per_channel;
use crate::engine::{map_weights, Engine, EngineError, Weights, IMAGE_PARAMS};
use crate::graph::{Graph, GraphError, Node, WeightData};

/// The first eight bytes of every `.aq8` file (loaders recognise the format by them).
pub const MAGIC: &[u8; 8] = b"ARCFQ8\r\n";
/// The file format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const PREAMBLE: usize = 8 + 4 + 8 + 4;

/// What to quantize and how.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantizeOptions {
    /// How each value's grid is calibrated.
    pub method: Method,
    /// Keep the first convolution in f32 (it sees raw pixels; tiny and cheap).
    pub float_first: bool,
    /// Keep the embedding's linear layer in f32 (the largest single layer of an IResNet).
    pub float_last: bool,
}

/// The default keeps 99.999% of each activation's values in range: on w600k_mbf and real faces
/// it gave mean cosine 0.9944 to f32 where 99.99% gave 0.9906, 99.9% 0.9537, min-max 0.9909 and
/// entropy 0.8842 (docs/performance.md).
impl Default for QuantizeOptions {
    fn default() -> Self {
        Self {
            method: Method::Percentile(0.99999),
            float_first: true,
            float_last: false,
        }
    }
}

/// A quantized backbone: the graph with int8 weights and each value's u8 grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizedModel {
    /// The layers, with int8 or f32 weights.
    pub graph: Graph<Weights>,
    /// Per value (the image first): its u8 grid.
    pub params: Vec<Option<QuantParams>>,
    /// The settings it was quantized with.
    pub options: QuantizeOptions,
    /// Faces the ranges were calibrated on.
    pub calibration_faces: usize,
}

/// Why quantisation, saving or loading failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The engine refused the model.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The graph is invalid.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// No calibration face was given.
    #[error("calibration needs at least one face")]
    NoCalibration,
    /// A value saw nothing finite during calibration.
    #[error("value {0} saw no finite values during calibration")]
    Uncalibrated(usize),
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not an `.aq8` file.
    #[error("{path}: not a quantized arcface model (bad magic bytes)")]
    NotAModel {
        /// The file.
        path: String,
    },
    /// An `.aq8` of another format version.
    #[error("{path}: format version {found}, this build reads version {FORMAT_VERSION}")]
    Version {
        /// The file.
        path: String,
        /// Its version.
        found: u32,
    },
    /// The file is shorter than its header says.
    #[error("{path}: truncated: {expected} bytes of payload declared, {found} present")]
    Truncated {
        /// The file.
        path: String,
        /// Payload bytes declared.
        expected: u64,
        /// Payload bytes there.
        found: u64,
    },
    /// The file fails its checks (checksum, header, weights).
    #[error("{path}: corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Calibrates on `faces` (aligned 112x112 RGB, interleaved) and quantises.
pub fn quantize(
    graph: &Graph,
    faces: &[&[u8]],
    options: QuantizeOptions,
) -> Result<QuantizedModel, ModelError> {
    if faces.is_empty() {
        return Err(ModelError::NoCalibration);
    }
    let shapes = graph.shapes()?;
    let float = Engine::float(graph)?;
    let mut observers = vec![Observer::default(); shapes.len()];
    for batch in faces.chunks(8) {
        float.run(batch, &mut |v, data| observers[v].observe(data))?;
    }
    let last = shapes.len() - 1;
    let mut params = vec![None; shapes.len()];
    params[0] = Some(IMAGE_PARAMS);
    for (v, observer) in observers.iter().enumerate().skip(1).take(last - 1) {
        params[v] = Some(
            observer
                .params(options.method)
                .ok_or(ModelError::Uncalibrated(v))?,
        );
    }
    let nodes = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let keep_f32 = match node {
                Node::Conv { .. } => i == 0 && options.float_first,
                Node::Linear { .. } => options.float_last,
                _ => true,
            };
            let mut q = map_weights(node, |w| {
                if keep_f32 {
                    return Weights::F32(w.clone());
                }
                let cout = match node {
                    Node::Conv { conv, .. } => conv.out_channels(),
                    Node::Linear { bias, .. } => bias.len(),
                    _ => 1,
                };
                let (q, scales) = quantize_per_channel(w, cout);
                Weights::I8 { q, scales }
            });
            if let Node::Conv { input: 0, conv } = &mut q {
                absorb_image_shift(conv);
            }
            q
        })
        .collect();
    Ok(QuantizedModel {
        graph: Graph {
            architecture: graph.architecture.clone(),
            nodes,
        },
        params,
        options,
        calibration_faces: faces.len(),
    })
}

/// The int8 image grid reads pixel `p` as `(p - 128) / 127.5`, half a step below the true
/// `(p - 127.5) / 127.5`; the first convolution adds the difference back through its bias
/// (exact away from the zero-padded border).
fn absorb_image_shift(conv: &mut crate::graph::ConvLayer<Weights>) {
    let Weights::I8 { q, scales } = &conv.weights else {
        return;
    };
    let per = q.len() / scales.len().max(1);
    let shift = 128.0 - 127.5;
    for (o, b) in conv.bias.iter_mut().enumerate() {
        let sum: f32 = q[o * per..(o + 1) * per].iter().map(|&v| v as f32).sum();
        *b += sum * scales[o] * shift * IMAGE_PARAMS.scale;
    }
}

/// Where a weight array sits in the blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    offset: usize,
    count: usize,
    /// int8 weights: where their per-channel scales sit (f32).
    scales: Option<(usize, usize)>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    options: QuantizeOptions,
    calibration_faces: usize,
    params: Vec<Option<QuantParams>>,
    graph: Graph<Stored>,
}

impl WeightData for Stored {
    fn count(&self) -> usize {
        self.count
    }
}

impl QuantizedModel {
    /// The runnable engine.
    pub fn engine(&self) -> Result<Engine, ModelError> {
        Ok(Engine::new(&self.graph, Some(&self.params))?)
    }

    /// The file's bytes (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut blob = Vec::new();
        let mut store = |w: &Weights| -> Stored {
            let f32s = |blob: &mut Vec<u8>, v: &[f32]| {
                let offset = blob.len();
                blob.extend(v.iter().flat_map(|x| x.to_le_bytes()));
                (offset, v.len())
            };
            match w {
                Weights::F32(v) => {
                    let (offset, count) = f32s(&mut blob, v);
                    Stored {
                        offset,
                        count,
                        scales: None,
                    }
                }
                Weights::I8 { q, scales } => {
                    let offset = blob.len();
                    blob.extend(q.iter().map(|&b| b as u8));
                    Stored {
                        offset,
                        count: q.len(),
                        scales: Some(f32s(&mut blob, scales)),
                    }
                }
            }
        };
        let nodes: Vec<Node<Stored>> = self
            .graph
            .nodes
            .iter()
            .map(|n| map_weights(n, &mut store))
            .collect();
        let header = Header {
            format: FORMAT_VERSION,
            options: self.options,
            calibration_faces: self.calibration_faces,
            params: self.params.clone(),
            graph: Graph {
                architecture: self.graph.architecture.clone(),
                nodes,
            },
        };
        let json = serde_json::to_vec(&header).expect("the header serialises");
        let mut payload = Vec::with_capacity(8 + json.len() + blob.len());
        payload.extend((json.len() as u64).to_le_bytes());
        payload.extend(&json);
        payload.extend(&blob);
        let mut out = Vec::with_capacity(PREAMBLE + payload.len());
        out.extend(MAGIC);
        out.extend(FORMAT_VERSION.to_le_bytes());
        out.extend((payload.len() as u64).to_le_bytes());
        out.extend(crc32fast::hash(&payload).to_le_bytes());
        out.extend(payload);
        out
    }

    /// Writes the model atomically (a crash leaves the old file or the new one).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        atomic_file::write(path, &self.to_bytes()).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Reads and verifies an `.aq8` file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses and verifies a model file's bytes; `name` is used in errors.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Self, ModelError> {
        let path = name.to_string();
        if bytes.len() < 8 || &bytes[..8] != MAGIC {
            return Err(ModelError::NotAModel { path });
        }
        if bytes.len() < PREAMBLE {
            return Err(ModelError::Truncated {
                path,
                expected: PREAMBLE as u64,
                found: bytes.len() as u64,
            });
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let found = u32_at(8);
        if found != FORMAT_VERSION {
            return Err(ModelError::Version { path, found });
        }
        let declared = u64::from_le_bytes(bytes[12..20].try_into().expect("8"));
        let payload = &bytes[PREAMBLE..];
        if payload.len() as u64 != declared {
            return Err(ModelError::Truncated {
                path,
                expected: declared,
                found: payload.len() as u64,
            });
        }
        let corrupt = |reason: String| ModelError::Corrupt {
            path: name.to_string(),
            reason,
        };
        if crc32fast::hash(payload) != u32_at(20) {
            return Err(corrupt("checksum mismatch".into()));
        }
        let json_len = payload
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8")) as usize)
            .filter(|&n| n <= payload.len() - 8)
            .ok_or_else(|| corrupt("header length out of range".into()))?;
        let header: Header = serde_json::from_slice(&payload[8..8 + json_len])
            .map_err(|e| corrupt(format!("header: {e}")))?;
        let blob = &payload[8 + json_len..];
        // Every array must lie inside the blob before any is read.
        let inside = |offset: usize, bytes: usize| {
            offset
                .checked_add(bytes)
                .is_some_and(|end| end <= blob.len())
        };
        for node in &header.graph.nodes {
            let stored = match node {
                Node::Conv { conv, .. } => &conv.weights,
                Node::Linear { weights, .. } => weights,
                _ => continue,
            };
            let ok = match stored.scales {
                None => stored
                    .count
                    .checked_mul(4)
                    .is_some_and(|b| inside(stored.offset, b)),
                Some((at, n)) => {
                    inside(stored.offset, stored.count)
                        && n.checked_mul(4).is_some_and(|b| inside(at, b))
                }
            };
            if !ok {
                return Err(corrupt("a weight array lies outside the file".into()));
            }
        }
        let f32s = |offset: usize, count: usize| -> Vec<f32> {
            blob[offset..offset + 4 * count]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4")))
                .collect()
        };
        let nodes = header
            .graph
            .nodes
            .iter()
            .map(|n| {
                map_weights(n, |s: &Stored| match s.scales {
                    None => Weights::F32(f32s(s.offset, s.count)),
                    Some((at, n)) => Weights::I8 {
                        q: blob[s.offset..s.offset + s.count]
                            .iter()
                            .map(|&b| b as i8)
                            .collect(),
                        scales: f32s(at, n),
                    },
                })
            })
            .collect();
        let model = Self {
            graph: Graph {
                architecture: header.graph.architecture,
                nodes,
            },
            params: header.params,
            options: header.options,
            calibration_faces: header.calibration_faces,
        };
        model.graph.shapes()?;
        if let Some(node) = first_non_finite(&model.graph) {
            return Err(corrupt(format!(
                "node {node} holds NaN or infinite weights"
            )));
        }
        let bad_grid = |p: &QuantParams| !(p.scale.is_finite() && p.scale > 0.0);
        if let Some(value) = model
            .params
            .iter()
            .position(|p| p.as_ref().is_some_and(bad_grid))
        {
            return Err(corrupt(format!(
                "value {value} has a quantization scale that is not a positive number"
            )));
        }
        Ok(model)
    }
}

/// The first node with a NaN or infinite number in its weights, biases or slopes: a file can
/// pass its checksum and still hold them (written so, or edited and re-summed), and they would
/// turn every embedding into noise without an error.
fn first_non_finite(graph: &Graph<Weights>) -> Option<usize> {
    let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
    let weights = |w: &Weights| match w {
        Weights::F32(v) => finite(v),
        Weights::I8 { scales, .. } => finite(scales),
    };
    graph.nodes.iter().position(|node| match node {
        Node::Conv { conv, .. } => {
            !(weights(&conv.weights)
                && finite(&conv.bias)
                && conv.prelu.as_deref().is_none_or(finite))
        }
        Node::Affine { scale, shift, .. } => !(finite(scale) && finite(shift)),
        Node::Linear {
            weights: w, bias, ..
        } => !(weights(w) && finite(bias)),
        Node::Add { .. } => false,
    })
}
