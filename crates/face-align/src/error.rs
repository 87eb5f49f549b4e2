use thiserror::Error;

/// Why an alignment could not be computed.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum AlignError {
    /// Fewer than two point pairs to fit a transform to.
    #[error("need at least 2 point pairs, got {0}")]
    TooFewPoints(usize),
    /// The two point sets differ in length.
    #[error("{src} source points but {dst} destination points")]
    LengthMismatch {
        /// Source points.
        src: usize,
        /// Destination points.
        dst: usize,
    },
    /// A point is NaN or infinite.
    #[error("point {index} of the {which} is not finite ({x}, {y})")]
    NonFinite {
        /// Which set: the source or the destination points.
        which: &'static str,
        /// The point's position in its set.
        index: usize,
        /// Its x.
        x: f64,
        /// Its y.
        y: f64,
    },
    /// All points (nearly) coincide: no rotation or scale can be recovered.
    #[error("the {0} points coincide: the transform is undefined")]
    Degenerate(&'static str),
    /// The forward matrix cannot be inverted (zero scale).
    #[error("the affine matrix is singular (determinant {0:e})")]
    Singular(f64),
    /// A template size that is no multiple of 112 or 128.
    #[error("template size {0} is neither a multiple of 112 nor of 128")]
    TemplateSize(u32),
    /// An output of zero width or height.
    #[error("invalid output size {0}x{1}")]
    OutputSize(u32, u32),
}
