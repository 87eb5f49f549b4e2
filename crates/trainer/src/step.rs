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
    /// Every backbone parameter is frozen: the backbone runs in inference mode (its BatchNorm
    /// statistics used as they are, not updated), as a frozen PyTorch module in `eval()` does.
    pub frozen_backbone: bool,
    /// The run-wide number of this process's first shard (multi-node runs: rank x devices),
    /// which seeds each shard's backend RNG as one process with every device would.
    pub first_shard: usize,
}

/// A step's (or a shard's) result: the loss (margin head plus terms, batch mean), each term's
/// value, and the model's gradients, already divided by the accumulation.
pub(crate) struct StepGrads {
    pub loss: f64,
    pub terms: Vec<f64>,
    pub grads: GradientsParams,
}

impl StepGrads {
    pub(crate) fn non_finite(loss: f64, terms: Vec<f64>) -> Self {
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
    M::InnerModule: Backbone<B::InnerBackend> + ModuleDisplay,
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

/// The batch's embeddings, f32, computed in the configured precision (a frozen backbone in
/// inference mode, outside the autodiff graph).
fn embed<B: AutodiffBackend, M: Backbone<B> + AutodiffModule<B>>(
    backbone: &M,
    x: Tensor<B, 4>,
    plan: &StepPlan<'_, B, M>,
) -> Tensor<B, 2>
where
    M::InnerModule: Backbone<B::InnerBackend>,
{
    if plan.frozen_backbone {
        return Tensor::from_inner(backbone.valid().embed(x.inner()));
    }
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
    M::InnerModule: Backbone<B::InnerBackend> + ModuleDisplay,
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
    M::InnerModule: Backbone<B::InnerBackend> + ModuleDisplay,
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
                    B::seed(
                        device,
                        step_seed(plan.seed, plan.step) ^ (plan.first_shard + k) as u64,
                    );
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
    // Each replica's BatchNorm updated the shared running statistics from its own thread.
    crate::model::merge_running_statistics(model);
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::ElementConversion;

    type Ad = burn::backend::Autodiff<burn::backend::Flex>;

    /// Largest |a - b| over the module's gradients, and the largest |a|.
    struct MaxDiff<'a> {
        a: &'a GradientsParams,
        b: &'a GradientsParams,
        diff: f32,
        scale: f32,
        count: usize,
    }

    impl ModuleVisitor<Ad> for MaxDiff<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
            type Inner = burn::backend::Flex;
            if let (Some(a), Some(b)) = (
                self.a.get::<Inner, D>(param.id),
                self.b.get::<Inner, D>(param.id),
            ) {
                let abs = |t: Tensor<Inner, D>| t.abs().max().into_scalar().elem::<f32>();
                self.diff = self.diff.max(abs(a.clone() - b));
                self.scale = self.scale.max(abs(a));
                self.count += 1;
            }
        }
    }

    #[test]
    fn data_parallel_gradient_is_the_mean_of_the_shards() {
        let config = TrainConfig {
            backbone: iresnet::BackboneConfig::IResNet(
                iresnet::IResNetConfig::new([1, 1, 1, 1])
                    .with_widths([4, 8, 8, 16])
                    .with_embedding_dim(16),
            ),
            ..Default::default()
        };
        let device = Default::default();
        let mut head = config.head.clone();
        (head.num_classes, head.embedding_dim) = (5, 16);
        let model: Model<Ad, iresnet::AnyBackbone<Ad>, arcface_loss::MarginFc<Ad>> = Model::new(
            config.backbone.init(&device).unwrap(),
            head.init(&device).unwrap(),
        );
        crate::model::materialize(&model);
        let n = 8;
        let plane = 3 * 112 * 112;
        let batch = Batch {
            images: (0..n * plane)
                .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
                .collect(),
            shape: [n, 3, 112, 112],
            labels: vec![0, 1, 2, 3, 4, 0, 1, 2],
            indices: (0..n).collect(),
            skipped: vec![],
        };
        let frozen = Default::default();
        let plan = StepPlan {
            seed: 0,
            step: 0,
            accumulation: 1,
            precision: Precision::F32,
            terms: &[],
            frozen: &frozen,
            frozen_backbone: false,
            first_shard: 0,
        };
        let dp = data_parallel(&model, &batch, &plan, &[device, device]).unwrap();
        let mut sum = GradientsAccumulator::new();
        let mut loss = 0.0;
        for shard in batch.split(2) {
            let mut replica = model.clone();
            let g = single_device(&mut replica, &shard, &plan, None, &device).unwrap();
            loss += g.loss / 2.0;
            sum.accumulate(&model, g.grads);
        }
        assert!(
            (dp.loss - loss).abs() < 1e-6 * loss.abs(),
            "{} vs {loss}",
            dp.loss
        );
        // DP weights each shard's loss by 4/8: twice the DP gradient is the shards' sum.
        let shards = sum.grads();
        let dp = scaled::<Ad, _>(&model, dp.grads, 2.0);
        let backbone = max_diff(&model.backbone, &dp, &shards);
        let head = max_diff(&model.head, &dp, &shards);
        for (v, name) in [(&backbone, "backbone"), (&head, "head")] {
            assert!(
                v.diff <= 1e-5 * v.scale,
                "{name}: max diff {} of {}",
                v.diff,
                v.scale
            );
        }
        assert!(
            backbone.count > 10,
            "{} backbone gradients compared",
            backbone.count
        );
        let v = head;
        assert_eq!(v.count, 1, "the head's centres");
        assert!(
            v.diff <= 1e-5 * v.scale,
            "head: max diff {} of {}",
            v.diff,
            v.scale
        );
    }

    fn max_diff<'a, M: Module<Ad>>(
        module: &M,
        a: &'a GradientsParams,
        b: &'a GradientsParams,
    ) -> MaxDiff<'a> {
        let mut v = MaxDiff {
            a,
            b,
            diff: 0.0,
            scale: 0.0,
            count: 0,
        };
        module.visit(&mut v);
        v
    }

    /// `grads` times `factor`, for `module`'s parameters.
    fn scaled<B: AutodiffBackend, M: AutodiffModule<B>>(
        module: &M,
        grads: GradientsParams,
        factor: f64,
    ) -> GradientsParams {
        struct Scale<'a> {
            grads: &'a mut GradientsParams,
            factor: f64,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                    self.grads
                        .register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.factor));
                }
            }
        }
        let mut grads = grads;
        module.visit(&mut Scale {
            grads: &mut grads,
            factor,
        });
        grads
    }
}
