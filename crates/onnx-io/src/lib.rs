//! ONNX model files in and out: the part of `onnx.proto` that face-recognition and detection
//! graphs use, decoded and encoded with `prost`.
//!
//! One crate owns the protobuf definitions so the backbone importer, the exporter and the SCRFD
//! detector read and write the same messages. It has no Burn: reading a file gives nodes and
//! constant tensors as plain arrays ([`Array`]); writing goes through [`GraphBuilder`].

mod build;
mod model;
pub mod proto;
mod tensor;

pub use build::{attr_float, attr_int, attr_ints, Dim, GraphBuilder, IR_VERSION};
pub use model::{NodeAttrs, OnnxFile, ValueInfo};
pub use tensor::{Array, DataType};

/// What can go wrong reading an ONNX file or one of its tensors.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes are not an ONNX model, or the model is not one this crate can read.
    #[error("{0}")]
    Format(String),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, OnnxError>;
