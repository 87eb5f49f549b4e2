use thiserror::Error;

/// Why a head could not be built or could not score a batch.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum LossError {
    /// A configuration value is outside the range where the formulas hold.
    #[error("invalid head config: {field} = {value} ({reason})")]
    InvalidConfig {
        /// The setting's name.
        field: &'static str,
        /// The value given.
        value: String,
        /// The range it must be in.
        reason: &'static str,
    },
    /// A label is not one of the head's classes.
    #[error("label {label} at batch position {index} is out of range for {num_classes} classes")]
    LabelOutOfRange {
        /// The label.
        label: usize,
        /// Its position in the batch.
        index: usize,
        /// The head's number of classes.
        num_classes: usize,
    },
    /// Embeddings, labels or centres disagree in shape.
    #[error("shape mismatch: {0}")]
    Shape(String),
}

pub(crate) fn invalid(
    field: &'static str,
    value: impl ToString,
    reason: &'static str,
) -> LossError {
    LossError::InvalidConfig {
        field,
        value: value.to_string(),
        reason,
    }
}
