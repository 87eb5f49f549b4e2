//! One batch's forward and backward pass, on one device or split over several (data
//! parallel), with the extra loss terms and the head update the run was given.

use std::collections::HashSet;

use arcface_loss::{HeadOutput, MarginHead};
use burn::module::{AutodiffModule, Module, ModuleDisplay, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{backend::AutodiffBackend, ElementConversion, FloatDType, Tensor};
use face_data::Batch;
use iresnet::Backbone;

use crate::error::TrainError;
use crate::hooks::{HeadUpdate, LossTerm, StepView};
use crate::mixed::{compute_copy, Precision};
use crate::model::Model;

/// What every shard of a step shares.
pub(crate) struct StepPlan<'a, B: AutodiffBackend, M> {
    pub seed: u64,
    pub step: u64,
    pub accumulation: usize,
    pub precision: Precision,
    pub terms: &'a [Box<dyn LossTerm<B, M>>],
    /// Frozen parameters (cast with the trainable ones under bf16).
    pub frozen: &'a HashSet<ParamId>,
}

/// A step's (or a shard's) result: the loss (margin head plus terms, batch mean), each term's
/// value, and the model's gradients, already divided by the accumulation.
pub(crate) struct StepGrads {
    pub loss: f64,
    pub terms: Vec<f64>,
    pub grads: GradientsParams,
}

impl StepGrads {
    fn non_finite(loss: f64, terms: Vec<f64>) -> Self {
        Self {
            loss,
            terms,
            grads: GradientsParams::new(),
        }
    }
}

/// The backend RNG's seed for a step (dropout), so a resumed run draws what the original did.
pub(crate) fn step_seed(seed: u64, step: u64) -> u64 {
    seed ^ step.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Forward and backward of one shard weighted by `weight` (its share of the batch); `None` for
/// the gradients when the loss is not finite (no backward pass is spent on it).
#[allow(clippy::type_complexity)]
fn shard<B, M, H>(
    model: &Model<B, M, H>,
    batch: &Batch,
    plan: &StepPlan<'_, B, M>,
    weight: f64,
    device: &B::Device,
) -> Result<(f64, Vec<f64>, Option<(B::Gradients, HeadOutput<B>)>), TrainError>
where
    B: AutodiffBackend,
    M: Backbone<B> + AutodiffModule<B> + ModuleDisplay,
    M::InnerModule: ModuleDisplay,
    H: MarginHead<B> + AutodiffModule<B> + ModuleDisplay,
    H::InnerModule: ModuleDisplay,
{
    let channels = model.backbone.input_channels();
    if batch.shape[1] != channels {
        return Err(TrainError::Other(format!(
            "the data gives {} planes per face, the backbone takes {channels}",
            batch.shape[1]
        )));
    }
    let (inputs, _) = batch.to_tensors::<B>(device);
    let embeddings = embed(&model.backbone, inputs.clone(), plan);
    let out = model
        .head
        .forward(embeddings.clone(), &batch.labels, plan.step)?;
    let mut total = out.loss.clone();
    let mut terms = Vec::with_capacity(plan.terms.len());
    for term in plan.terms {
        let view = StepView {
            step: plan.step,
            batch,
            inputs: &inputs,
            backbone: &model.backbone,
            embeddings: &embeddings,
            head: &out,
            device,
        };
        let value = term.loss(&view)?;
        terms.push(value.clone().into_scalar().elem::<f64>() * weight);
        total = total + value;
    }
    let loss = total.clone().into_scalar().elem::<f64>();
    if !loss.is_finite() {
        return Ok((loss, terms, None));
    }
    let grads = total
        .mul_scalar(weight / plan.accumulation as f64)
        .backward();
    Ok((loss * weight, terms, Some((grads, out))))
}

/// The batch's embeddings, f32, computed in the configured precision.
fn embed<B: AutodiffBackend, M: Backbone<B> + AutodiffModule<B>>(
    backbone: &M,
    x: Tensor<B, 4>,
    plan: &StepPlan<'_, B, M>,
) -> Tensor<B, 2> {
    match plan.precision.compute_dtype() {
        None => backbone.embed(x),
        Some(dtype) => compute_copy(backbone, dtype, plan.frozen)
            .embed(x.cast(dtype))
            .cast(FloatDType::F32),
    }
}

/// Forward and backward of the whole batch on one device; a head update (Partial FC) is
/// applied to `model.head` here, from this batch's gradients.
pub(crate) fn single_device<B, M, H>(
    model: &mut Model<B, M, H>,
    batch: &Batch,
    plan: &StepPlan<'_, B, M>,
    head_update: Option<(&mut (dyn HeadUpdate<B, H> + '_), f64)>,
    device: &B::Device,
) -> Result<StepGrads, TrainError>
where
    B: AutodiffBackend,
    M: Backbone<B> + AutodiffModule<B> + ModuleDisplay,
    M::InnerModule: ModuleDisplay,
    H: MarginHead<B> + AutodiffModule<B> + ModuleDisplay,
    H::InnerModule: ModuleDisplay,
{
    let (loss, terms, outcome) = shard(model, batch, plan, 1.0, device)?;
    let Some((mut grads, out)) = outcome else {
        return Ok(StepGrads::non_finite(loss, terms));
    };
    let params = GradientsParams::from_module(&mut grads, &*model);
    if let Some((update, lr)) = head_update {
        model.head = update.step(&model.head, &grads, &out, lr);
    }
    Ok(StepGrads {
        loss,
        terms,
        grads: params,
    })
}

/// Data parallelism: the batch split into one contiguous shard per device, a replica of the
/// model (`fork`) on each, forward and backward on every device in its own thread, and the
/// gradients brought to the first device and summed. Each shard's loss is weighted by its share
/// of the batch, so the sum is the gradient of the whole batch's mean loss: the global batch and
/// the learning rate are the config's whatever the number of devices (BatchNorm statistics are
/// per shard, as in PyTorch's DDP without SyncBatchNorm; the running averages of all replicas
/// are merged).
pub(crate) fn data_parallel<B, M, H>(
    model: &Model<B, M, H>,
    batch: &Batch,
    plan: &StepPlan<'_, B, M>,
    devices: &[B::Device],
) -> Result<StepGrads, TrainError>
where
    B: AutodiffBackend,
    M: Backbone<B> + AutodiffModule<B> + ModuleDisplay,
    M::InnerModule: ModuleDisplay,
    H: MarginHead<B> + AutodiffModule<B> + ModuleDisplay,
    H::InnerModule: ModuleDisplay,
{
    let main = &devices[0];
    let total = batch.labels.len() as f64;
    let results: Vec<Result<StepGrads, TrainError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = batch
            .split(devices.len())
            .into_iter()
            .zip(devices)
            .enumerate()
            .map(|(k, (shard_batch, device))| {
                let replica = model.clone().fork(device);
                scope.spawn(move || -> Result<StepGrads, TrainError> {
                    B::seed(device, step_seed(plan.seed, plan.step) ^ k as u64);
                    let weight = shard_batch.labels.len() as f64 / total;
                    let (loss, terms, outcome) =
                        shard(&replica, &shard_batch, plan, weight, device)?;
                    let Some((mut grads, _)) = outcome else {
                        return Ok(StepGrads::non_finite(loss, terms));
                    };
                    Ok(StepGrads {
                        loss,
                        terms,
                        grads: GradientsParams::from_module(&mut grads, &replica)
                            .to_device(main, &replica),
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(TrainError::Other("a replica thread panicked".into())))
            })
            .collect()
    });
    let mut sum = StepGrads::non_finite(0.0, vec![0.0; plan.terms.len()]);
    let mut grads = GradientsAccumulator::new();
    for shard in results {
        let shard = shard?;
        sum.loss += shard.loss;
        sum.terms
            .iter_mut()
            .zip(&shard.terms)
            .for_each(|(a, b)| *a += b);
        grads.accumulate(model, shard.grads);
    }
    sum.grads = grads.grads();
    Ok(sum)
}
