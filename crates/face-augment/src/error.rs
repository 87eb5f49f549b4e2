use thiserror::Error;

/// Why a transform or pipeline could not run.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum AugmentError {
    /// An image without pixels (width, height).
    #[error("empty image ({0}x{1})")]
    EmptyImage(u32, u32),
    /// An image whose channels are not 3.
    #[error("expected 3 channels, got {0}")]
    Channels(usize),
    /// Tensor data of another length than its shape needs.
    #[error("tensor data holds {len} values, shape {shape:?} needs {expected}")]
    TensorShape {
        /// The shape asked for.
        shape: [usize; 3],
        /// Values given.
        len: usize,
        /// Values the shape needs.
        expected: usize,
    },
    /// A transform got the wrong kind of input (e.g. erasing before `ToTensor`).
    #[error("{transform} works on {expected}; put it {where_}")]
    Stage {
        /// The transform.
        transform: &'static str,
        /// What it works on.
        expected: &'static str,
        /// Where in the pipeline it belongs.
        where_: &'static str,
    },
    /// A transform parameter out of its range.
    #[error("invalid {transform} parameter {name} = {value}: {reason}")]
    Param {
        /// The transform.
        transform: &'static str,
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: String,
        /// The range it must be in.
        reason: &'static str,
    },
}

pub(crate) fn param(
    transform: &'static str,
    name: &'static str,
    value: impl std::fmt::Debug,
    reason: &'static str,
) -> AugmentError {
    AugmentError::Param {
        transform,
        name,
        value: format!("{value:?}"),
        reason,
    }
}
