//! Points, boxes and 2x3 affine maps in image coordinates (x right, y down, pixel centres at
//! integers, as OpenCV and skimage use).

use serde::{Deserialize, Serialize};

use crate::error::AlignError;

/// A point in pixels (x right, y down).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Point {
    /// Horizontal, in pixels.
    pub x: f32,
    /// Vertical, in pixels.
    pub y: f32,
}

impl Point {
    /// The point `(x, y)`.
    pub const fn new(x: f32, y: f32) -> Self {
        Self { x, y }
    }

    /// Euclidean distance.
    pub fn distance(self, other: Point) -> f32 {
        ((self.x - other.x).powi(2) + (self.y - other.y).powi(2)).sqrt()
    }

    /// The point halfway to `other`.
    pub fn midpoint(self, other: Point) -> Point {
        Point::new((self.x + other.x) / 2.0, (self.y + other.y) / 2.0)
    }
}

impl From<[f32; 2]> for Point {
    fn from([x, y]: [f32; 2]) -> Self {
        Self { x, y }
    }
}

/// An axis-aligned box, corners `(x1, y1)` top-left and `(x2, y2)` bottom-right.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BBox {
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge.
    pub x2: f32,
    /// Bottom edge.
    pub y2: f32,
}

impl BBox {
    /// The box from `(x1, y1)` to `(x2, y2)`.
    pub const fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        Self { x1, y1, x2, y2 }
    }
    /// `x2 - x1`, or 0 for an inverted box.
    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }
    /// `y2 - y1`, or 0 for an inverted box.
    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }
    /// The shorter side: what "a face of at least N pixels" means here.
    pub fn min_side(&self) -> f32 {
        self.width().min(self.height())
    }
}

/// Five facial landmarks in insightface's order: left eye, right eye, nose tip, left and right
/// mouth corners ("left" as seen in the image).
pub type Landmarks = [Point; 5];

/// A 2x3 affine map `[x', y'] = [[a, b, c], [d, e, f]] * [x, y, 1]`, in f64.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Affine {
    /// Rows of the 2x3 matrix: `[x', y'] = m * [x, y, 1]`.
    pub m: [[f64; 3]; 2],
}

impl Affine {
    /// The transform that moves nothing.
    pub const IDENTITY: Affine = Affine {
        m: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
    };

    /// The transform with matrix `m`.
    pub fn new(m: [[f64; 3]; 2]) -> Self {
        Self { m }
    }

    /// Where `p` goes.
    pub fn apply(&self, p: Point) -> Point {
        let (x, y) = (p.x as f64, p.y as f64);
        let m = &self.m;
        Point::new(
            (m[0][0] * x + m[0][1] * y + m[0][2]) as f32,
            (m[1][0] * x + m[1][1] * y + m[1][2]) as f32,
        )
    }

    /// Determinant of the linear part (0: not invertible).
    pub fn determinant(&self) -> f64 {
        self.m[0][0] * self.m[1][1] - self.m[0][1] * self.m[1][0]
    }

    /// The inverse map, as `cv2.invertAffineTransform` computes it.
    pub fn inverse(&self) -> Result<Affine, AlignError> {
        let det = self.determinant();
        if det == 0.0 || !det.is_finite() {
            return Err(AlignError::Singular(det));
        }
        let [[a, b, c], [d, e, f]] = self.m;
        let inv = 1.0 / det;
        let (a2, b2, d2, e2) = (e * inv, -b * inv, -d * inv, a * inv);
        Ok(Affine::new([
            [a2, b2, -a2 * c - b2 * f],
            [d2, e2, -d2 * c - e2 * f],
        ]))
    }

    /// Uniform scale of a similarity (square root of the determinant's magnitude).
    pub fn scale(&self) -> f64 {
        self.determinant().abs().sqrt()
    }

    /// Rotation angle in radians of a similarity.
    pub fn rotation(&self) -> f64 {
        self.m[1][0].atan2(self.m[0][0])
    }
}
