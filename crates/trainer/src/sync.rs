//! What the nodes of a multi-node run exchange through a [`Collective`], so every node holds the
//! same model after every step: one flat bucket per optimiser step (each gradient weighted by
//! the node's share of the global batch, each BatchNorm running statistic divided by the number
//! of nodes: their mean, as the replicas of one process merge theirs), the loss, the decisions
//! to stop, and at a resume the checkpoint every node holds.

use std::collections::{HashMap, HashSet};

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};

use crate::collective::Collective;
use crate::error::TrainError;

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// A batch's loss over every node.
pub(crate) struct GlobalLoss {
    /// The global batch's mean loss (NaN when any node's was not finite, or its shard was too
    /// small to train on, so every node skips the batch alike).
    pub loss: f64,
    /// The extra terms' global means.
    pub terms: Vec<f64>,
    /// Images in the global batch.
    pub images: usize,
}

/// Sums `[bad, n, n * loss, n * terms...]` over the nodes: the global batch's mean loss, from
/// each node's mean over its `images` (`None`: this node has nothing to train on).
pub(crate) fn reduce_loss<B: Backend>(
    collective: &dyn Collective<B>,
    local: Option<(usize, f64, &[f64])>,
    terms: usize,
    device: &B::Device,
) -> Result<GlobalLoss, TrainError> {
    let mut v = vec![0.0f32; 3 + terms];
    match local {
        Some((n, loss, t)) if loss.is_finite() => {
            v[1] = n as f32;
            v[2] = (n as f64 * loss) as f32;
            for (slot, t) in v[3..].iter_mut().zip(t) {
                *slot = (n as f64 * t) as f32;
            }
        }
        _ => v[0] = 1.0,
    }
    let sum = collective.sum(Tensor::from_floats(v.as_slice(), device), "the batch loss")?;
    let sum: Vec<f32> = sum
        .into_data()
        .to_vec()
        .map_err(|e| TrainError::Collective(format!("the summed loss is not f32 data: {e:?}")))?;
    let images = sum[1].round() as usize;
    let mean = |s: f32| match sum[0] > 0.0 || images == 0 {
        true => f64::NAN,
        false => s as f64 / images as f64,
    };
    Ok(GlobalLoss {
        loss: mean(sum[2]),
        terms: sum[3..].iter().map(|&s| mean(s)).collect(),
        images,
    })
}

/// True on every node when it is true on any: a decision (stop for time, stop early) every node
/// must take at the same step.
pub(crate) fn any<B: Backend>(
    collective: &dyn Collective<B>,
    flag: bool,
    what: &str,
    device: &B::Device,
) -> Result<bool, TrainError> {
    let v = [f32::from(u8::from(flag))];
    let sum = collective.sum(Tensor::from_floats(v.as_slice(), device), what)?;
    Ok(sum.into_scalar().elem::<f32>() > 0.0)
}

/// The newest step that every node holds a checkpoint of, from each node's `steps`: an
/// all-gather through the sum (each node writes its newest `SLOTS` steps into its own rows).
pub(crate) fn common_step<B: Backend>(
    collective: &dyn Collective<B>,
    steps: &[u64],
    device: &B::Device,
) -> Result<Option<u64>, TrainError> {
    const SLOTS: usize = 16;
    let (rank, nodes) = (collective.rank(), collective.nodes());
    // Each step as two 16-bit halves plus one (0 marks an empty slot): exact in f32.
    let mut v = vec![0.0f32; nodes * SLOTS * 3];
    for (k, &step) in steps.iter().rev().take(SLOTS).enumerate() {
        let at = (rank * SLOTS + k) * 3;
        v[at] = 1.0;
        v[at + 1] = (step >> 16) as f32;
        v[at + 2] = (step & 0xffff) as f32;
    }
    let sum = collective.sum(
        Tensor::from_floats(v.as_slice(), device),
        "agreeing on a checkpoint",
    )?;
    let all: Vec<f32> = sum.into_data().to_vec().map_err(|e| {
        TrainError::Collective(format!("the gathered steps are not f32 data: {e:?}"))
    })?;
    let held = |node: usize| -> HashSet<u64> {
        (0..SLOTS)
            .map(|k| &all[(node * SLOTS + k) * 3..][..3])
            .filter(|s| s[0] > 0.5)
            .map(|s| ((s[1] as u64) << 16) | s[2] as u64)
            .collect()
    };
    let mut common = held(0);
    for node in 1..nodes {
        let other = held(node);
        common.retain(|s| other.contains(s));
    }
    Ok(common.into_iter().max())
}

/// Makes every node's step the same: sums the bucket of this node's `grads` (times `share`, its
/// part of the global batch) and running statistics (over the number of nodes) over the nodes,
/// and returns the model with the mean statistics and the global batch's gradients.
pub(crate) fn sync_step<B: AutodiffBackend, Mo: AutodiffModule<B>>(
    collective: &dyn Collective<Inner<B>>,
    model: Mo,
    mut grads: GradientsParams,
    share: f64,
    frozen: &HashSet<ParamId>,
    device: &B::Device,
) -> Result<(Mo, GradientsParams), TrainError> {
    let nodes = collective.nodes() as f64;
    let model = exchange(
        collective,
        model,
        &mut grads,
        Mode::Step {
            share,
            nodes,
            frozen,
        },
        device,
        "the gradients",
    )?;
    Ok((model, grads))
}

/// Every node's model becomes rank 0's (its parameters and running statistics; the others add
/// zeros, so the values arrive exactly): replicas start alike whatever each process drew.
pub(crate) fn broadcast_model<B: AutodiffBackend, Mo: AutodiffModule<B>>(
    collective: &dyn Collective<Inner<B>>,
    model: Mo,
    device: &B::Device,
) -> Result<Mo, TrainError> {
    let root = collective.rank() == 0;
    let mut none = GradientsParams::new();
    exchange(
        collective,
        model,
        &mut none,
        Mode::Broadcast { root },
        device,
        "rank 0's weights",
    )
}

/// What goes into the bucket.
enum Mode<'a> {
    /// Gradients times the node's share, running statistics over the number of nodes.
    Step {
        share: f64,
        nodes: f64,
        frozen: &'a HashSet<ParamId>,
    },
    /// Every value, from the root only.
    Broadcast { root: bool },
}

/// Packs the bucket, sums it over the nodes and unpacks it into `grads` and the model.
fn exchange<B: AutodiffBackend, Mo: AutodiffModule<B>>(
    collective: &dyn Collective<Inner<B>>,
    model: Mo,
    grads: &mut GradientsParams,
    mode: Mode<'_>,
    device: &B::Device,
    what: &str,
) -> Result<Mo, TrainError> {
    // The visitor reads the running statistics' merged value.
    crate::model::merge_running_statistics(&model);
    let mut pack = Pack::<B> {
        grads,
        mode,
        parts: vec![],
        slots: HashMap::new(),
        len: 0,
    };
    model.visit(&mut pack);
    let (parts, slots) = (
        std::mem::take(&mut pack.parts),
        std::mem::take(&mut pack.slots),
    );
    if parts.is_empty() {
        return Ok(model);
    }
    let bucket = collective.sum(Tensor::cat(parts, 0).to_device(device), what)?;
    Ok(model.map(&mut Unpack::<B> {
        grads,
        bucket,
        slots,
    }))
}

/// Where a tensor sits in the bucket, and what it is.
struct Slot {
    offset: usize,
    len: usize,
    gradient: bool,
}

/// Collects the bucket, flattened: gradients (taken out of `grads`) and values.
struct Pack<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    mode: Mode<'a>,
    parts: Vec<Tensor<Inner<B>, 1>>,
    slots: HashMap<ParamId, Slot>,
    len: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Pack<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let (part, gradient) = match self.mode {
            Mode::Broadcast { root } => {
                let value = param.val().inner();
                (if root { value } else { value.zeros_like() }, false)
            }
            Mode::Step {
                share,
                nodes,
                frozen,
            } => match self.grads.remove::<Inner<B>, D>(param.id) {
                Some(g) => (g.mul_scalar(share), true),
                None => {
                    let value = param.val();
                    // A trainable parameter without a gradient, or a frozen one, is the same
                    // on every node already; what is left is running state (no gradient).
                    if value.is_require_grad() || frozen.contains(&param.id) {
                        return;
                    }
                    (value.inner().div_scalar(nodes), false)
                }
            },
        };
        let len = part.shape().num_elements();
        let slot = Slot {
            offset: self.len,
            len,
            gradient,
        };
        self.slots.insert(param.id, slot);
        self.len += len;
        self.parts.push(part.reshape([len]));
    }
}

/// Puts the summed bucket back: gradients into `grads`, values into the model.
struct Unpack<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    bucket: Tensor<Inner<B>, 1>,
    slots: HashMap<ParamId, Slot>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Unpack<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(slot) = self.slots.get(&param.id) else {
            return param;
        };
        let (id, value, mapper) = param.consume();
        let part = (self.bucket.clone())
            .slice(slot.offset..slot.offset + slot.len)
            .reshape(value.shape());
        if slot.gradient {
            self.grads.register::<Inner<B>, D>(id, part);
            return Param::from_mapped_value(id, value, mapper);
        }
        let mut new = Tensor::from_inner(part);
        if value.is_require_grad() {
            new = new.require_grad();
        }
        Param::from_mapped_value(id, new, mapper)
    }
}
