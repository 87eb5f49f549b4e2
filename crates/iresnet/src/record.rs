//! Self-describing model files: a header naming the architecture, then a Burn record.
//!
//! ```text
//! b"ARCFRSM1" | u32 LE header length | JSON header | Burn NamedMpk record (f32 or f16)
//! ```
//! The header holds the [`BackboneConfig`], the precision, and the payload's length and CRC32,
//! so a file alone says what it holds, a truncated or corrupted file is refused on load, and a
//! file holding another architecture than the one asked for is a clear error. Files are
//! written to a temporary sibling and renamed into place, so a crash never leaves half a model.

use cpu_conv::ConvBackend;
use std::path::Path;

use burn::module::Module;
use burn::record::{FullPrecisionSettings, HalfPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::backbone::{AnyBackbone, Architecture, BackboneConfig};
use crate::error::{BackboneError, Result};

/// The first eight bytes of every model file (loaders recognise the format by them).
pub const MAGIC: &[u8; 8] = b"ARCFRSM1";
const FORMAT_VERSION: u32 = 1;

/// Storage precision of the weights in a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Full precision.
    #[default]
    F32,
    /// Half the size; weights are widened back to f32 on load.
    F16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            _ => Err(format!("precision must be f32 or f16, got `{s}`")),
        }
    }
}

/// What a model file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelHeader {
    /// The file format's version.
    pub format_version: u32,
    /// The architecture, enough to rebuild the module.
    pub backbone: BackboneConfig,
    /// How the weights are stored.
    pub precision: Precision,
    /// D, the embedding size (must agree with `backbone`).
    pub embedding_dim: usize,
    /// Bytes of the weights after the header.
    pub payload_bytes: u64,
    /// CRC-32 of those bytes.
    pub payload_crc32: u32,
    /// Free text: where the weights came from (e.g. the imported file).
    #[serde(default)]
    pub source: String,
}

/// Writes `model` to `path` atomically.
pub fn save_model<B: ConvBackend>(
    model: &AnyBackbone<B>,
    path: &Path,
    precision: Precision,
    source: &str,
) -> Result<ModelHeader> {
    let record = model.clone().into_record();
    let payload = match precision {
        Precision::F32 => NamedMpkBytesRecorder::<FullPrecisionSettings>::new().record(record, ()),
        Precision::F16 => NamedMpkBytesRecorder::<HalfPrecisionSettings>::new().record(record, ()),
    }
    .map_err(|e| BackboneError::Record(e.to_string()))?;
    let spec = model.spec();
    let header = ModelHeader {
        format_version: FORMAT_VERSION,
        embedding_dim: spec.embedding_dim(),
        backbone: spec,
        precision,
        payload_bytes: payload.len() as u64,
        payload_crc32: crc32fast::hash(&payload),
        source: source.to_string(),
    };
    let json = serde_json::to_vec(&header).expect("header serialises");
    let mut bytes = Vec::with_capacity(12 + json.len() + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(&payload);
    atomic_file::write(path, &bytes).map_err(|e| BackboneError::io(path, e))?;
    Ok(header)
}

/// Reads a model file's header, after verifying the whole file (length and checksum).
pub fn read_header(path: &Path) -> Result<ModelHeader> {
    read_verified(path).map(|(header, _)| header)
}

/// Loads any model file, building the architecture its header names.
pub fn load_model<B: ConvBackend>(
    path: &Path,
    device: &B::Device,
) -> Result<(AnyBackbone<B>, ModelHeader)> {
    let (header, payload) = read_verified(path)?;
    let model = build(path, &header, payload, device)?;
    Ok((model, header))
}

/// Loads a model file that must hold `expected`'s architecture.
pub fn load_model_as<B: ConvBackend>(
    path: &Path,
    expected: &BackboneConfig,
    device: &B::Device,
) -> Result<AnyBackbone<B>> {
    let (header, payload) = read_verified(path)?;
    if &header.backbone != expected {
        return Err(BackboneError::WrongArchitecture {
            path: path.to_path_buf(),
            expected: expected.describe(),
            found: header.backbone.describe(),
        });
    }
    build(path, &header, payload, device)
}

/// Builds the header's architecture and loads the weights into it.
fn build<B: ConvBackend>(
    path: &Path,
    header: &ModelHeader,
    payload: Vec<u8>,
    device: &B::Device,
) -> Result<AnyBackbone<B>> {
    let fresh = header.backbone.init::<B>(device)?;
    let expected = tensor_shapes(&fresh);
    let model = load_payload(fresh, header.precision, payload, device)?;
    // Burn loads tensors of any shape into a module; the header and the weights must agree.
    for (name, shape) in tensor_shapes(&model) {
        match expected.get(&name) {
            Some(want) if *want == shape => {}
            want => {
                return Err(BackboneError::BadModelFile {
                    path: path.to_path_buf(),
                    message: format!(
                        "tensor `{name}` has shape {shape:?} but the header's architecture needs {want:?}"
                    ),
                })
            }
        }
    }
    Ok(model)
}

fn tensor_shapes<B: Backend>(
    model: &AnyBackbone<B>,
) -> std::collections::HashMap<String, Vec<usize>> {
    use burn_store::ModuleSnapshot;
    model
        .collect(None, None, true)
        .into_iter()
        .map(|s| (s.full_path(), s.shape.to_vec()))
        .collect()
}

fn load_payload<B: Backend, M: Module<B>>(
    module: M,
    precision: Precision,
    bytes: Vec<u8>,
    device: &B::Device,
) -> Result<M> {
    let record = match precision {
        Precision::F32 => NamedMpkBytesRecorder::<FullPrecisionSettings>::new().load(bytes, device),
        Precision::F16 => NamedMpkBytesRecorder::<HalfPrecisionSettings>::new().load(bytes, device),
    }
    .map_err(|e| BackboneError::Record(e.to_string()))?;
    Ok(module.load_record(record))
}

/// Reads the file once, checks signature, header, length and checksum, and returns the header
/// with the weights (the file's bytes minus the header, without a second copy).
fn read_verified(path: &Path) -> Result<(ModelHeader, Vec<u8>)> {
    let mut bytes = std::fs::read(path).map_err(|e| BackboneError::io(path, e))?;
    let (header, payload_start) = parse(path, &bytes)?;
    bytes.drain(..payload_start);
    Ok((header, bytes))
}

/// The header and where the weights start.
fn parse(path: &Path, bytes: &[u8]) -> Result<(ModelHeader, usize)> {
    let bad = |message: &str| BackboneError::BadModelFile {
        path: path.to_path_buf(),
        message: message.to_string(),
    };
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(bad(
            "missing the ARCFRSM1 signature (import ONNX or .pth files with `arcface import`)",
        ));
    }
    let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let json = bytes
        .get(12..12 + len)
        .ok_or_else(|| bad("truncated header"))?;
    let header: ModelHeader =
        serde_json::from_slice(json).map_err(|e| bad(&format!("unreadable header: {e}")))?;
    if header.format_version != FORMAT_VERSION {
        return Err(bad(&format!(
            "format version {} is not supported",
            header.format_version
        )));
    }
    let payload = &bytes[12 + len..];
    if payload.len() as u64 != header.payload_bytes {
        return Err(bad(&format!(
            "truncated or padded: weights take {} bytes, the header says {}",
            payload.len(),
            header.payload_bytes
        )));
    }
    if crc32fast::hash(payload) != header.payload_crc32 {
        return Err(bad("checksum mismatch: the weights are corrupted"));
    }
    // The summary field must agree with the architecture (whose weights are checked on load).
    if header.embedding_dim != header.backbone.embedding_dim() {
        return Err(bad(&format!(
            "the header says {}-d embeddings, its architecture {}-d",
            header.embedding_dim,
            header.backbone.embedding_dim()
        )));
    }
    Ok((header, 12 + len))
}
