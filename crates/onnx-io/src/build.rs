//! Writing ONNX graphs: nodes, initializers and typed inputs/outputs, encoded as one
//! `ModelProto`.

use prost::Message;

use crate::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetId, StringStringEntry,
    TensorProto, TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
};
use crate::tensor::DataType;

/// ONNX IR version written: 8 (ONNX 1.10+), readable by every maintained runtime.
pub const IR_VERSION: i64 = 8;

/// Builds one graph node by node; values are named by the caller or numbered.
///
/// Weights go in as `f32` and are stored as `weight_type`: with `F16` each weight is stored in
/// half precision behind a `Cast` to float, so the file halves while every runtime still
/// computes in `f32` (runtimes fold the casts when they load the model).
#[derive(Debug)]
pub struct GraphBuilder {
    graph: GraphProto,
    weight_type: DataType,
    next_id: usize,
}

impl GraphBuilder {
    /// An empty graph called `name`, storing weights as `weight_type` (`F32` or `F16`).
    pub fn new(name: &str, weight_type: DataType) -> Self {
        Self {
            graph: GraphProto {
                name: name.into(),
                ..Default::default()
            },
            weight_type,
            next_id: 0,
        }
    }

    fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                tensor_type: Some(TensorTypeProto {
                    elem_type: DataType::F32 as i32,
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| match d {
                                Dim::Fixed(v) => Dimension {
                                    dim_value: Some(*v as i64),
                                    dim_param: None,
                                },
                                Dim::Named(p) => Dimension {
                                    dim_value: None,
                                    dim_param: Some((*p).into()),
                                },
                            })
                            .collect(),
                    }),
                }),
            }),
        }
    }

    /// Declares a float input of the graph.
    pub fn input(&mut self, name: &str, dims: &[Dim]) {
        self.graph.input.push(Self::value_info(name, dims));
    }

    /// Declares a float output of the graph (a value some node produces).
    pub fn output(&mut self, name: &str, dims: &[Dim]) {
        self.graph.output.push(Self::value_info(name, dims));
    }

    /// A fresh value name.
    pub fn fresh(&mut self) -> String {
        self.next_id += 1;
        format!("v{}", self.next_id)
    }

    /// Adds a weight and returns the float value to feed nodes with.
    pub fn weight(&mut self, name: &str, shape: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        self.graph
            .initializer
            .push(TensorProto::from_f32(name, shape, data, self.weight_type));
        if self.weight_type == DataType::F32 {
            return name.to_string();
        }
        let out = format!("{name}.f32");
        self.node_to(
            "Cast",
            &[name],
            &out,
            vec![attr_int("to", DataType::F32 as i64)],
        );
        out
    }

    /// Adds an int64 constant (shapes, axes) and returns its name.
    pub fn ints(&mut self, name: &str, data: &[i64]) -> String {
        self.graph
            .initializer
            .push(TensorProto::from_i64(name, data));
        name.to_string()
    }

    /// Adds a node writing a fresh value, which it returns.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh();
        self.node_to(op, inputs, &out, attrs);
        out
    }

    /// Adds a node writing the value `output`.
    pub fn node_to(&mut self, op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) {
        let name = format!("{op}_{}", self.graph.node.len());
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            name,
            op_type: op.into(),
            attribute: attrs,
            domain: String::new(),
        });
    }

    /// Encodes the model: default-domain `opset`, producer and metadata key/values.
    pub fn finish(self, opset: i64, producer: &str, metadata: &[(&str, String)]) -> Vec<u8> {
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: producer.into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(self.graph),
            opset_import: vec![OperatorSetId {
                domain: String::new(),
                version: opset,
            }],
            metadata_props: metadata
                .iter()
                .map(|(k, v)| StringStringEntry {
                    key: (*k).into(),
                    value: v.clone(),
                })
                .collect(),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

/// A dimension of a declared input or output.
#[derive(Debug, Clone, Copy)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A symbolic size (dynamic batch), by name.
    Named(&'static str),
}

/// An integer attribute.
pub fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i,
        r#type: 2,
        ..Default::default()
    }
}

/// A float attribute.
pub fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f,
        r#type: 1,
        ..Default::default()
    }
}

/// An integer-list attribute.
pub fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: ints.to_vec(),
        r#type: 7,
        ..Default::default()
    }
}
