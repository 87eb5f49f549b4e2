use burn::module::{Module, ParamId};
use burn::tensor::{backend::Backend, TensorData};
use burn_store::{ModuleSnapshot, TensorSnapshot};

use crate::error::{BackboneError, Result};
use crate::plan::{LayerKind, Plan};

pub use onnx_io::Array;

/// The weights of one layer as a file stores them (PyTorch layouts).
#[derive(Debug, Clone)]
pub enum LayerWeights {
    /// A convolution.
    Conv {
        /// `[cout, cin / groups, kh, kw]`.
        weight: Array,
        /// Per output channel, if the file has one.
        bias: Option<Array>,
    },
    /// A BatchNorm's statistics.
    BatchNorm {
        /// Scale.
        gamma: Array,
        /// Shift.
        beta: Array,
        /// Running mean.
        mean: Array,
        /// Running variance.
        var: Array,
        /// Added to the variance.
        eps: f64,
    },
    /// A PReLU.
    PRelu {
        /// Slopes, per channel.
        slope: Array,
    },
    /// `weight` is `[out, in]` as PyTorch and ONNX `Gemm(transB=1)` store it.
    Linear {
        /// `[out, in]` (PyTorch's layout).
        weight: Array,
        /// Per output, if the file has one.
        bias: Option<Array>,
    },
}

/// Weights plus the name they had in the file, for error messages.
#[derive(Debug, Clone)]
pub struct SourcedWeights {
    /// Where it came from in the file (for errors).
    pub source: String,
    /// The weights.
    pub weights: LayerWeights,
}

/// Writes `layers` (one entry per plan layer; `None` for a BatchNorm folded away by the exporter)
/// into `module`, checking every shape against the module's own. `model_eps` is the epsilon of
/// the module's BatchNorms; a file's own epsilon is folded into the running variance.
pub fn load_layers<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    module: &mut M,
    plan: &Plan,
    layers: Vec<Option<SourcedWeights>>,
    model_eps: f64,
) -> Result<()> {
    assert_eq!(plan.layers.len(), layers.len(), "one entry per plan layer");
    let expected: std::collections::HashMap<String, Vec<usize>> = module
        .collect(None, None, true)
        .into_iter()
        .map(|s| (s.full_path(), s.shape.to_vec()))
        .collect();
    let mut out: Vec<(String, Array)> = Vec::new();
    let mut put = |target: String, source: &str, array: Array| -> Result<()> {
        let want = expected.get(&target).ok_or_else(|| {
            BackboneError::GraphMismatch(format!("the model has no tensor `{target}`"))
        })?;
        if *want != array.shape {
            return Err(BackboneError::ShapeMismatch {
                source_name: source.to_string(),
                target,
                expected: want.clone(),
                found: array.shape,
            });
        }
        check_finite(&array, source, &target)?;
        out.push((target, array));
        Ok(())
    };
    // A bias the file has where our module has none, carried into the next BatchNorm.
    let mut pending_bias: Option<(Array, String)> = None;

    for (layer, weights) in plan.layers.iter().zip(layers) {
        let p = |n: &str| format!("{}.{n}", layer.burn);
        if pending_bias.is_some() && !matches!(layer.kind, LayerKind::BatchNorm { .. }) {
            return Err(BackboneError::GraphMismatch(format!(
                "a bias before `{}` has no BatchNorm to fold into",
                layer.burn
            )));
        }
        match (&layer.kind, weights) {
            (
                LayerKind::Conv { .. },
                Some(SourcedWeights {
                    source,
                    weights: LayerWeights::Conv { weight, bias },
                }),
            ) => {
                put(p("weight"), &source, weight)?;
                pending_bias = bias.map(|b| (reshape_vector(b), source));
            }
            (LayerKind::BatchNorm { channels }, weights) => {
                let c = *channels;
                let (mut bn, source, src_eps) = match weights {
                    Some(SourcedWeights {
                        source,
                        weights:
                            LayerWeights::BatchNorm {
                                gamma,
                                beta,
                                mean,
                                var,
                                eps,
                            },
                    }) => ([gamma, beta, mean, var], source, eps),
                    None => {
                        // Folded into the preceding layer by the exporter: an identity BatchNorm
                        // that adds the preceding layer's bias.
                        let Some((bias, source)) = pending_bias.take() else {
                            return Err(BackboneError::MissingWeight(layer.torch.clone()));
                        };
                        // var = 1 - eps makes the denominator exactly 1.
                        let identity = [
                            Array::filled(c, 1.0),
                            bias,
                            Array::filled(c, 0.0),
                            Array::filled(c, (1.0 - model_eps) as f32),
                        ];
                        (identity, source, model_eps)
                    }
                    Some(other) => return Err(wrong_kind(&layer.burn, &other)),
                };
                // y = (x + b - mean) / sqrt(var + eps): fold the bias into the mean.
                if let Some((bias, _)) = pending_bias.take() {
                    check_len(&bias, c, &source, &p("running_mean"))?;
                    for (m, b) in bn[2].data.iter_mut().zip(&bias.data) {
                        *m -= b;
                    }
                }
                // Same denominator with our epsilon: var' = var + eps_file - eps_ours.
                let shift = (src_eps - model_eps) as f32;
                if shift != 0.0 {
                    bn[3].data.iter_mut().for_each(|v| *v += shift);
                }
                let [gamma, beta, mean, var] = bn;
                put(p("gamma"), &source, reshape_vector(gamma))?;
                put(p("beta"), &source, reshape_vector(beta))?;
                put(p("running_mean"), &source, reshape_vector(mean))?;
                put(p("running_var"), &source, reshape_vector(var))?;
            }
            (
                LayerKind::PRelu { .. },
                Some(SourcedWeights {
                    source,
                    weights: LayerWeights::PRelu { slope },
                }),
            ) => {
                put(p("alpha"), &source, reshape_vector(slope))?;
            }
            (
                LayerKind::Linear {
                    bias: has_bias,
                    d_output,
                    ..
                },
                Some(SourcedWeights {
                    source,
                    weights: LayerWeights::Linear { weight, bias },
                }),
            ) => {
                if weight.shape.len() != 2 {
                    return Err(BackboneError::ShapeMismatch {
                        source_name: source,
                        target: p("weight"),
                        expected: expected.get(&p("weight")).cloned().unwrap_or_default(),
                        found: weight.shape,
                    });
                }
                put(p("weight"), &source, weight.transposed())?;
                match (has_bias, bias) {
                    (true, Some(b)) => put(p("bias"), &source, reshape_vector(b))?,
                    (true, None) => put(p("bias"), &source, Array::filled(*d_output, 0.0))?,
                    (false, Some(b)) => pending_bias = Some((reshape_vector(b), source)),
                    (false, None) => {}
                }
            }
            (_, None) => return Err(BackboneError::MissingWeight(layer.torch.clone())),
            (_, Some(other)) => return Err(wrong_kind(&layer.burn, &other)),
        }
    }
    if let Some((_, source)) = pending_bias {
        return Err(BackboneError::GraphMismatch(format!(
            "bias `{source}` is left over at the end"
        )));
    }

    let snapshots = out
        .into_iter()
        .map(|(target, array)| {
            let path: Vec<String> = target.split('.').map(str::to_string).collect();
            let containers = vec![String::new(); path.len()];
            TensorSnapshot::from_data(
                TensorData::new(array.data, array.shape),
                path,
                containers,
                ParamId::new(),
            )
        })
        .collect();
    let result = module.apply(snapshots, None, None, true);
    if !result.errors.is_empty() {
        let msg: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
        return Err(BackboneError::GraphMismatch(msg.join("; ")));
    }
    if !result.missing.is_empty() {
        let names: Vec<&str> = result.missing.iter().map(|(p, _)| p.as_str()).collect();
        return Err(BackboneError::MissingWeight(names.join(", ")));
    }
    Ok(())
}

fn wrong_kind(target: &str, got: &SourcedWeights) -> BackboneError {
    let kind = match got.weights {
        LayerWeights::Conv { .. } => "a convolution",
        LayerWeights::BatchNorm { .. } => "a BatchNorm",
        LayerWeights::PRelu { .. } => "a PReLU",
        LayerWeights::Linear { .. } => "a linear layer",
    };
    BackboneError::GraphMismatch(format!(
        "`{}` is {kind} but the model expects `{target}` here",
        got.source
    ))
}

fn check_finite(a: &Array, source: &str, target: &str) -> Result<()> {
    if a.data.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(BackboneError::NonFinite {
            source_name: source.to_string(),
            target: target.to_string(),
        })
    }
}

fn check_len(a: &Array, n: usize, source: &str, target: &str) -> Result<()> {
    if a.len() != n {
        return Err(BackboneError::ShapeMismatch {
            source_name: source.to_string(),
            target: target.to_string(),
            expected: vec![n],
            found: a.shape.clone(),
        });
    }
    Ok(())
}

/// Per-channel vectors arrive as `[C]`, `[C,1,1]` (ONNX PReLU) or `[1,C]`: make them `[C]`
/// when they have no other extent, and leave them for the shape check otherwise.
fn reshape_vector(a: Array) -> Array {
    if a.shape.iter().filter(|&&d| d != 1).count() <= 1 {
        Array::new(vec![a.data.len()], a.data)
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::{AnyBackbone, BackboneConfig, Describe};
    use crate::iresnet::IResNetConfig;

    type B = crate::CpuBackend;

    /// The weights of `model` itself, in the form an importer produces.
    fn own_weights(model: &crate::IResNet<B>) -> Vec<Option<SourcedWeights>> {
        let snapshots: std::collections::HashMap<String, Array> = model
            .collect(None, None, true)
            .into_iter()
            .map(|s| {
                let data = s.to_data().unwrap();
                (
                    s.full_path(),
                    Array::new(data.shape.to_vec(), data.to_vec::<f32>().unwrap()),
                )
            })
            .collect();
        model
            .plan()
            .layers
            .iter()
            .map(|l| {
                let get = |n: &str| snapshots[&format!("{}.{n}", l.burn)].clone();
                let weights = match l.kind {
                    LayerKind::Conv { .. } => LayerWeights::Conv {
                        weight: get("weight"),
                        bias: None,
                    },
                    LayerKind::BatchNorm { .. } => LayerWeights::BatchNorm {
                        gamma: get("gamma"),
                        beta: get("beta"),
                        mean: get("running_mean"),
                        var: get("running_var"),
                        eps: 1e-5,
                    },
                    LayerKind::PRelu { .. } => LayerWeights::PRelu {
                        slope: get("alpha"),
                    },
                    LayerKind::Linear { .. } => LayerWeights::Linear {
                        weight: get("weight").transposed(),
                        bias: Some(get("bias")),
                    },
                };
                Some(SourcedWeights {
                    source: l.torch.clone(),
                    weights,
                })
            })
            .collect()
    }

    fn tiny() -> crate::IResNet<B> {
        let spec = BackboneConfig::IResNet(
            IResNetConfig::new([1, 1, 1, 1])
                .with_widths([4, 8, 8, 8])
                .with_embedding_dim(8),
        );
        match spec.init::<B>(&Default::default()).unwrap() {
            AnyBackbone::IResNet(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn own_weights_load_back() {
        let mut model = tiny();
        let plan = model.plan();
        let layers = own_weights(&model);
        load_layers(&mut model, &plan, layers, 1e-5).unwrap();
    }

    #[test]
    fn non_finite_weights_are_refused_by_name() {
        let mut model = tiny();
        let plan = model.plan();
        let mut layers = own_weights(&model);
        if let Some(SourcedWeights {
            weights: LayerWeights::PRelu { slope },
            ..
        }) = layers[2].as_mut()
        {
            slope.data[1] = f32::NAN;
        } else {
            panic!("layer 2 of IResNet's plan is the stem PReLU");
        }
        let err = load_layers(&mut model, &plan, layers, 1e-5).unwrap_err();
        assert!(
            matches!(&err, BackboneError::NonFinite { target, .. } if target == "prelu.alpha"),
            "{err}"
        );
    }

    #[test]
    fn a_folded_batch_norm_without_a_bias_is_missing() {
        let mut model = tiny();
        let plan = model.plan();
        let mut layers = own_weights(&model);
        layers[1] = None; // the stem BN, but the stem conv carries no bias to stand in for it
        let err = load_layers(&mut model, &plan, layers, 1e-5).unwrap_err();
        assert!(
            matches!(err, BackboneError::MissingWeight(ref k) if k == "bn1"),
            "{err}"
        );
    }
}
