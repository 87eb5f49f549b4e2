//! A parsed ONNX file: nodes in graph order, constant tensors by name, the graph's inputs and
//! outputs.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use crate::proto::{AttributeProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use crate::{OnnxError, Result};

/// A graph input or output: its name, element type and dimensions (`None` where symbolic).
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    /// The value's name in the graph.
    pub name: String,
    /// `TensorProto.DataType` number (1 = float).
    pub elem_type: i32,
    /// Dimensions; `None` for a named (dynamic) one such as the batch.
    pub dims: Vec<Option<i64>>,
}

impl From<&ValueInfoProto> for ValueInfo {
    fn from(v: &ValueInfoProto) -> Self {
        let tensor = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
        Self {
            name: v.name.clone(),
            elem_type: tensor.map_or(0, |t| t.elem_type),
            dims: tensor
                .and_then(|t| t.shape.as_ref())
                .map(|s| s.dim.iter().map(|d| d.dim_value).collect())
                .unwrap_or_default(),
        }
    }
}

/// An ONNX model file, decoded.
#[derive(Debug, Clone)]
pub struct OnnxFile {
    /// Nodes in graph (topological) order, `Constant` nodes included.
    pub nodes: Vec<NodeProto>,
    /// Initializers and `Constant` node values, by output name.
    pub constants: HashMap<String, TensorProto>,
    /// Graph inputs that are not initializers (what a caller feeds).
    pub inputs: Vec<ValueInfo>,
    /// Graph outputs in declaration order.
    pub outputs: Vec<ValueInfo>,
    /// The tool that wrote the file.
    pub producer: String,
    /// The default-domain opset.
    pub opset: i64,
    /// Model metadata (`metadata_props`).
    pub metadata: Vec<(String, String)>,
}

impl OnnxFile {
    /// Reads and decodes an ONNX file.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Decodes an ONNX model from its bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let model = ModelProto::decode(bytes).map_err(|e| {
            OnnxError::Format(format!(
                "protobuf decoding failed ({e}); is this an .onnx file?"
            ))
        })?;
        let graph = model
            .graph
            .ok_or_else(|| OnnxError::Format("the model has no graph".into()))?;
        let mut constants: HashMap<String, TensorProto> = graph
            .initializer
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        for node in graph.node.iter().filter(|n| n.op_type == "Constant") {
            if let (Some(out), Some(t)) = (
                node.output.first(),
                node.attribute.iter().find_map(|a| a.t.clone()),
            ) {
                constants.insert(out.clone(), t);
            }
        }
        let inputs = graph
            .input
            .iter()
            .filter(|v| !constants.contains_key(&v.name))
            .map(ValueInfo::from)
            .collect();
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(0, |o| o.version);
        Ok(Self {
            nodes: graph.node,
            constants,
            inputs,
            outputs: graph.output.iter().map(ValueInfo::from).collect(),
            producer: model.producer_name,
            opset,
            metadata: model
                .metadata_props
                .into_iter()
                .map(|e| (e.key, e.value))
                .collect(),
        })
    }

    /// A constant tensor by name.
    pub fn constant(&self, name: &str) -> Option<&TensorProto> {
        self.constants.get(name)
    }
}

/// Attribute lookups on a node.
pub trait NodeAttrs {
    /// The attribute called `name`.
    fn attr(&self, name: &str) -> Option<&AttributeProto>;
    /// An integer attribute, or `default`.
    fn attr_i(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map_or(default, |a| a.i)
    }
    /// An integer-list attribute, or `default`.
    fn attr_ints(&self, name: &str, default: &[i64]) -> Vec<i64> {
        self.attr(name)
            .map_or_else(|| default.to_vec(), |a| a.ints.clone())
    }
    /// A string attribute, or `default`.
    fn attr_s(&self, name: &str, default: &str) -> String {
        self.attr(name).map_or_else(
            || default.to_string(),
            |a| String::from_utf8_lossy(&a.s).into_owned(),
        )
    }
}

impl NodeAttrs for NodeProto {
    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.attribute.iter().find(|a| a.name == name)
    }
}
