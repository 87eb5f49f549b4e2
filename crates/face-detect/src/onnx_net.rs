//! A small ONNX graph runner on Burn: the operators detector graphs exported from PyTorch use
//! (convolutions with folded BatchNorm, ReLU, sigmoid, additions, nearest upsampling, and the
//! shape arithmetic around reshapes). Weights become Burn `Conv2d` modules at load, so the
//! convolutions run on [`ConvBackend`]'s kernels; shape arithmetic runs on the host.
//!
//! Anything outside that set is refused when the file is loaded, with the operator's name, so
//! an unsupported graph fails before it runs rather than giving wrong boxes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use cpu_conv::{conv2d, ConvBackend};
use onnx_io::proto::NodeProto;
use onnx_io::{Array, NodeAttrs, OnnxFile};

use crate::error::DetectError;

/// A value flowing through the graph: a float tensor of logical rank <= 4 (stored as rank 4
/// with leading ones), or a short integer vector from shape arithmetic.
#[derive(Clone, Debug)]
enum Value<B: Backend> {
    Float { t: Tensor<B, 4>, rank: usize },
    Ints(Vec<i64>),
}

#[derive(Debug)]
enum Op<B: Backend> {
    Conv(Box<Conv2d<B>>),
    Relu,
    Sigmoid,
    Add,
    Mul,
    /// Per-channel `x * scale + shift` (an inference BatchNormalization).
    Affine(Tensor<B, 4>, Tensor<B, 4>),
    Transpose([usize; 4]),
    Reshape,
    Concat(i64),
    /// Nearest-neighbour resize, `asymmetric` coordinates, `floor` rounding.
    ResizeNearest,
    Shape,
    Gather,
    Unsqueeze,
    Slice,
    Identity,
    /// Channels `[start, start + len)` of a merged convolution's output.
    Narrow(usize, usize),
}

#[derive(Debug)]
struct Step<B: Backend> {
    op: Op<B>,
    inputs: Vec<Option<usize>>,
    output: usize,
    /// Slots whose last reader is this step: moved into it rather than cloned.
    last_reads: Vec<usize>,
}

/// An ONNX graph loaded for one Burn device.
#[derive(Debug)]
pub struct OnnxNet<B: Backend> {
    path: PathBuf,
    steps: Vec<Step<B>>,
    /// Constant values by slot (integer constants and empty placeholders).
    constants: Vec<(usize, Value<B>)>,
    slots: usize,
    input: usize,
    outputs: Vec<usize>,
    /// The graph's output names, in order.
    pub output_names: Vec<String>,
}

struct Loader<'a, B: Backend> {
    file: &'a OnnxFile,
    path: &'a Path,
    device: &'a B::Device,
    slots: HashMap<String, usize>,
}

impl<B: Backend> Loader<'_, B> {
    fn err(&self, message: String) -> DetectError {
        DetectError::Model {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn slot(&mut self, name: &str) -> usize {
        let next = self.slots.len();
        *self.slots.entry(name.to_string()).or_insert(next)
    }

    fn weight(&self, node: &NodeProto, i: usize) -> Result<Array, DetectError> {
        let name = node.input.get(i).map(String::as_str).unwrap_or("");
        let t = self.file.constant(name).ok_or_else(|| {
            self.err(format!(
                "{} `{}`: input {i} (`{name}`) is not a constant",
                node.op_type, node.name
            ))
        })?;
        t.to_array()
            .map_err(|m| self.err(format!("tensor `{name}`: {m}")))
    }

    fn conv(&self, node: &NodeProto) -> Result<Conv2d<B>, DetectError> {
        let w = self.weight(node, 1)?;
        let [cout, cin_g, kh, kw] = w.shape[..] else {
            return Err(self.err(format!("Conv `{}`: weight is not 4-d", node.name)));
        };
        let groups = node.attr_i("group", 1) as usize;
        let strides = node.attr_ints("strides", &[1, 1]);
        let dil = node.attr_ints("dilations", &[1, 1]);
        let pads = node.attr_ints("pads", &[0, 0, 0, 0]);
        if node.attr_s("auto_pad", "NOTSET") != "NOTSET" || pads.len() != 4 || strides.len() != 2 {
            return Err(self.err(format!(
                "Conv `{}`: only 2-d convolutions with explicit pads are supported",
                node.name
            )));
        }
        let u = |v: i64| v as usize;
        let mut conv = Conv2dConfig::new([cin_g * groups, cout], [kh, kw])
            .with_stride([u(strides[0]), u(strides[1])])
            .with_dilation([u(dil[0]), u(dil[1])])
            .with_padding(PaddingConfig2d::Explicit(
                u(pads[0]),
                u(pads[1]),
                u(pads[2]),
                u(pads[3]),
            ))
            .with_groups(groups)
            .with_bias(node.input.len() > 2)
            .init(self.device);
        conv.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(w.data, [cout, cin_g, kh, kw]),
            self.device,
        ));
        if node.input.len() > 2 {
            let b = self.weight(node, 2)?;
            conv.bias = Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(b.data, [cout]),
                self.device,
            )));
        }
        Ok(conv)
    }

    fn batch_norm(&self, node: &NodeProto) -> Result<Op<B>, DetectError> {
        let [g, b, m, v] = [1, 2, 3, 4].map(|i| self.weight(node, i));
        let (g, b, m, v) = (g?, b?, m?, v?);
        let eps = node.attr("epsilon").map_or(1e-5, |a| a.f);
        let c = g.len();
        let scale: Vec<f32> = (0..c)
            .map(|i| g.data[i] / (v.data[i] + eps).sqrt())
            .collect();
        let shift: Vec<f32> = (0..c).map(|i| b.data[i] - m.data[i] * scale[i]).collect();
        let t = |d: Vec<f32>| Tensor::from_data(TensorData::new(d, [1, c, 1, 1]), self.device);
        Ok(Op::Affine(t(scale), t(shift)))
    }

    fn op(&self, node: &NodeProto) -> Result<Op<B>, DetectError> {
        Ok(match node.op_type.as_str() {
            "Conv" => Op::Conv(Box::new(self.conv(node)?)),
            "Relu" => Op::Relu,
            "Sigmoid" => Op::Sigmoid,
            "Add" => Op::Add,
            "Mul" => Op::Mul,
            "BatchNormalization" => self.batch_norm(node)?,
            "Transpose" => {
                let p = node.attr_ints("perm", &[]);
                let perm: Vec<usize> = p.iter().map(|&v| v as usize).collect();
                match perm[..] {
                    [a, b, c, d] => Op::Transpose([a, b, c, d]),
                    _ => return Err(self.err(format!("Transpose `{}`: rank is not 4", node.name))),
                }
            }
            "Reshape" => Op::Reshape,
            "Concat" => Op::Concat(node.attr_i("axis", 0)),
            "Resize" | "Upsample" => {
                let mode = node.attr_s("mode", "nearest");
                let coords = node.attr_s("coordinate_transformation_mode", "asymmetric");
                let rounding = node.attr_s("nearest_mode", "floor");
                if (mode.as_str(), coords.as_str(), rounding.as_str())
                    != ("nearest", "asymmetric", "floor")
                {
                    return Err(self.err(format!(
                        "Resize `{}`: only nearest/asymmetric/floor is supported, not {mode}/{coords}/{rounding}",
                        node.name
                    )));
                }
                Op::ResizeNearest
            }
            "Shape" => Op::Shape,
            "Gather" if node.attr_i("axis", 0) == 0 => Op::Gather,
            "Unsqueeze" => Op::Unsqueeze,
            "Slice" => Op::Slice,
            "Cast" | "Identity" => Op::Identity,
            other => {
                return Err(self.err(format!(
                    "operator {other} (node `{}`) is not supported by the detector graph runner",
                    node.name
                )))
            }
        })
    }
}

/// Nodes whose inputs at these positions are weights consumed at load time.
fn weight_inputs(op: &str) -> usize {
    match op {
        "Conv" | "BatchNormalization" => 1,
        _ => usize::MAX,
    }
}

impl<B: ConvBackend> OnnxNet<B> {
    /// Loads an ONNX file with one float input.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self, DetectError> {
        let file = OnnxFile::open(path).map_err(|e| DetectError::Model {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut loader = Loader::<B> {
            file: &file,
            path,
            device,
            slots: HashMap::new(),
        };
        let input_info = file
            .inputs
            .first()
            .ok_or_else(|| loader.err("the graph has no input".into()))?;
        let input = loader.slot(&input_info.name);
        let mut steps = Vec::new();
        for node in file.nodes.iter().filter(|n| n.op_type != "Constant") {
            let op = loader.op(node)?;
            let first_weight = weight_inputs(&node.op_type);
            let inputs = node
                .input
                .iter()
                .enumerate()
                .map(|(i, name)| (i < first_weight && !name.is_empty()).then(|| loader.slot(name)))
                .collect();
            let output = loader.slot(node.output.first().map_or("", String::as_str));
            steps.push(Step {
                op,
                inputs,
                output,
                last_reads: Vec::new(),
            });
        }
        let mut next_slot = loader.slots.len();
        let mut steps = merge_sibling_convs(steps, &mut next_slot);
        let mut constants = Vec::new();
        for (name, &slot) in &loader.slots {
            if let Some(t) = file.constant(name) {
                let value = if matches!(t.data_type, 6 | 7) {
                    Value::Ints(t.to_i64().map_err(|m| loader.err(m))?)
                } else if t.dims.iter().product::<i64>() == 0 {
                    Value::Ints(Vec::new())
                } else {
                    return Err(loader.err(format!(
                        "float constant `{name}` is used as a value; only integer constants are"
                    )));
                };
                constants.push((slot, value));
            }
        }
        let outputs = file
            .outputs
            .iter()
            .map(|o| {
                loader.slots.get(&o.name).copied().ok_or_else(|| {
                    loader.err(format!("output `{}` is not produced by any node", o.name))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let slots = next_slot;
        let mut last_use = vec![None; slots];
        for (i, step) in steps.iter().enumerate() {
            for s in step.inputs.iter().flatten() {
                last_use[*s] = Some(i);
            }
        }
        for (slot, last) in last_use.into_iter().enumerate() {
            if let Some(i) = last.filter(|_| !outputs.contains(&slot)) {
                steps[i].last_reads.push(slot);
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            steps,
            constants,
            slots,
            input,
            outputs,
            output_names: file.outputs.iter().map(|o| o.name.clone()).collect(),
        })
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, message: String) -> DetectError {
        DetectError::Model {
            path: self.path.clone(),
            message,
        }
    }

    /// Runs the graph on `[1, c, h, w]` and returns every output (logical shape and values).
    pub fn run(&self, x: Tensor<B, 4>) -> Result<Vec<Array>, DetectError> {
        let mut values: Vec<Option<Value<B>>> = vec![None; self.slots];
        for (slot, v) in &self.constants {
            values[*slot] = Some(v.clone());
        }
        values[self.input] = Some(Value::Float { t: x, rank: 4 });
        for (i, step) in self.steps.iter().enumerate() {
            // A value this step reads last is moved in, not cloned, so Burn may reuse its
            // buffer (ReLU, the bias-added sums) instead of allocating another.
            let args: Vec<Option<Value<B>>> = step
                .inputs
                .iter()
                .enumerate()
                .map(|(k, s)| {
                    s.and_then(|s| {
                        let last_read = step.last_reads.contains(&s)
                            && !step.inputs[k + 1..].contains(&Some(s));
                        if last_read {
                            values[s].take()
                        } else {
                            values[s].clone()
                        }
                    })
                })
                .collect();
            let out = eval(&step.op, args).map_err(|m| self.err(format!("step {i}: {m}")))?;
            values[step.output] = Some(out);
        }
        self.outputs
            .iter()
            .map(|&s| match values[s].take() {
                Some(Value::Float { t, rank }) => {
                    let dims = t.dims();
                    let data = t
                        .into_data()
                        .convert::<f32>()
                        .to_vec::<f32>()
                        .map_err(|e| self.err(format!("reading an output: {e:?}")))?;
                    Ok(Array::new(dims[4 - rank..].to_vec(), data))
                }
                _ => Err(self.err("an output is not a float tensor".into())),
            })
            .collect()
    }
}

/// The convolution settings that must agree for two convolutions to share one.
fn conv_key<B: Backend>(c: &Conv2d<B>) -> Option<String> {
    (c.groups == 1).then(|| {
        format!(
            "{:?} {:?} {:?} {:?} {:?} {}",
            c.weight.dims()[1..].to_vec(),
            c.stride,
            c.dilation,
            c.padding,
            c.bias.is_some(),
            c.groups
        )
    })
}

/// Convolutions that read the same value with the same settings (SCRFD's score, box and
/// landmark heads at each stride) become one convolution with their output channels
/// stacked, followed by a `Narrow` per original output: one im2col and one matrix product
/// instead of three, with the same results.
fn merge_sibling_convs<B: Backend>(steps: Vec<Step<B>>, next_slot: &mut usize) -> Vec<Step<B>> {
    let key = |s: &Step<B>| match &s.op {
        Op::Conv(c) => conv_key(c).map(|k| (s.inputs[0], k)),
        _ => None,
    };
    let mut groups: HashMap<(Option<usize>, String), Vec<usize>> = HashMap::new();
    for (i, s) in steps.iter().enumerate() {
        if let Some(k) = key(s) {
            groups.entry(k).or_default().push(i);
        }
    }
    let merged: HashMap<usize, Vec<usize>> = groups
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|g| (g[0], g))
        .collect();
    let absorbed: std::collections::HashSet<usize> = merged
        .values()
        .flat_map(|g| g[1..].iter().copied())
        .collect();
    let mut steps: Vec<Option<Step<B>>> = steps.into_iter().map(Some).collect();
    let mut out = Vec::new();
    for i in 0..steps.len() {
        if absorbed.contains(&i) {
            continue;
        }
        let Some(members) = merged.get(&i) else {
            out.extend(steps[i].take());
            continue;
        };
        let parts: Vec<Step<B>> = members.iter().filter_map(|&m| steps[m].take()).collect();
        let convs: Vec<&Conv2d<B>> = parts
            .iter()
            .filter_map(|s| match &s.op {
                Op::Conv(c) => Some(c.as_ref()),
                _ => None,
            })
            .collect();
        let mut conv = convs[0].clone();
        conv.weight = burn::module::Param::from_tensor(Tensor::cat(
            convs.iter().map(|c| c.weight.val()).collect(),
            0,
        ));
        conv.bias = convs[0].bias.as_ref().map(|_| {
            burn::module::Param::from_tensor(Tensor::cat(
                convs
                    .iter()
                    .filter_map(|c| c.bias.as_ref().map(|b| b.val()))
                    .collect(),
                0,
            ))
        });
        let stacked = *next_slot;
        *next_slot += 1;
        out.push(Step {
            op: Op::Conv(Box::new(conv)),
            inputs: parts[0].inputs.clone(),
            output: stacked,
            last_reads: Vec::new(),
        });
        let mut start = 0;
        for (part, c) in parts.iter().zip(&convs) {
            let len = c.weight.dims()[0];
            out.push(Step {
                op: Op::Narrow(start, len),
                inputs: vec![Some(stacked)],
                output: part.output,
                last_reads: Vec::new(),
            });
            start += len;
        }
    }
    out
}

fn float<B: Backend>(v: Option<Value<B>>) -> Result<(Tensor<B, 4>, usize), String> {
    match v {
        Some(Value::Float { t, rank }) => Ok((t, rank)),
        _ => Err("expected a float tensor".into()),
    }
}

fn ints<B: Backend>(v: Option<Value<B>>) -> Result<Vec<i64>, String> {
    match v {
        Some(Value::Ints(v)) => Ok(v),
        _ => Err("expected an integer vector".into()),
    }
}

/// `dims` (logical, rank <= 4) padded with leading ones to rank 4.
fn padded(dims: &[usize]) -> Result<[usize; 4], String> {
    if dims.len() > 4 {
        return Err(format!("rank {} is above 4", dims.len()));
    }
    let mut out = [1; 4];
    out[4 - dims.len()..].copy_from_slice(dims);
    Ok(out)
}

fn eval<B: ConvBackend>(op: &Op<B>, mut args: Vec<Option<Value<B>>>) -> Result<Value<B>, String> {
    let mut arg = |i: usize| args.get_mut(i).and_then(Option::take);
    let unary = |v: Option<Value<B>>, f: &dyn Fn(Tensor<B, 4>) -> Tensor<B, 4>| {
        let (t, rank) = float(v)?;
        Ok(Value::Float { t: f(t), rank })
    };
    match op {
        Op::Conv(c) => unary(arg(0), &|t| conv2d(c, t)),
        Op::Relu => unary(arg(0), &relu),
        Op::Sigmoid => unary(arg(0), &sigmoid),
        Op::Identity => Ok(arg(0).ok_or("missing input")?),
        Op::Affine(scale, shift) => unary(arg(0), &|t| t * scale.clone() + shift.clone()),
        Op::Add | Op::Mul => {
            let ((a, ra), (b, rb)) = (float(arg(0))?, float(arg(1))?);
            let t = if matches!(op, Op::Add) { a + b } else { a * b };
            Ok(Value::Float {
                t,
                rank: ra.max(rb),
            })
        }
        Op::Transpose(perm) => {
            let (t, rank) = float(arg(0))?;
            if rank != 4 {
                return Err("Transpose of a tensor below rank 4".into());
            }
            Ok(Value::Float {
                t: t.permute(*perm),
                rank,
            })
        }
        Op::Reshape => {
            let (t, rank) = float(arg(0))?;
            let spec = ints(arg(1))?;
            let dims = t.dims();
            let total: usize = dims.iter().product();
            let mut shape: Vec<usize> = spec
                .iter()
                .enumerate()
                .map(|(i, &d)| match d {
                    0 => dims[4 - rank + i],
                    -1 => 1,
                    d => d as usize,
                })
                .collect();
            if let Some(i) = spec.iter().position(|&d| d == -1) {
                let known: usize = shape.iter().product();
                shape[i] = total / known.max(1);
            }
            if shape.iter().product::<usize>() != total {
                return Err(format!("Reshape of {dims:?} to {spec:?}"));
            }
            Ok(Value::Float {
                t: t.reshape(padded(&shape)?),
                rank: shape.len(),
            })
        }
        Op::Concat(axis) => {
            let parts: Vec<Option<Value<B>>> = args.into_iter().collect();
            match parts.first() {
                Some(Some(Value::Ints(_))) => Ok(Value::Ints(
                    parts
                        .into_iter()
                        .map(ints)
                        .collect::<Result<Vec<_>, _>>()?
                        .concat(),
                )),
                _ => {
                    let tensors = parts
                        .into_iter()
                        .map(float)
                        .collect::<Result<Vec<_>, _>>()?;
                    let rank = tensors.first().ok_or("Concat of nothing")?.1;
                    let axis = if *axis < 0 {
                        *axis + rank as i64
                    } else {
                        *axis
                    } as usize;
                    let ts = tensors.into_iter().map(|(t, _)| t).collect();
                    Ok(Value::Float {
                        t: Tensor::cat(ts, 4 - rank + axis),
                        rank,
                    })
                }
            }
        }
        Op::ResizeNearest => {
            let (t, rank) = float(arg(0))?;
            let (scales, sizes) = (arg(2), arg(3));
            let [n, c, h, w] = t.dims();
            let (oh, ow) = match (ints(sizes).ok().filter(|s| s.len() == 4), scales) {
                (Some(s), _) => (s[2] as usize, s[3] as usize),
                _ => return Err("Resize needs its `sizes` input (scales are not supported)".into()),
            };
            let device = t.device();
            let index = |o: usize, i: usize| {
                let idx: Vec<i64> = (0..o)
                    .map(|d| ((d as f64 * i as f64 / o as f64).floor() as i64).min(i as i64 - 1))
                    .collect();
                Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [o]), &device)
            };
            let t = t.select(2, index(oh, h)).select(3, index(ow, w));
            debug_assert_eq!(t.dims(), [n, c, oh, ow]);
            Ok(Value::Float { t, rank })
        }
        Op::Shape => {
            let (t, rank) = float(arg(0))?;
            Ok(Value::Ints(
                t.dims()[4 - rank..].iter().map(|&d| d as i64).collect(),
            ))
        }
        Op::Gather => {
            let (data, idx) = (ints(arg(0))?, ints(arg(1))?);
            idx.iter()
                .map(|&i| {
                    let i = if i < 0 { i + data.len() as i64 } else { i };
                    data.get(i as usize)
                        .copied()
                        .ok_or_else(|| "Gather index out of range".to_string())
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Ints)
        }
        Op::Unsqueeze => Ok(Value::Ints(ints(arg(0))?)),
        Op::Narrow(start, len) => {
            let (t, rank) = float(arg(0))?;
            Ok(Value::Float {
                t: t.narrow(1, *start, *len),
                rank,
            })
        }
        Op::Slice => {
            let data = ints(arg(0))?;
            let (starts, ends) = (ints(arg(1))?, ints(arg(2))?);
            let len = data.len() as i64;
            let clamp = |v: i64| if v < 0 { (v + len).max(0) } else { v.min(len) } as usize;
            let (s, e) = (clamp(starts[0]), clamp(ends[0]));
            Ok(Value::Ints(
                data.get(s..e.max(s)).unwrap_or_default().to_vec(),
            ))
        }
    }
}
