//! A backbone's weighted layers in forward order, named both the Burn way and the PyTorch way.
//!
//! Importers use the plan instead of guessing: the PyTorch importer looks tensors up by
//! `torch` name, the ONNX importer walks the graph's weighted nodes in the same order.
//! FLOP counts come from it too.

/// What kind of weighted layer a slot is, with the geometry needed to check and count it.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerKind {
    /// A bias-free convolution (every backbone conv is followed by a BatchNorm slot).
    Conv {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel side.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding.
        padding: usize,
        /// Groups.
        groups: usize,
        /// Output height/width at a 112x112 input.
        out_size: usize,
    },
    /// A BatchNorm.
    BatchNorm {
        /// Channels.
        channels: usize,
    },
    /// A PReLU.
    PRelu {
        /// Channels.
        channels: usize,
    },
    /// A linear layer.
    Linear {
        /// Inputs.
        d_input: usize,
        /// Outputs.
        d_output: usize,
        /// Whether it has a bias.
        bias: bool,
    },
}

/// One weighted layer of a backbone.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// What it is, with its geometry.
    pub kind: LayerKind,
    /// Module path in Burn, e.g. `layer1.0.conv1`.
    pub burn: String,
    /// Module path in insightface's PyTorch code, e.g. `layer1.0.conv1`.
    pub torch: String,
}

/// Builder used by the models to describe themselves.
#[derive(Debug, Default)]
pub struct Plan {
    /// The layers.
    pub layers: Vec<Layer>,
}

impl Plan {
    pub(crate) fn push(
        &mut self,
        kind: LayerKind,
        burn: impl Into<String>,
        torch: impl Into<String>,
    ) {
        self.layers.push(Layer {
            kind,
            burn: burn.into(),
            torch: torch.into(),
        });
    }

    /// Multiply-accumulates of the convolutions and linear layers at 112x112
    /// (BatchNorm and PReLU fold into them at inference, so they are not counted).
    pub fn macs(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| match l.kind {
                LayerKind::Conv {
                    in_channels,
                    out_channels,
                    kernel,
                    groups,
                    out_size,
                    ..
                } => {
                    (out_size * out_size * out_channels * (in_channels / groups) * kernel * kernel)
                        as u64
                }
                LayerKind::Linear {
                    d_input, d_output, ..
                } => (d_input * d_output) as u64,
                _ => 0,
            })
            .sum()
    }
}

/// Joins module path segments, skipping empty ones.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
