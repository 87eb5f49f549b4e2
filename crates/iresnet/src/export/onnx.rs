//! ONNX export: the backbone as insightface's recognition model packs lay it out, so their
//! Python `model_zoo` (and ONNX Runtime, TensorRT, Triton) load it in place of theirs.
//!
//! - Input `input.1`, `[batch, 3, 112, 112]` float32, RGB, normalised `(x - 127.5) / 127.5`
//!   outside the graph. insightface's `ArcFaceONNX` picks exactly that normalisation when the
//!   graph's first nodes are not named `Sub`/`Mul` (its test for MXNet-era models that
//!   normalise inside), and reads the input size off the input's shape.
//! - Output `embedding`, `[batch, 512]`, not normalised (insightface normalises afterwards).
//! - The batch dimension is symbolic (`batch`); opset 13.
//! - Convolutions are followed by explicit `BatchNormalization` nodes with the running
//!   statistics, not folded, so the file holds exactly our weights (runtimes fold them when
//!   they load the graph, and our importer reads them back unchanged).

use burn::nn::BatchNorm;
use burn::tensor::backend::Backend;
use onnx_io::{attr_float, attr_int, attr_ints, DataType, Dim, GraphBuilder};

use super::{param_values, tensor_values, BatchNormValues};
use crate::conv::ConvSpec;
use crate::dataflow::{Dataflow, Named, Op};
use crate::error::{BackboneError, Result};
use crate::preprocess::INPUT_SIZE;

/// The opset written.
pub const ONNX_OPSET: i64 = 13;
/// The input's name, as in insightface's packs.
pub const ONNX_INPUT: &str = "input.1";
/// The output's name.
pub const ONNX_OUTPUT: &str = "embedding";

/// What to write besides the graph.
#[derive(Debug, Clone, Default)]
pub struct OnnxOptions {
    /// Store weights in float16 (half the file; cast to float32 inside the graph).
    pub f16: bool,
    /// Metadata key/values (architecture, producer run, ...).
    pub metadata: Vec<(String, String)>,
}

struct Emitter {
    g: GraphBuilder,
}

impl Emitter {
    fn batch_norm<B: Backend>(&mut self, x: &str, bn: &Named<'_, BatchNorm<B>>) -> String {
        let v = BatchNormValues::of(bn.module);
        let c = [v.gamma.len()];
        let p = &bn.torch;
        let ins = [
            x.to_string(),
            self.g.weight(&format!("{p}.weight"), &c, &v.gamma),
            self.g.weight(&format!("{p}.bias"), &c, &v.beta),
            self.g.weight(&format!("{p}.running_mean"), &c, &v.mean),
            self.g.weight(&format!("{p}.running_var"), &c, &v.var),
        ];
        let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
        self.g.node(
            "BatchNormalization",
            &ins,
            vec![attr_float("epsilon", v.eps)],
        )
    }

    fn op<B: Backend>(&mut self, op: &Op<'_, B>, values: &[String]) -> Result<String> {
        let value = |i: &usize| values[*i].as_str();
        Ok(match op {
            Op::Conv {
                input,
                conv,
                bn,
                prelu,
            } => {
                let spec = ConvSpec::exact(conv.module).ok_or_else(|| {
                    BackboneError::InvalidConfig(format!(
                        "{}: only square, symmetric-padding convolutions export",
                        conv.burn
                    ))
                })?;
                let w = &conv.module.weight;
                let mut ins = vec![
                    value(input).to_string(),
                    self.g.weight(
                        &format!("{}.weight", conv.torch),
                        &w.dims(),
                        &param_values(w),
                    ),
                ];
                if let Some(b) = &conv.module.bias {
                    let vals = param_values(b);
                    ins.push(
                        self.g
                            .weight(&format!("{}.bias", conv.torch), &[vals.len()], &vals),
                    );
                }
                let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
                let (k, s, p) = (spec.kernel as i64, spec.stride as i64, spec.padding as i64);
                let y = self.g.node(
                    "Conv",
                    &ins,
                    vec![
                        attr_ints("kernel_shape", &[k, k]),
                        attr_ints("strides", &[s, s]),
                        attr_ints("pads", &[p, p, p, p]),
                        attr_ints("dilations", &[1, 1]),
                        attr_int("group", spec.groups as i64),
                    ],
                );
                let y = self.batch_norm(&y, bn);
                match prelu {
                    Some(pr) => {
                        let slopes = param_values(&pr.module.alpha);
                        let shape = [slopes.len(), 1, 1];
                        let a = self
                            .g
                            .weight(&format!("{}.weight", pr.torch), &shape, &slopes);
                        self.g.node("PRelu", &[&y, &a], vec![])
                    }
                    None => y,
                }
            }
            Op::Norm { input, bn } => self.batch_norm(value(input), bn),
            Op::Add { a, b } => self.g.node("Add", &[value(a), value(b)], vec![]),
            Op::Embedding {
                input,
                pre,
                fc,
                features,
            } => {
                let mut x = value(input).to_string();
                if let Some(pre) = pre {
                    x = self.batch_norm(&x, pre);
                }
                let flat = self.g.node("Flatten", &[&x], vec![attr_int("axis", 1)]);
                let [d_in, d_out] = fc.module.weight.dims();
                let w = tensor_values(fc.module.weight.val().transpose());
                let w = self
                    .g
                    .weight(&format!("{}.weight", fc.torch), &[d_out, d_in], &w);
                let mut ins = vec![flat, w];
                if let Some(b) = &fc.module.bias {
                    ins.push(self.g.weight(
                        &format!("{}.bias", fc.torch),
                        &[d_out],
                        &param_values(b),
                    ));
                }
                let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
                let y = self.g.node("Gemm", &ins, vec![attr_int("transB", 1)]);
                self.batch_norm(&y, features)
            }
        })
    }
}

/// The backbone described by `flow` as an ONNX model's bytes.
pub fn to_onnx<B: Backend>(
    flow: &Dataflow<'_, B>,
    name: &str,
    options: &OnnxOptions,
) -> Result<Vec<u8>> {
    let dtype = if options.f16 {
        DataType::F16
    } else {
        DataType::F32
    };
    let mut e = Emitter {
        g: GraphBuilder::new(name, dtype),
    };
    let size = Dim::Fixed(INPUT_SIZE);
    e.g.input(
        ONNX_INPUT,
        &[Dim::Named("batch"), Dim::Fixed(3), size, size],
    );
    let mut values = vec![ONNX_INPUT.to_string()];
    for op in &flow.ops {
        let v = e.op(op, &values)?;
        values.push(v);
    }
    let Some(Op::Embedding { fc, .. }) = flow.ops.last() else {
        return Err(BackboneError::InvalidConfig(
            "the dataflow does not end in an embedding".into(),
        ));
    };
    let dim = fc.module.weight.dims()[1];
    let last = values.last().expect("the input is value 0").clone();
    e.g.node_to("Identity", &[&last], ONNX_OUTPUT, vec![]);
    e.g.output(ONNX_OUTPUT, &[Dim::Named("batch"), Dim::Fixed(dim)]);
    let metadata: Vec<(&str, String)> = options
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    Ok(e.g.finish(ONNX_OPSET, "arcface-rs", &metadata))
}
