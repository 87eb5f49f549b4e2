//! Parameter groups: parameters chosen by path prefix (`backbone`, `head`,
//! `backbone.layer4`), each with its own learning-rate scale and weight decay, or frozen.
//! arcface_torch trains two groups (backbone and head); continual learning freezes some.

use std::collections::{HashMap, HashSet};

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{backend::AutodiffBackend, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// One group of parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamGroup {
    /// Names the group in logs and its optimiser state in checkpoints (`optim-<name>.bin`).
    pub name: String,
    /// Path prefixes, whole segments (`backbone.layer4` matches `backbone.layer4.0.conv1.weight`,
    /// not `backbone.layer40`); a parameter belongs to the group with the longest match.
    pub prefixes: Vec<String>,
    /// The group's learning rate is the schedule's times this.
    pub lr_scale: f64,
    /// The group's weight decay.
    pub weight_decay: f64,
    /// No gradient is computed for a frozen group and it has no optimiser state.
    pub frozen: bool,
}

impl ParamGroup {
    /// A trained group over `prefixes` at the schedule's rate.
    pub fn new(name: &str, prefixes: &[&str], weight_decay: f64) -> Self {
        Self {
            name: name.into(),
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            lr_scale: 1.0,
            weight_decay,
            frozen: false,
        }
    }

    /// The same group at `lr_scale` times the schedule's rate.
    pub fn with_lr_scale(mut self, lr_scale: f64) -> Self {
        self.lr_scale = lr_scale;
        self
    }

    /// The same group, frozen.
    pub fn frozen(mut self) -> Self {
        self.frozen = true;
        self
    }

    /// Segments of the longest prefix matching `path`, if any does.
    fn matches(&self, path: &[String]) -> Option<usize> {
        self.prefixes
            .iter()
            .map(|p| p.split('.').filter(|s| !s.is_empty()).collect::<Vec<_>>())
            .filter(|p| p.len() <= path.len() && p.iter().zip(path).all(|(a, b)| a == b))
            .map(|p| p.len())
            .max()
    }

    /// Refuses an empty group and rates or decays out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.prefixes.is_empty() {
            return Err(format!("group {}: no prefixes", self.name));
        }
        if !(self.lr_scale.is_finite() && self.lr_scale >= 0.0) {
            return Err(format!("group {}: lr_scale must be >= 0", self.name));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(format!("group {}: weight decay must be >= 0", self.name));
        }
        Ok(())
    }
}

/// Which group each parameter of a model is in.
pub(crate) struct Membership {
    of: HashMap<ParamId, usize>,
    frozen: HashSet<ParamId>,
    counts: Vec<usize>,
}

impl Membership {
    /// Assigns every float parameter of `model`; one that no group matches is an error that
    /// names it.
    pub fn of<B: AutodiffBackend, M: AutodiffModule<B>>(
        model: &M,
        groups: &[ParamGroup],
    ) -> Result<Self, TrainError> {
        /// Tracks the path through `enter_module`; enum variants (`AnyBackbone::IResNet`) add
        /// no segment, so prefixes read as the fields do (`backbone.layer4`).
        struct Assign<'a> {
            groups: &'a [ParamGroup],
            path: Vec<Option<String>>,
            of: HashMap<ParamId, usize>,
            unmatched: Vec<String>,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for Assign<'_> {
            fn enter_module(&mut self, name: &str, container_type: &str) {
                let variant = container_type.starts_with("Enum:");
                self.path.push((!variant).then(|| name.to_string()));
            }
            fn exit_module(&mut self, _name: &str, _container_type: &str) {
                self.path.pop();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let path: Vec<String> = self.path.iter().flatten().cloned().collect();
                let best = (self.groups.iter().enumerate())
                    .filter_map(|(k, g)| Some((g.matches(&path)?, k)))
                    .max_by_key(|(len, k)| (*len, usize::MAX - k));
                match best {
                    Some((_, k)) => {
                        self.of.insert(param.id, k);
                    }
                    None => self.unmatched.push(path.join(".")),
                }
            }
        }
        for g in groups {
            g.validate().map_err(TrainError::Other)?;
        }
        let mut assign = Assign {
            groups,
            path: vec![],
            of: HashMap::new(),
            unmatched: vec![],
        };
        model.visit(&mut assign);
        if let Some(first) = assign.unmatched.first() {
            return Err(TrainError::Other(format!(
                "{} parameters are in no parameter group (first: {first}); groups: {}",
                assign.unmatched.len(),
                groups
                    .iter()
                    .map(|g| format!("{} {:?}", g.name, g.prefixes))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut counts = vec![0; groups.len()];
        assign.of.values().for_each(|&k| counts[k] += 1);
        let frozen = (assign.of.iter())
            .filter(|(_, &k)| groups[k].frozen)
            .map(|(id, _)| *id)
            .collect();
        Ok(Self {
            of: assign.of,
            frozen,
            counts,
        })
    }

    /// Parameter tensors per group, in the groups' order.
    pub fn counts(&self) -> &[usize] {
        &self.counts
    }

    /// The frozen parameters' ids.
    pub fn frozen(&self) -> &HashSet<ParamId> {
        &self.frozen
    }

    /// Whether every float parameter of `module` (a part of the model) is frozen.
    pub fn all_frozen<B: AutodiffBackend, M: AutodiffModule<B>>(&self, module: &M) -> bool {
        struct All<'a>(&'a HashSet<ParamId>, bool);
        impl<B: AutodiffBackend> ModuleVisitor<B> for All<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                self.1 &= self.0.contains(&param.id);
            }
        }
        let mut all = All(&self.frozen, true);
        module.visit(&mut all);
        all.1
    }

    /// `model` with its frozen parameters marked as needing no gradient.
    pub fn freeze<B: AutodiffBackend, M: AutodiffModule<B>>(&self, model: M) -> M {
        struct Freeze<'a>(&'a HashSet<ParamId>);
        impl<B: AutodiffBackend> ModuleMapper<B> for Freeze<'_> {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                match self.0.contains(&param.id) {
                    true => param.set_require_grad(false),
                    false => param,
                }
            }
        }
        match self.frozen.is_empty() {
            true => model,
            false => model.map(&mut Freeze(&self.frozen)),
        }
    }

    /// `grads` split by group (frozen groups' share is dropped).
    pub fn split<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        model: &M,
        grads: GradientsParams,
    ) -> Vec<GradientsParams> {
        struct Split<'a> {
            of: &'a HashMap<ParamId, usize>,
            all: GradientsParams,
            parts: Vec<GradientsParams>,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for Split<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                if let (Some(&k), Some(g)) = (
                    self.of.get(&param.id),
                    self.all.remove::<B::InnerBackend, D>(param.id),
                ) {
                    self.parts[k].register::<B::InnerBackend, D>(param.id, g);
                }
            }
        }
        let mut split = Split {
            of: &self.of,
            all: grads,
            parts: (0..self.counts.len())
                .map(|_| GradientsParams::new())
                .collect(),
        };
        model.visit(&mut split);
        split.parts
    }
}
