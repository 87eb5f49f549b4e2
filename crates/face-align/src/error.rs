use thiserror::Error;

/// Why an alignment could not be computed.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum AlignError {
    #[error("need at least 2 point pairs, got {0}")]
    TooFewPoints(usize),
    #[error("{src} source points but {dst} destination points")]
    LengthMismatch { src: usize, dst: usize },
    #[error("point {index} of the {which} is not finite ({x}, {y})")]
    NonFinite {
        which: &'static str,
        index: usize,
        x: f64,
        y: f64,
    },
    /// All points (nearly) coincide: no rotation or scale can be recovered.
    #[error("the {0} points coincide: the transform is undefined")]
    Degenerate(&'static str),
    /// The forward matrix cannot be inverted (zero scale).
    #[error("the affine matrix is singular (determinant {0:e})")]
    Singular(f64),
    #[error("template size {0} is neither a multiple of 112 nor of 128")]
    TemplateSize(u32),
    #[error("invalid output size {0}x{1}")]
    OutputSize(u32, u32),
}
