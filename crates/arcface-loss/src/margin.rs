//! Margins: how the target class's cosine becomes its logit.
//!
//! Every margin here touches the **target** logit only; the other classes keep `s * cos(theta_j)`
//! exactly. (A widely copied ArcFace snippet applies `cos(theta + m)` to every class; that is a
//! different, wrong loss.) See `docs/losses.md` for the formulas, the boundary handling and when to
//! choose which.

use std::f64::consts::PI;

use burn::tensor::{backend::Backend, DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{invalid, LossError};

/// A margin on the target logit, applied to cosines in `[-1, 1]`.
pub trait Margin {
    /// The logit scale `s` every cosine is multiplied by.
    fn scale(&self) -> f64;

    /// The target logit before scaling, from the target cosines `t` (`[N, 1]`, already in
    /// `[-1, 1]`). Computed in `t`'s dtype, which the head makes at least f32.
    fn target_logit<B: Backend>(&self, t: Tensor<B, 2>) -> Tensor<B, 2>;

    /// Checks that the parameters are in the range where the formulas hold.
    fn validate(&self) -> Result<(), LossError>;
}

/// Which ArcFace formulation computes `cos(theta + m)` and its gradient.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArcFaceForm {
    /// insightface `arcface_torch`'s current form (the default, so training matches it): the
    /// forward value is `cos(min(theta + m, pi))` with `theta = acos(t)` clamped to `[1e-5, pi]`,
    /// and the gradient is passed straight through to the cosine
    /// (`t + detach(cos(theta + m) - t)`), so the target logit's gradient is `s` times the
    /// cosine's. No `acos` or square root is ever differentiated.
    #[default]
    StraightThrough,
    /// The paper's form, `cos(theta)cos(m) - sin(theta)sin(m)`, differentiated through. Where
    /// `theta + m` would pass `pi` (`cos(theta) <= cos(pi - m)`) it falls back to
    /// `cos(theta) - sin(pi - m) * m` so the logit stays monotonic. With `easy_margin` the margin
    /// is applied only where `cos(theta) > 0` (no fallback; the logit jumps up by `sin(m)` at
    /// `theta = pi / 2`, which is what makes hard samples "easy").
    Classic {
        /// Apply the margin only where `cos(theta) > 0` (insightface's `easy_margin`).
        #[serde(default)]
        easy_margin: bool,
    },
}

/// ArcFace (additive angular margin, Deng et al. 2019): target logit `s * cos(theta_y + m)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArcFace {
    /// `s`: the logits' scale (insightface: 64).
    pub scale: f64,
    /// `m`: the angular margin in radians (insightface: 0.5).
    pub margin: f64,
    /// How the margin behaves past `pi - m`.
    #[serde(default)]
    pub form: ArcFaceForm,
}

/// CosFace (large margin cosine loss, Wang et al. 2018): target logit `s * (cos(theta_y) - m)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosFace {
    /// `s`: the logits' scale.
    pub scale: f64,
    /// `m`: the cosine margin (CosFace's paper: 0.35).
    pub margin: f64,
}

/// insightface's combined margin: target logit `s * (psi(m1 * theta_y + m2) - m3)`, which covers
/// SphereFace (`m1`), ArcFace (`m2`) and CosFace (`m3`) at once.
///
/// `psi` is `cos` up to `pi` and SphereFace's monotonic extension beyond it,
/// `psi(a) = (-1)^k cos(a) - 2k` with `k = floor(a / pi)`, so the logit keeps falling as theta
/// grows for any `m1 >= 1` instead of turning back up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CombinedMargin {
    /// `s`: the logits' scale.
    pub scale: f64,
    /// `m1`: SphereFace's multiplicative angular margin (1 = off).
    pub m1: f64,
    /// `m2`: ArcFace's additive angular margin (0 = off).
    pub m2: f64,
    /// `m3`: CosFace's additive cosine margin (0 = off).
    pub m3: f64,
}

impl Default for ArcFace {
    /// `s = 64`, `m = 0.5`, insightface's straight-through form.
    fn default() -> Self {
        Self {
            scale: 64.0,
            margin: 0.5,
            form: ArcFaceForm::StraightThrough,
        }
    }
}

impl Default for CosFace {
    /// `s = 64`, `m = 0.4`.
    fn default() -> Self {
        Self {
            scale: 64.0,
            margin: 0.4,
        }
    }
}

impl Default for CombinedMargin {
    /// `s = 64`, `(m1, m2, m3) = (1, 0.5, 0)`: ArcFace through the combined formula.
    fn default() -> Self {
        Self {
            scale: 64.0,
            m1: 1.0,
            m2: 0.5,
            m3: 0.0,
        }
    }
}

/// Any of the margins, as written in a config file (`kind = "arc_face" | "cos_face" | "combined"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MarginConfig {
    /// ArcFace.
    ArcFace(ArcFace),
    /// CosFace.
    CosFace(CosFace),
    /// insightface's combined margin.
    Combined(CombinedMargin),
}

impl Default for MarginConfig {
    fn default() -> Self {
        Self::ArcFace(ArcFace::default())
    }
}

/// The largest cosine strictly below 1 (and above -1) in `dtype`, so `acos` has a finite gradient.
fn acos_safe_bound(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1.0 - f64::EPSILON / 2.0,
        _ => 1.0 - (f32::EPSILON / 2.0) as f64,
    }
}

fn check_scale(scale: f64) -> Result<(), LossError> {
    if !(scale.is_finite() && scale > 0.0) {
        return Err(invalid("scale", scale, "must be finite and > 0"));
    }
    Ok(())
}

fn check_angle(field: &'static str, m: f64) -> Result<(), LossError> {
    if !(m.is_finite() && (0.0..PI).contains(&m)) {
        return Err(invalid(field, m, "must be in [0, pi)"));
    }
    Ok(())
}

impl Margin for ArcFace {
    fn scale(&self) -> f64 {
        self.scale
    }

    fn target_logit<B: Backend>(&self, t: Tensor<B, 2>) -> Tensor<B, 2> {
        let m = self.margin;
        match self.form {
            ArcFaceForm::StraightThrough => {
                let t_value = t.clone().detach();
                let theta = t_value.clone().acos().clamp(1e-5, PI);
                let shifted = theta.add_scalar(m).clamp_max(PI).cos();
                // Value cos(theta + m), gradient that of t.
                t + (shifted - t_value)
            }
            ArcFaceForm::Classic { easy_margin } => {
                // sin(theta) = sqrt(1 - t^2); the floor keeps its gradient finite at t = +-1,
                // where the clamp passes no gradient at all.
                let sin = t
                    .clone()
                    .powi_scalar(2)
                    .neg()
                    .add_scalar(1.0)
                    .clamp_min(1e-12)
                    .sqrt();
                let phi = t.clone().mul_scalar(m.cos()) - sin.mul_scalar(m.sin());
                if easy_margin {
                    let outside = t.clone().lower_equal_elem(0.0);
                    phi.mask_where(outside, t)
                } else {
                    let threshold = (PI - m).cos();
                    let fallback = t.clone().sub_scalar((PI - m).sin() * m);
                    let outside = t.lower_equal_elem(threshold);
                    phi.mask_where(outside, fallback)
                }
            }
        }
    }

    fn validate(&self) -> Result<(), LossError> {
        check_scale(self.scale)?;
        check_angle("margin", self.margin)
    }
}

impl Margin for CosFace {
    fn scale(&self) -> f64 {
        self.scale
    }

    fn target_logit<B: Backend>(&self, t: Tensor<B, 2>) -> Tensor<B, 2> {
        t.sub_scalar(self.margin)
    }

    fn validate(&self) -> Result<(), LossError> {
        check_scale(self.scale)?;
        if !(self.margin.is_finite() && (0.0..=2.0).contains(&self.margin)) {
            return Err(invalid("margin", self.margin, "must be in [0, 2]"));
        }
        Ok(())
    }
}

impl Margin for CombinedMargin {
    fn scale(&self) -> f64 {
        self.scale
    }

    fn target_logit<B: Backend>(&self, t: Tensor<B, 2>) -> Tensor<B, 2> {
        let bound = acos_safe_bound(t.dtype());
        let theta = t.clamp(-bound, bound).acos();
        let angle = theta.mul_scalar(self.m1).add_scalar(self.m2);
        // k = floor(angle / pi) picks the SphereFace branch; it carries no gradient.
        let k = angle.clone().div_scalar(PI).floor().detach();
        let sign = k
            .clone()
            .remainder_scalar(2.0)
            .mul_scalar(-2.0)
            .add_scalar(1.0);
        (sign * angle.cos() - k.mul_scalar(2.0)).sub_scalar(self.m3)
    }

    fn validate(&self) -> Result<(), LossError> {
        check_scale(self.scale)?;
        if !(self.m1.is_finite() && (1.0..=16.0).contains(&self.m1)) {
            return Err(invalid("m1", self.m1, "must be in [1, 16]"));
        }
        check_angle("m2", self.m2)?;
        if !(self.m3.is_finite() && (0.0..=2.0).contains(&self.m3)) {
            return Err(invalid("m3", self.m3, "must be in [0, 2]"));
        }
        Ok(())
    }
}

impl Margin for MarginConfig {
    fn scale(&self) -> f64 {
        match self {
            Self::ArcFace(m) => m.scale(),
            Self::CosFace(m) => m.scale(),
            Self::Combined(m) => m.scale(),
        }
    }

    fn target_logit<B: Backend>(&self, t: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Self::ArcFace(m) => m.target_logit(t),
            Self::CosFace(m) => m.target_logit(t),
            Self::Combined(m) => m.target_logit(t),
        }
    }

    fn validate(&self) -> Result<(), LossError> {
        match self {
            Self::ArcFace(m) => m.validate(),
            Self::CosFace(m) => m.validate(),
            Self::Combined(m) => m.validate(),
        }
    }
}

impl From<ArcFace> for MarginConfig {
    fn from(m: ArcFace) -> Self {
        Self::ArcFace(m)
    }
}

impl From<CosFace> for MarginConfig {
    fn from(m: CosFace) -> Self {
        Self::CosFace(m)
    }
}

impl From<CombinedMargin> for MarginConfig {
    fn from(m: CombinedMargin) -> Self {
        Self::Combined(m)
    }
}
