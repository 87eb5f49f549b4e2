//! The public training API: any backbone ([`iresnet::Backbone`]), any margin head
//! ([`arcface_loss::MarginHead`]) and any dataset ([`face_data::FaceDataset`] through a
//! [`Loader`]) on any `B: AutodiffBackend`, with the hooks later features plug into (extra loss
//! terms, parameter groups, a head update outside the optimiser, a model exporter).
//!
//! Split as burn-train's learner is: this module holds the builder and the loop's order; the
//! step is `step`, evaluation `verify`, early stopping `stopping`, checkpoints `state` and
//! `checkpoint`, metrics `metrics`, the end-of-run report `report`.
//!
//! Determinism: every random choice is a function of the seed and a position (the loader's
//! order of (seed, epoch), each sample's augmentation of (seed, epoch, index), Partial FC's
//! classes and the backend RNG of (seed, step)), so a run resumed from a checkpoint takes the
//! same path as one never interrupted.

use std::path::{Path, PathBuf};
use std::time::Instant;

use arcface_loss::MarginHead;
use burn::module::{AutodiffModule, ModuleDisplay};
use burn::optim::GradientsAccumulator;
use burn::tensor::backend::AutodiffBackend;
use eval::PairSet;
use face_data::{Batch, FaceDataset, Loader};
use iresnet::Backbone;

use crate::checkpoint::{BestMarker, Checkpointer};
use crate::clip::{clip_global_norm, global_norm};
use crate::collective::Collective;
use crate::error::TrainError;
use crate::groups::{Membership, ParamGroup};
use crate::hooks::{EvalHook, HeadUpdate, LossTerm};
use crate::metrics::{MetricsLog, StepInfo};
use crate::model::{materialize, Model};
use crate::optim::GroupOptimizer;
use crate::report::{finish, RunSummary, TrainReport};
use crate::schedule::LrSchedule;
use crate::settings::FitSettings;
use crate::state::{restore, write_checkpoint, Snapshot, TrainState};
use crate::step::{data_parallel, single_device, step_seed, StepGrads, StepPlan};
use crate::stopping::{observe, Evaluation};
use crate::sync::{any, broadcast_model, common_step, reduce_loss, sync_step};
use crate::verify::{Evaluator, ValidationSet};

type Inner<B, M> = <M as AutodiffModule<B>>::InnerModule;
/// An evaluation hook of a run of `M` and `H` on `B`.
type Hook<B, M, H> =
    Box<dyn EvalHook<<B as AutodiffBackend>::InnerBackend, Inner<B, M>, Inner<B, H>>>;
/// The other processes of a multi-node run, as the loop sees them.
type Nodes<B> = Box<dyn Collective<<B as AutodiffBackend>::InnerBackend>>;
/// Writes the trained backbone where users expect it (e.g. an `.arcface` file).
pub type Export<B, M> = Box<dyn Fn(&Inner<B, M>, &Path) -> Result<PathBuf, TrainError>>;

/// A training run being set up; [`fit`](Self::fit) runs it.
pub struct Learner<B: AutodiffBackend, M: AutodiffModule<B>, H: AutodiffModule<B>> {
    model: Model<B, M, H>,
    settings: FitSettings,
    groups: Vec<ParamGroup>,
    terms: Vec<Box<dyn LossTerm<B, M>>>,
    head_update: Option<Box<dyn HeadUpdate<B, H>>>,
    evaluator: Evaluator,
    hooks: Vec<Hook<B, M, H>>,
    export: Option<Export<B, M>>,
    devices: Vec<B::Device>,
    collective: Option<Nodes<B>>,
    resume: bool,
}

/// The end of a run: the inference-mode model and the report.
pub struct Trained<B: AutodiffBackend, M: AutodiffModule<B>, H: AutodiffModule<B>> {
    /// The trained backbone and head.
    pub model: Model<B::InnerBackend, M::InnerModule, H::InnerModule>,
    /// What the run did.
    pub report: TrainReport,
}

impl<B, M, H> Learner<B, M, H>
where
    B: AutodiffBackend,
    M: Backbone<B> + AutodiffModule<B> + ModuleDisplay + 'static,
    M::InnerModule: Backbone<B::InnerBackend> + ModuleDisplay,
    H: MarginHead<B> + AutodiffModule<B> + ModuleDisplay + 'static,
    H::InnerModule: MarginHead<B::InnerBackend> + ModuleDisplay,
{
    /// Trains `backbone` and `head` on `devices` (one replica each; the first holds the
    /// optimiser). Two parameter groups by default, backbone and head, as
    /// `settings.optimizer` describes them.
    pub fn new(backbone: M, head: H, settings: FitSettings, devices: &[B::Device]) -> Self {
        let model = Model::new(backbone, head);
        materialize(&model);
        Self {
            groups: settings.optimizer.default_groups(),
            evaluator: Evaluator {
                pairs: None,
                validation: None,
                flip_test: settings.flip_test,
                collapse_warn: settings.collapse_warn,
            },
            model,
            settings,
            terms: vec![],
            head_update: None,
            hooks: vec![],
            export: None,
            devices: devices.to_vec(),
            collective: None,
            resume: false,
        }
    }

    /// Replaces the parameter groups (every parameter must fall in one).
    pub fn with_groups(mut self, groups: Vec<ParamGroup>) -> Self {
        self.groups = groups;
        self
    }

    /// Adds a loss term to every batch's loss.
    pub fn with_loss_term(mut self, term: impl LossTerm<B, M> + 'static) -> Self {
        self.terms.push(Box::new(term));
        self
    }

    /// Updates the head outside the optimiser after each backward pass (one device only).
    pub fn with_head_update(mut self, update: impl HeadUpdate<B, H> + 'static) -> Self {
        self.head_update = Some(Box::new(update));
        self
    }

    /// Verifies on these pairs at every evaluation (accuracy, collapse share).
    pub fn with_verification(mut self, pairs: PairSet) -> Self {
        self.evaluator.pairs = Some(pairs);
        self
    }

    /// Computes the margin loss on these unseen samples at every evaluation.
    pub fn with_validation(mut self, set: ValidationSet) -> Self {
        self.evaluator.validation = Some(set);
        self
    }

    /// Runs `hook` at every evaluation beside verification.
    pub fn with_evaluation(
        mut self,
        hook: impl EvalHook<B::InnerBackend, Inner<B, M>, Inner<B, H>> + 'static,
    ) -> Self {
        self.hooks.push(Box::new(hook));
        self
    }

    /// Writes the trained backbone at the end (the report names the file).
    pub fn with_export(
        mut self,
        export: impl Fn(&Inner<B, M>, &Path) -> Result<PathBuf, TrainError> + 'static,
    ) -> Self {
        self.export = Some(Box::new(export));
        self
    }

    /// Trains as one node of a multi-node run: the loader gives this node's part of each batch
    /// ([`Loader::with_shard`]), and after each backward pass the gradients are summed over the
    /// nodes (each weighted by its node's share of the global batch: the global batch's mean
    /// gradient), BatchNorm running statistics averaged, the loss and the decisions to stop
    /// shared, so every node takes the same step. The global batch and the learning rate are
    /// the config's, as with several devices in one process.
    pub fn with_collective(
        mut self,
        collective: impl Collective<B::InnerBackend> + 'static,
    ) -> Self {
        self.collective = Some(Box::new(collective));
        self
    }

    /// Continues the run in `out` from its newest intact checkpoint instead of starting one.
    pub fn resuming(mut self) -> Self {
        self.resume = true;
        self
    }

    /// Trains on `loader`'s batches, writing into `out`: `metrics.jsonl`, `checkpoints/`,
    /// plots, `report.json` and the exported model. `progress` sees every optimiser step.
    pub fn fit<D: FaceDataset + 'static>(
        mut self,
        loader: &Loader<D>,
        out: &Path,
        mut progress: impl FnMut(&StepInfo),
    ) -> Result<Trained<B, M, H>, TrainError> {
        let export = self.export.take();
        let (mut run, model) = Run::start(self, out)?;
        let (model, summary) = run.train(model, loader, out, &mut progress)?;
        let model = model.valid();
        let model_file = match &export {
            Some(export) => Some(export(&model.backbone, out)?),
            None => None,
        };
        let report = finish(summary, &run.state, model_file, &run.checkpoints, out)?;
        Ok(Trained { model, report })
    }
}

/// A run in progress: one optimiser per trained group, the hooks, the position. The model
/// itself is passed by value through the loop (the optimisers consume and return it).
struct Run<B, M, H>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + ModuleDisplay,
    M::InnerModule: ModuleDisplay,
    H: AutodiffModule<B> + ModuleDisplay,
    H::InnerModule: ModuleDisplay,
{
    settings: FitSettings,
    groups: Vec<ParamGroup>,
    optimizers: Vec<Option<Optim<B, M, H>>>,
    membership: Membership,
    /// Every backbone parameter is in a frozen group.
    frozen_backbone: bool,
    terms: Vec<Box<dyn LossTerm<B, M>>>,
    head_update: Option<Box<dyn HeadUpdate<B, H>>>,
    evaluator: Evaluator,
    hooks: Vec<Hook<B, M, H>>,
    devices: Vec<B::Device>,
    collective: Option<Nodes<B>>,
    checkpoints: Checkpointer,
    state: TrainState,
    resumed_from: Option<u64>,
}

/// One trained group's optimiser over the whole model.
type Optim<B, M, H> = GroupOptimizer<B, Model<B, M, H>>;
/// The model after a batch, with the optimiser step it completed, if it did.
type Stepped<B, M, H> = (Model<B, M, H>, Option<Applied>);

/// One optimiser step's gradients, gathered over `accumulation` batches.
struct Pending<Mo> {
    grads: GradientsAccumulator<Mo>,
    batches: usize,
    loss: f64,
    terms: Vec<f64>,
    /// Images this node and all nodes trained on (multi-node runs).
    images: (usize, usize),
}

impl<Mo> Pending<Mo> {
    fn new(terms: usize) -> Self {
        Self {
            grads: GradientsAccumulator::new(),
            batches: 0,
            images: (0, 0),
            loss: 0.0,
            terms: vec![0.0; terms],
        }
    }
}

/// The run's length and clock.
struct Clock {
    steps_per_epoch: u64,
    total_steps: u64,
    start: Instant,
    elapsed_before: f64,
    images_before: u64,
}

/// A finished optimiser step.
struct Applied {
    lr: f64,
    loss: f64,
    terms: Vec<f64>,
    grad_norm: f64,
}

impl<B, M, H> Run<B, M, H>
where
    B: AutodiffBackend,
    M: Backbone<B> + AutodiffModule<B> + ModuleDisplay + 'static,
    M::InnerModule: Backbone<B::InnerBackend> + ModuleDisplay,
    H: MarginHead<B> + AutodiffModule<B> + ModuleDisplay + 'static,
    H::InnerModule: MarginHead<B::InnerBackend> + ModuleDisplay,
{
    /// Checks the setup, restores the newest checkpoint when resuming, and assigns and freezes
    /// the parameter groups.
    fn start(l: Learner<B, M, H>, out: &Path) -> Result<(Self, Model<B, M, H>), TrainError> {
        l.settings.validate()?;
        let Some(device) = l.devices.first().cloned() else {
            return Err(TrainError::Other("no device to train on".into()));
        };
        if (l.devices.len() > 1 || l.collective.is_some()) && l.head_update.is_some() {
            return Err(TrainError::Other(
                "a head update outside the optimiser (Partial FC) runs on one device; use the full head for data-parallel training".into(),
            ));
        }
        std::fs::create_dir_all(out).map_err(crate::error::io(out))?;
        let checkpoints = Checkpointer::new(out, l.settings.checkpoint.keep_last)?;
        let checkpoint = match (l.resume, &l.collective) {
            (true, Some(c)) => Some(common_checkpoint(&**c, &checkpoints, &device)?),
            (false, Some(c)) => {
                let steps = checkpoints.steps()?;
                if any(&**c, !steps.is_empty(), "checking for old checkpoints", &device)? {
                    return Err(TrainError::Other(format!(
                        "a node's run folder already holds checkpoints (this node's {}: {steps:?}): continue the run with --resume on every node, or give every node a new --out",
                        out.display()
                    )));
                }
                None
            }
            (true, None) => Some(checkpoints.latest()?),
            (false, None) => match checkpoints.steps()?.last() {
                Some(step) => return Err(TrainError::Other(format!(
                    "{} already holds checkpoints (up to step {step}): continue that run with `arcface train --resume {}`, or choose another --out",
                    out.display(),
                    out.display()
                ))),
                None => None,
            },
        };
        let optimizers = (l.groups.iter())
            .map(|g| {
                let optim = (!g.frozen).then(|| l.settings.optimizer.init(g.weight_decay));
                (g.name.clone(), optim)
            })
            .collect::<Vec<_>>();
        let mut head_update = l.head_update;
        let resumed_from = checkpoint.as_ref().map(|c| c.step);
        let (model, optimizers, state) = match checkpoint {
            Some(c) => {
                tracing::info!("resuming {} from step {}", out.display(), c.step);
                let dir = c.dir.clone();
                let r = restore(c, l.model, optimizers, &device)?;
                if let (Some(bytes), Some(update)) = (r.head_update, head_update.as_mut()) {
                    update.load_state(&bytes, &device).map_err(|reason| {
                        crate::checkpoint::CheckpointError::Corrupt { path: dir, reason }
                    })?;
                }
                (r.model, r.optimizers, r.state)
            }
            None => {
                let optimizers = optimizers.into_iter().map(|(_, o)| o).collect();
                (l.model, optimizers, TrainState::default())
            }
        };
        let membership = Membership::of(&model, &l.groups)?;
        for (g, n) in l.groups.iter().zip(membership.counts()) {
            let frozen = if g.frozen { ", frozen" } else { "" };
            tracing::info!(
                "parameter group {}: {n} tensors, lr x{}, weight decay {}{frozen}",
                g.name,
                g.lr_scale,
                g.weight_decay,
            );
        }
        let model = match &l.collective {
            Some(c) => broadcast_model(&**c, model, &device)?,
            None => model,
        };
        let model = membership.freeze(model);
        let frozen_backbone = membership.all_frozen(&model.backbone);
        if frozen_backbone {
            tracing::info!("the backbone is frozen: it runs in inference mode");
        }
        let run = Self {
            frozen_backbone,
            settings: l.settings,
            groups: l.groups,
            optimizers,
            membership,
            terms: l.terms,
            head_update,
            evaluator: l.evaluator,
            hooks: l.hooks,
            devices: l.devices,
            collective: l.collective,
            checkpoints,
            state,
            resumed_from,
        };
        Ok((run, model))
    }

    /// The loop over epochs and batches, until the last step, early stopping or the time limit.
    fn train<D: FaceDataset + 'static>(
        &mut self,
        mut model: Model<B, M, H>,
        loader: &Loader<D>,
        out: &Path,
        progress: &mut dyn FnMut(&StepInfo),
    ) -> Result<(Model<B, M, H>, RunSummary), TrainError> {
        let settings = &self.settings;
        let batches_per_epoch = loader.batches_per_epoch().max(1);
        let steps_per_epoch = (batches_per_epoch / settings.accumulation).max(1) as u64;
        let clock = Clock {
            steps_per_epoch,
            total_steps: (settings.epochs * steps_per_epoch as f64).ceil() as u64,
            start: Instant::now(),
            elapsed_before: self.state.elapsed_secs,
            images_before: self.state.images,
        };
        let mut summary = RunSummary {
            steps_per_epoch,
            effective_batch: loader.config().batch_size * settings.accumulation,
            devices: self.devices.len(),
            metrics: out.join("metrics.jsonl"),
            resumed_from: self.resumed_from,
            ..Default::default()
        };
        tracing::info!(
            "{} images, {} identities; {steps_per_epoch} steps/epoch of {} images on {} device(s); {} steps",
            loader.dataset().len(),
            loader.dataset().num_identities(),
            summary.effective_batch,
            self.devices.len(),
            clock.total_steps,
        );
        let mut metrics = MetricsLog::open(&summary.metrics, self.state.step)?;
        if clock.total_steps == 0 {
            if !self.state.finished {
                self.untrained(&model, &mut summary)?;
            }
            summary.wall_secs = clock.elapsed_before + clock.start.elapsed().as_secs_f64();
            return Ok((model, summary));
        }
        if loader.batches_per_epoch() == 0 {
            return Err(no_batch(loader, self.devices.len()));
        }
        let schedule =
            (self.settings.schedule).build(steps_per_epoch as usize, self.settings.epochs);
        let mut pending = Pending::new(self.terms.len());
        let epochs = match self.state.finished {
            true => self.state.epoch..self.state.epoch,
            false => self.state.epoch..u64::MAX,
        };
        'epochs: for epoch in epochs {
            let first = if epoch == self.state.epoch {
                self.state.batch
            } else {
                0
            };
            let mut trained = false;
            for (offset, batch) in loader.epoch_from(epoch, first).enumerate() {
                let batch = batch?;
                // Too small to split over the devices: skipped (on every node alike, through
                // the loss they share, in a multi-node run).
                if batch.labels.len() < 2 * self.devices.len() && self.collective.is_none() {
                    continue;
                }
                trained = true;
                self.state.images += batch.labels.len() as u64;
                let lr = schedule.lr(self.state.step);
                let applied;
                (model, applied) = self.batch(model, &batch, lr, &mut pending)?;
                let Some(applied) = applied else { continue };
                self.state.step += 1;
                self.state.last_loss = Some(applied.loss);
                (self.state.epoch, self.state.batch) = (epoch, first + offset + 1);
                let (info, done) =
                    self.after_step(&model, applied, &clock, &mut metrics, &mut summary)?;
                progress(&info);
                if done {
                    break 'epochs;
                }
            }
            if !trained && first == 0 {
                // Every batch was skipped (too small to split over the devices): the next epoch
                // would skip them again.
                return Err(no_batch(loader, self.devices.len()));
            }
        }
        summary.wall_secs = clock.elapsed_before + clock.start.elapsed().as_secs_f64();
        Ok((model, summary))
    }

    /// One batch forward and backward; when it completes an optimiser step (after
    /// `accumulation` batches), clips, checks and applies it.
    fn batch(
        &mut self,
        mut model: Model<B, M, H>,
        batch: &Batch,
        lr: f64,
        pending: &mut Pending<Model<B, M, H>>,
    ) -> Result<Stepped<B, M, H>, TrainError> {
        let device = self.devices[0].clone();
        // Shards are numbered over the whole run: node r's first device trains shard r x devices.
        let first_shard = self.collective.as_ref().map_or(0, |c| c.rank()) * self.devices.len();
        let seed = step_seed(self.settings.seed, self.state.step);
        B::seed(&device, seed ^ first_shard as u64);
        let plan = StepPlan {
            seed: self.settings.seed,
            step: self.state.step,
            accumulation: self.settings.accumulation,
            precision: self.settings.precision,
            terms: &self.terms,
            frozen: self.membership.frozen(),
            frozen_backbone: self.frozen_backbone,
            first_shard,
        };
        let too_small = batch.labels.len() < 2 * self.devices.len();
        let mut shard: StepGrads = if too_small {
            StepGrads::non_finite(f64::NAN, vec![f64::NAN; self.terms.len()])
        } else if self.devices.len() == 1 {
            let head_lr = lr * head_lr_scale(&self.groups);
            let update = self.head_update.as_deref_mut().map(|u| (u, head_lr));
            single_device(&mut model, batch, &plan, update, &device)?
        } else {
            data_parallel(&model, batch, &plan, &self.devices)?
        };
        if let Some(c) = &self.collective {
            let n = batch.labels.len();
            let local = (!too_small).then_some((n, shard.loss, shard.terms.as_slice()));
            let global = reduce_loss(&**c, local, self.terms.len(), &device)?;
            (shard.loss, shard.terms) = (global.loss, global.terms);
            pending.images.0 += n;
            pending.images.1 += global.images;
        }
        // A non-finite loss is caught before a backward pass is spent on it.
        if !shard.loss.is_finite() {
            self.guard(&model, &format!("non-finite loss {}", shard.loss))?;
            *pending = Pending::new(self.terms.len());
            return Ok((model, None));
        }
        pending.grads.accumulate(&model, shard.grads);
        pending.loss += shard.loss;
        (pending.terms.iter_mut().zip(&shard.terms)).for_each(|(a, b)| *a += b);
        pending.batches += 1;
        if pending.batches < self.settings.accumulation {
            return Ok((model, None));
        }
        let mut full = std::mem::replace(pending, Pending::new(self.terms.len()));
        let mut grads = full.grads.grads();
        if let Some(c) = &self.collective {
            let share = full.images.0 as f64 / full.images.1.max(1) as f64;
            let frozen = self.membership.frozen();
            (model, grads) = sync_step(&**c, model, grads, share, frozen, &device)?;
        }
        // The norm is computed whether or not it clips, so the guard sees every gradient.
        let grad_norm = match self.settings.clip_norm {
            Some(max) => clip_global_norm::<B, _>(&model.backbone, &mut grads, max),
            None => global_norm::<B, _>(&model.backbone, &grads),
        };
        if !grad_norm.is_finite() {
            self.guard(&model, &format!("non-finite gradient norm {grad_norm}"))?;
            return Ok((model, None));
        }
        self.state.bad_in_a_row = 0;
        let parts = self.membership.split(&model, grads);
        for ((group, optim), part) in self.groups.iter().zip(&mut self.optimizers).zip(parts) {
            if let Some(optim) = optim {
                model = optim.step(lr * group.lr_scale, model, part);
            }
        }
        let n = self.settings.accumulation as f64;
        let applied = Applied {
            lr,
            loss: full.loss / n,
            terms: full.terms.iter().map(|t| t / n).collect(),
            grad_norm,
        };
        Ok((model, Some(applied)))
    }

    /// After an optimiser step: evaluation and early stopping, the step's metrics line, then the
    /// checkpoint (in that order: a checkpoint never holds a step whose line is not written, so a
    /// resume from it continues the metrics without a gap).
    fn after_step(
        &mut self,
        model: &Model<B, M, H>,
        applied: Applied,
        clock: &Clock,
        metrics: &mut MetricsLog,
        summary: &mut RunSummary,
    ) -> Result<(StepInfo, bool), TrainError> {
        let state = &mut self.state;
        let session = clock.start.elapsed().as_secs_f64();
        state.elapsed_secs = clock.elapsed_before + session;
        // The limit is per invocation: a resumed run gets its time again.
        let limit = self.settings.time_limit_secs;
        let mut out_of_time = limit > 0 && session >= limit as f64;
        if let Some(c) = &self.collective {
            // Each node's clock is its own: all stop at the step the first runs out of time.
            out_of_time = any(&**c, out_of_time, "the time limit", &self.devices[0])?;
        }
        let state = &mut self.state;
        let mut done = state.step >= clock.total_steps || out_of_time;
        let every = self.settings.eval_every_steps;
        let evaluate = done || (every > 0 && state.step.is_multiple_of(every));
        let mut info = StepInfo {
            step: state.step,
            total_steps: clock.total_steps,
            epoch: state.step as f64 / clock.steps_per_epoch as f64,
            loss: applied.loss,
            lr: applied.lr,
            grad_norm: applied.grad_norm,
            images_per_sec: (state.images - clock.images_before) as f64 / session.max(1e-9),
            elapsed_secs: state.elapsed_secs,
            accuracy: None,
            collapse_share: None,
            validation_loss: None,
            terms: (self.terms.iter().map(|t| t.name().to_string()))
                .zip(applied.terms)
                .collect(),
            evals: Default::default(),
        };
        let mut improved = false;
        if evaluate {
            let e = self.evaluate(model, &mut info)?;
            let state = &mut self.state;
            let verdict = observe(
                &self.settings.early_stopping,
                &e,
                &mut state.best_metric,
                &mut state.evals_since_best,
            );
            improved = verdict.improved;
            let stop = match &self.collective {
                Some(c) => any(&**c, verdict.stop, "early stopping", &self.devices[0])?,
                None => verdict.stop,
            };
            let state = &mut self.state;
            if stop {
                tracing::info!(
                    "step {}: no improvement in {} evaluations: stopping early",
                    state.step,
                    state.evals_since_best
                );
                state.stopped_early = !done;
                done = true;
            }
        }
        let state = &mut self.state;
        if done {
            summary.stopped_by_time =
                out_of_time && state.step < clock.total_steps && !state.stopped_early;
            state.finished = !summary.stopped_by_time;
        }
        if state.step.is_multiple_of(self.settings.log_every.max(1)) || evaluate || done {
            metrics.write(&info)?;
        }
        let every = self.settings.checkpoint.every_steps;
        if evaluate || done || (every > 0 && self.state.step.is_multiple_of(every)) {
            let best = improved.then(|| BestMarker {
                step: self.state.step,
                metric: self.state.best_metric.unwrap_or(f64::NAN),
            });
            summary.last_checkpoint = Some(self.checkpoint(model, best)?);
        }
        Ok((info, done))
    }

    /// Verification and the evaluation hooks on the inference-mode model, recorded in the
    /// run's state and in `info`.
    fn evaluate(
        &mut self,
        model: &Model<B, M, H>,
        info: &mut StepInfo,
    ) -> Result<Evaluation, TrainError> {
        let state = &mut self.state;
        let valid = model.valid();
        let device = &self.devices[0];
        let e: Evaluation =
            (self.evaluator).run(&valid.backbone, &valid.head, state.step, device)?;
        if let Some(a) = e.accuracy {
            state.last_accuracy = Some(a);
            state.best_accuracy = Some(state.best_accuracy.unwrap_or(0.0).max(a));
        }
        state.last_collapse = e.collapse_share.or(state.last_collapse);
        (info.accuracy, info.collapse_share, info.validation_loss) =
            (e.accuracy, e.collapse_share, e.validation_loss);
        for hook in &self.hooks {
            let values = hook.evaluate(&valid.backbone, &valid.head, state.step, device)?;
            info.evals.extend(values);
        }
        state.last_evals = info.evals.clone();
        Ok(e)
    }

    /// A run of zero steps (`epochs = 0`): the model as given is evaluated and checkpointed,
    /// e.g. a head grown by weight imprinting, so it can be compared and continued like any run.
    fn untrained(
        &mut self,
        model: &Model<B, M, H>,
        summary: &mut RunSummary,
    ) -> Result<(), TrainError> {
        let mut info = StepInfo {
            total_steps: 0,
            ..StepInfo::default()
        };
        self.evaluate(model, &mut info)?;
        tracing::info!(
            "epochs = 0: evaluated the model as given (accuracy {:?}{})",
            info.accuracy,
            (info.evals.iter())
                .map(|(k, v)| format!(", {k} {v:.4}"))
                .collect::<String>()
        );
        self.state.finished = true;
        summary.last_checkpoint = Some(self.checkpoint(model, None)?);
        Ok(())
    }

    fn checkpoint(
        &self,
        model: &Model<B, M, H>,
        best: Option<BestMarker>,
    ) -> Result<PathBuf, TrainError> {
        let optimizers = (self.groups.iter().zip(&self.optimizers))
            .filter_map(|(g, o)| Some((g.name.as_str(), o.as_ref()?)))
            .collect();
        let snapshot = Snapshot {
            model,
            optimizers,
            head_update: self.head_update.as_ref().and_then(|u| u.state()),
        };
        write_checkpoint(&self.checkpoints, snapshot, &self.state, best)
    }

    /// Records a skipped step; after `max_bad_steps` in a row, checkpoints what the run has
    /// and stops it.
    fn guard(&mut self, model: &Model<B, M, H>, what: &str) -> Result<(), TrainError> {
        let state = &mut self.state;
        state.skipped_steps += 1;
        state.bad_in_a_row += 1;
        tracing::warn!(
            "step {}: {what}, step skipped ({} in a row)",
            state.step,
            state.bad_in_a_row
        );
        if state.bad_in_a_row < self.settings.max_bad_steps {
            return Ok(());
        }
        let saved = self.checkpoint(model, None)?;
        Err(TrainError::Diverged {
            step: self.state.step,
            count: self.state.bad_in_a_row,
            checkpoint: saved.display().to_string(),
        })
    }
}

/// Why an epoch of `loader` gives nothing to train on (instead of looping over empty epochs).
fn no_batch<D: FaceDataset>(loader: &Loader<D>, devices: usize) -> TrainError {
    let (n, batch) = (loader.dataset().len(), loader.config().batch_size);
    TrainError::Other(format!(
        "{n} images make no batch of {batch} to split over {devices} device(s) (the loader drops a short last batch): give more data or a smaller loader.batch_size"
    ))
}

/// The learning-rate scale of the group that holds the head (for the head update).
fn head_lr_scale(groups: &[ParamGroup]) -> f64 {
    (groups.iter())
        .find(|g| g.prefixes.iter().any(|p| p == "head"))
        .map_or(1.0, |g| g.lr_scale)
}

/// The newest checkpoint every node of the run holds, loaded (and verified) from this node's.
fn common_checkpoint<B: burn::tensor::backend::Backend>(
    collective: &dyn Collective<B>,
    checkpoints: &Checkpointer,
    device: &B::Device,
) -> Result<crate::checkpoint::Checkpoint, TrainError> {
    let steps = checkpoints.steps()?;
    match common_step(collective, &steps, device)? {
        Some(step) => {
            tracing::info!("node {}: the nodes' last common checkpoint is step {step}", collective.rank());
            Ok(checkpoints.load(step)?)
        }
        None => Err(TrainError::Collective(format!(
            "no checkpoint is held by every node (this node, rank {}, holds steps {steps:?} in {}): the run cannot resume in step; start it again with a new --out",
            collective.rank(),
            checkpoints.dir().display()
        ))),
    }
}
