//! PyTorch's `torch.save` format for a state dict: a zip archive (stored, not compressed) with
//! the pickled `OrderedDict` in `archive/data.pkl`, one raw little-endian storage per tensor
//! in `archive/data/<key>`, and the `version`/`byteorder` records `torch.load` checks.
//!
//! The pickle uses only what `torch.load(weights_only=True)` (the default since PyTorch 2.6)
//! accepts: `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`
//! and `torch.LongStorage`.

use std::io::Write;
use std::path::Path;

use super::TorchTensor;
use crate::error::{BackboneError, Result};

/// A pickle (protocol 2) under construction.
struct Pickle(Vec<u8>);

impl Pickle {
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0.extend(format!("{module}\n{name}\n").as_bytes());
    }
    fn string(&mut self, s: &str) {
        self.0.push(b'X'); // BINUNICODE
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
    }
    fn int(&mut self, v: usize) {
        self.0.push(b'J'); // BININT (signed 32-bit)
        self.0.extend((v as i32).to_le_bytes());
    }
    fn tuple(&mut self, values: &[usize]) {
        self.0.push(b'(');
        for &v in values {
            self.int(v);
        }
        self.0.push(b't');
    }
    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.0.extend([b')', b'R']); // EMPTY_TUPLE, REDUCE
    }
    /// `_rebuild_tensor_v2(storage, 0, shape, contiguous strides, False, OrderedDict())`.
    fn tensor(&mut self, storage_key: &str, storage_type: &str, shape: &[usize]) {
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.0.push(b'(');
        // The persistent id of the storage: ('storage', type, key, location, numel).
        self.0.push(b'(');
        self.string("storage");
        self.global("torch", storage_type);
        self.string(storage_key);
        self.string("cpu");
        self.int(shape.iter().product::<usize>().max(1));
        self.0.extend([b't', b'Q']); // TUPLE, BINPERSID
        self.int(0);
        self.tuple(shape);
        let mut strides = vec![1usize; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        self.tuple(&strides);
        self.0.push(0x89); // NEWFALSE: requires_grad
        self.empty_ordered_dict(); // backward hooks
        self.0.extend([b't', b'R']);
    }
}

/// The pickled state dict and the storages it refers to, by key.
fn pickle(tensors: &[TorchTensor]) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let mut p = Pickle(vec![0x80, 2]); // PROTO 2
    let mut storages = Vec::new();
    p.empty_ordered_dict();
    p.0.push(b'(');
    for (i, t) in tensors.iter().enumerate() {
        let key = i.to_string();
        p.string(&t.key);
        let (storage_type, bytes) = match &t.values {
            Some(v) => (
                "FloatStorage",
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            None => ("LongStorage", 0i64.to_le_bytes().to_vec()),
        };
        p.tensor(&key, storage_type, &t.shape);
        storages.push((key, bytes));
    }
    p.0.extend([b'u', b'.']); // SETITEMS, STOP
    (p.0, storages)
}

/// The `.pth` file's bytes.
pub fn pth_bytes(tensors: &[TorchTensor]) -> std::io::Result<Vec<u8>> {
    let (data_pkl, storages) = pickle(tensors);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut entry = |name: &str, bytes: &[u8]| -> std::io::Result<()> {
        zip.start_file(format!("archive/{name}"), stored)
            .map_err(std::io::Error::other)?;
        zip.write_all(bytes)
    };
    entry("data.pkl", &data_pkl)?;
    entry("byteorder", b"little")?;
    for (key, bytes) in &storages {
        entry(&format!("data/{key}"), bytes)?;
    }
    entry("version", b"3\n")?;
    Ok(zip.finish().map_err(std::io::Error::other)?.into_inner())
}

/// Writes `tensors` as a PyTorch state dict (`torch.load` + `load_state_dict`), atomically.
pub fn write_pth(path: &Path, tensors: &[TorchTensor]) -> Result<()> {
    let bytes = pth_bytes(tensors).map_err(|e| BackboneError::io(path, e))?;
    atomic_file::write(path, &bytes).map_err(|e| BackboneError::io(path, e))
}
