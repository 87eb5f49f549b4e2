//! What the loop trains: a backbone and a margin head as one Burn module, so one record,
//! one set of parameter ids and one gradient pass cover both.

use std::marker::PhantomData;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};

/// A backbone (`M`, any [`iresnet::Backbone`]) and a head (`H`, any
/// [`arcface_loss::MarginHead`]) trained together. Parameter paths start with `backbone.` or
/// `head.`, which is what [`ParamGroup`](crate::ParamGroup) prefixes select.
#[derive(Module, Debug)]
pub struct Model<B: Backend, M, H> {
    /// The embedding network.
    pub backbone: M,
    /// The margin head.
    pub head: H,
    _backend: PhantomData<B>,
}

impl<B: Backend, M: Module<B>, H: Module<B>> Model<B, M, H> {
    /// A model of `backbone` and `head`.
    pub fn new(backbone: M, head: H) -> Self {
        Self {
            backbone,
            head,
            _backend: PhantomData,
        }
    }
}

/// Merges the BatchNorm running statistics that replica threads updated into their shared value.
/// Burn's `RunningState` keeps each thread's update apart and merges them (their mean) only when
/// asked (`valid()`, `into_record()`); a replica thread of the next step, or a visitor reading the
/// value, would otherwise see the statistics of the last merge.
pub(crate) fn merge_running_statistics<
    B: burn::tensor::backend::AutodiffBackend,
    M: burn::module::AutodiffModule<B>,
>(
    module: &M,
) {
    let _ = module.valid();
}

/// Initialises every lazily initialised parameter now. Burn draws a parameter's initial value
/// at its first use, and a clone made before that draws its own: data-parallel replicas of a
/// fresh model would each start from different weights.
pub fn materialize<B: Backend, M: Module<B>>(module: &M) {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}
