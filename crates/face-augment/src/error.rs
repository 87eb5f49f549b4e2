use thiserror::Error;

/// Why a transform or pipeline could not run.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum AugmentError {
    #[error("empty image ({0}x{1})")]
    EmptyImage(u32, u32),
    #[error("expected 3 channels, got {0}")]
    Channels(usize),
    #[error("tensor data holds {len} values, shape {shape:?} needs {expected}")]
    TensorShape {
        shape: [usize; 3],
        len: usize,
        expected: usize,
    },
    /// A transform got the wrong kind of input (e.g. erasing before `ToTensor`).
    #[error("{transform} works on {expected}; put it {where_}")]
    Stage {
        transform: &'static str,
        expected: &'static str,
        where_: &'static str,
    },
    #[error("invalid {transform} parameter {name} = {value}: {reason}")]
    Param {
        transform: &'static str,
        name: &'static str,
        value: String,
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
