//! safetensors with arcface_torch's names: an 8-byte header length, a JSON header of names,
//! dtypes, shapes and byte ranges, then the raw little-endian data.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::TorchTensor;
use crate::error::{BackboneError, Result};

/// Encodes `tensors` (float32; `num_batches_tracked` as int64) with `metadata`.
pub fn safetensors_bytes(tensors: &[TorchTensor], metadata: &[(&str, String)]) -> Vec<u8> {
    let mut header = Map::new();
    let mut data = Vec::new();
    for t in tensors {
        let start = data.len();
        let dtype = match &t.values {
            Some(v) => {
                data.extend(v.iter().flat_map(|x| x.to_le_bytes()));
                "F32"
            }
            None => {
                data.extend(0i64.to_le_bytes());
                "I64"
            }
        };
        header.insert(
            t.key.clone(),
            json!({"dtype": dtype, "shape": t.shape, "data_offsets": [start, data.len()]}),
        );
    }
    let meta: Map<String, Value> = metadata
        .iter()
        .map(|(k, v)| ((*k).to_string(), Value::String(v.clone())))
        .collect();
    header.insert("__metadata__".into(), Value::Object(meta));
    let mut text = serde_json::to_vec(&Value::Object(header)).expect("JSON encodes");
    // The format pads the header with spaces to 8 bytes so the data is aligned.
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(data);
    out
}

/// Writes `tensors` as a safetensors file, atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[TorchTensor],
    metadata: &[(&str, String)],
) -> Result<()> {
    let bytes = safetensors_bytes(tensors, metadata);
    atomic_file::write(path, &bytes).map_err(|e| BackboneError::io(path, e))
}
