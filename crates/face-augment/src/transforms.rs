//! The random transforms: torchvision's parameter draws over the functional cores, configured
//! from serde (so a trainer's TOML can list them).

use rand::{rngs::StdRng, seq::SliceRandom, Rng};
use serde::{Deserialize, Serialize};

use crate::{
    error::{param, AugmentError},
    functional as f,
    sample::Sample,
};

/// Where in a pipeline a transform belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// On 8-bit RGB images, before `ToTensor`.
    Image,
    /// `ToTensor` itself.
    ToTensor,
    /// On f32 CHW tensors, after `ToTensor`.
    Tensor,
}

/// One step of a pipeline. The RNG is the sample's own (see `Pipeline::run`), so a transform
/// must draw all its randomness from it.
pub trait Transform: Send + Sync + std::fmt::Debug {
    /// The name errors and configs use.
    fn name(&self) -> &'static str;
    /// Whether it works on images or on tensors.
    fn stage(&self) -> Stage;
    /// Transforms one sample, drawing randomness from `rng` only.
    fn apply(&self, sample: Sample, rng: &mut StdRng) -> Result<Sample, AugmentError>;
}

/// What RandomErasing writes into the box.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EraseValue {
    /// A constant (torchvision's `value=0` is `Constant(0.0)`).
    Constant(f32),
    /// Independent standard-normal values (torchvision's `value="random"`).
    Random,
}

/// Every built-in transform, as written in a config (`kind = "horizontal_flip"`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformConfig {
    /// `RandomHorizontalFlip(p)`.
    HorizontalFlip {
        /// Probability.
        p: f64,
    },
    /// `RandomRotation((-degrees, degrees))`, bilinear, fill 0.
    Rotation {
        /// The largest turn either way, 0 to 180.
        degrees: f64,
    },
    /// `ColorJitter(brightness, contrast, saturation, hue)`: factors from `[max(0, 1 - x), 1 + x]`
    /// (hue from `[-hue, hue]`), applied in a random order; 0 leaves one out.
    ColorJitter {
        /// Brightness factor range `x`.
        brightness: f64,
        /// Contrast factor range `x`.
        contrast: f64,
        /// Saturation factor range `x`.
        saturation: f64,
        /// Hue shift range, in turns (at most 0.5).
        #[serde(default)]
        hue: f64,
    },
    /// insightface: with probability `p`, down to a random side in `[min_size, max_size]` and
    /// back up.
    DownUpResize {
        /// Probability.
        p: f64,
        /// Smallest intermediate side.
        min_size: u32,
        /// Largest intermediate side.
        max_size: u32,
    },
    /// With probability `p`, a Gaussian blur with sigma uniform in `[sigma_min, sigma_max]`.
    GaussianBlur {
        /// Probability.
        p: f64,
        /// Smallest sigma.
        sigma_min: f64,
        /// Largest sigma.
        sigma_max: f64,
    },
    /// `RandomGrayscale(p)`.
    Greyscale {
        /// Probability.
        p: f64,
    },
    /// With probability `p`, hue turned by up to `hue` turns, saturation and value scaled by up
    /// to `1 +- saturation`, `1 +- value`.
    HsvShift {
        /// Probability.
        p: f64,
        /// Hue turn, at most.
        hue: f64,
        /// Saturation scale range.
        saturation: f64,
        /// Value scale range.
        value: f64,
    },
    /// `ToTensor`: CHW f32 in [0, 1].
    ToTensor,
    /// `Normalize(mean, std)`.
    Normalize {
        /// Subtracted per channel.
        mean: [f32; 3],
        /// Divided by per channel.
        std: [f32; 3],
    },
    /// `RandomErasing(p, scale, ratio, value)`, on the normalized tensor.
    RandomErasing {
        /// Probability.
        p: f64,
        /// Erased area as a share of the image, `(min, max)`.
        scale: (f64, f64),
        /// Aspect ratio of the erased box, `(min, max)`.
        ratio: (f64, f64),
        /// What the box is filled with.
        value: EraseValue,
    },
}

impl TransformConfig {
    /// ImageNet's mean and standard deviation.
    pub fn imagenet_normalize() -> Self {
        Self::Normalize {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    /// insightface's `(x / 255 - 0.5) / 0.5`, i.e. `(x - 127.5) / 127.5`.
    pub fn insightface_normalize() -> Self {
        Self::Normalize {
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    /// Checks every parameter against the range where the transform is defined.
    pub fn validate(&self) -> Result<(), AugmentError> {
        let name = self.name();
        let prob = |p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(param(name, "p", p, "must be in [0, 1]"))
            }
        };
        match *self {
            Self::HorizontalFlip { p } | Self::Greyscale { p } => prob(p),
            Self::Rotation { degrees } if !(0.0..=180.0).contains(&degrees) => {
                Err(param(name, "degrees", degrees, "must be in [0, 180]"))
            }
            Self::Rotation { .. } | Self::ToTensor => Ok(()),
            Self::ColorJitter {
                brightness,
                contrast,
                saturation,
                hue,
            } => {
                for (n, v) in [
                    ("brightness", brightness),
                    ("contrast", contrast),
                    ("saturation", saturation),
                ] {
                    if !(v >= 0.0 && v.is_finite()) {
                        return Err(param(name, n, v, "must be >= 0"));
                    }
                }
                if !(0.0..=0.5).contains(&hue) {
                    return Err(param(name, "hue", hue, "must be in [0, 0.5]"));
                }
                Ok(())
            }
            Self::DownUpResize {
                p,
                min_size,
                max_size,
            } => {
                prob(p)?;
                if min_size == 0 || min_size > max_size {
                    return Err(param(
                        name,
                        "min_size..max_size",
                        (min_size, max_size),
                        "need 0 < min <= max",
                    ));
                }
                Ok(())
            }
            Self::GaussianBlur {
                p,
                sigma_min,
                sigma_max,
            } => {
                prob(p)?;
                if !(sigma_min > 0.0 && sigma_min <= sigma_max && sigma_max.is_finite()) {
                    return Err(param(
                        name,
                        "sigma",
                        (sigma_min, sigma_max),
                        "need 0 < min <= max",
                    ));
                }
                Ok(())
            }
            Self::HsvShift {
                p,
                hue,
                saturation,
                value,
            } => {
                prob(p)?;
                if !(0.0..=0.5).contains(&hue)
                    || !(0.0..=1.0).contains(&saturation)
                    || !(0.0..=1.0).contains(&value)
                {
                    return Err(param(
                        name,
                        "hue/saturation/value",
                        (hue, saturation, value),
                        "need hue in [0, 0.5], others in [0, 1]",
                    ));
                }
                Ok(())
            }
            Self::Normalize { std, mean } => {
                if std.iter().any(|s| !(*s > 0.0 && s.is_finite()))
                    || mean.iter().any(|m| !m.is_finite())
                {
                    return Err(param(
                        name,
                        "mean/std",
                        (mean, std),
                        "std must be > 0, both finite",
                    ));
                }
                Ok(())
            }
            Self::RandomErasing {
                p, scale, ratio, ..
            } => {
                prob(p)?;
                if !(scale.0 > 0.0 && scale.0 <= scale.1 && scale.1 <= 1.0) {
                    return Err(param(name, "scale", scale, "need 0 < min <= max <= 1"));
                }
                if !(ratio.0 > 0.0 && ratio.0 <= ratio.1 && ratio.1.is_finite()) {
                    return Err(param(name, "ratio", ratio, "need 0 < min <= max"));
                }
                Ok(())
            }
        }
    }
}

/// `torch.rand(1) < p`.
fn happens(rng: &mut StdRng, p: f64) -> bool {
    rng.random::<f64>() < p
}

fn uniform(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

/// Standard normal from two uniforms (Box-Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let v: f64 = rng.random();
    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
}

/// torchvision's `RandomErasing.get_params`: up to 10 tries for a box of the drawn area and
/// aspect ratio that fits; `None` when none did (the tensor is left as it is).
pub fn erasing_box(
    rng: &mut StdRng,
    height: usize,
    width: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
) -> Option<(usize, usize, usize, usize)> {
    let area = (height * width) as f64;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let erase_area = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, log_lo, log_hi).exp();
        let h = (erase_area * aspect).sqrt().round() as usize;
        let w = (erase_area / aspect).sqrt().round() as usize;
        if !(h < height && w < width) {
            continue;
        }
        let i = rng.random_range(0..=height - h);
        let j = rng.random_range(0..=width - w);
        return Some((i, j, h, w));
    }
    None
}

/// The random choices one application of a transform made (torchvision's `get_params`), so
/// they can be inspected, logged or replayed with [`TransformConfig::apply_drawn`].
#[derive(Debug, Clone, PartialEq)]
pub enum Drawn {
    /// Whether a probabilistic transform fires (flip, greyscale).
    Fires(bool),
    /// Rotation angle in degrees.
    Angle(f64),
    /// Colour jitter: the order of (brightness, contrast, saturation, hue) and their factors
    /// (`None`: that adjustment is off).
    Jitter {
        /// The order the four adjustments run in.
        order: [usize; 4],
        /// Brightness factor.
        brightness: Option<f64>,
        /// Contrast factor.
        contrast: Option<f64>,
        /// Saturation factor.
        saturation: Option<f64>,
        /// Hue shift.
        hue: Option<f64>,
    },
    /// Down-up resize to this side, if it fires.
    Resize(Option<u32>),
    /// Blur sigma, if it fires.
    Blur(Option<f64>),
    /// HSV deltas, if it fires.
    Hsv(Option<[f64; 3]>),
    /// Erasing box `(i, j, h, w)`, if it fires and a box fits.
    Erase(Option<(usize, usize, usize, usize)>),
    /// Deterministic transforms draw nothing.
    Nothing,
}

impl TransformConfig {
    /// Draws this application's random parameters for an image of `height` x `width`, in
    /// torchvision's order of draws.
    pub fn draw(&self, rng: &mut StdRng, height: usize, width: usize) -> Drawn {
        match *self {
            Self::HorizontalFlip { p } | Self::Greyscale { p } => Drawn::Fires(happens(rng, p)),
            Self::Rotation { degrees } => Drawn::Angle(uniform(rng, -degrees, degrees)),
            Self::ColorJitter {
                brightness,
                contrast,
                saturation,
                hue,
            } => {
                let mut order = [0usize, 1, 2, 3];
                order.shuffle(rng);
                let mut factor =
                    |x: f64| (x > 0.0).then(|| uniform(rng, (1.0 - x).max(0.0), 1.0 + x));
                let (b, c, s) = (factor(brightness), factor(contrast), factor(saturation));
                let h = (hue > 0.0).then(|| uniform(rng, -hue, hue));
                Drawn::Jitter {
                    order,
                    brightness: b,
                    contrast: c,
                    saturation: s,
                    hue: h,
                }
            }
            Self::DownUpResize {
                p,
                min_size,
                max_size,
            } => Drawn::Resize(happens(rng, p).then(|| rng.random_range(min_size..=max_size))),
            Self::GaussianBlur {
                p,
                sigma_min,
                sigma_max,
            } => Drawn::Blur(happens(rng, p).then(|| uniform(rng, sigma_min, sigma_max))),
            Self::HsvShift {
                p,
                hue,
                saturation,
                value,
            } => Drawn::Hsv(happens(rng, p).then(|| {
                [
                    uniform(rng, -hue, hue),
                    uniform(rng, -saturation, saturation),
                    uniform(rng, -value, value),
                ]
            })),
            Self::RandomErasing {
                p, scale, ratio, ..
            } => Drawn::Erase(if happens(rng, p) {
                erasing_box(rng, height, width, scale, ratio)
            } else {
                None
            }),
            Self::ToTensor | Self::Normalize { .. } => Drawn::Nothing,
        }
    }

    /// Applies the transform with parameters already drawn. `rng` is used only for values
    /// drawn per pixel (random erasing's noise).
    pub fn apply_drawn(
        &self,
        sample: Sample,
        drawn: &Drawn,
        rng: &mut StdRng,
    ) -> Result<Sample, AugmentError> {
        let name = self.name();
        match (self, drawn) {
            (Self::ToTensor, _) => Ok(Sample::Tensor(f::to_tensor(&sample.into_image(name)?))),
            (Self::Normalize { mean, std }, _) => {
                let mut t = sample.into_tensor(name)?;
                f::normalize(&mut t, *mean, *std);
                Ok(Sample::Tensor(t))
            }
            (Self::RandomErasing { value, .. }, Drawn::Erase(area)) => {
                let mut t = sample.into_tensor(name)?;
                if let Some((i, j, h, w)) = *area {
                    match *value {
                        EraseValue::Constant(v) => f::erase(&mut t, i, j, h, w, || v),
                        EraseValue::Random => f::erase(&mut t, i, j, h, w, || normal(rng)),
                    }
                }
                Ok(Sample::Tensor(t))
            }
            _ => {
                let img = sample.into_image(name)?;
                let out = match (self, drawn) {
                    (Self::HorizontalFlip { .. }, Drawn::Fires(true)) => f::hflip(&img),
                    (Self::Greyscale { .. }, Drawn::Fires(true)) => f::greyscale(&img),
                    (Self::Rotation { .. }, Drawn::Angle(a)) => f::rotate(&img, *a),
                    (
                        Self::ColorJitter { .. },
                        Drawn::Jitter {
                            order,
                            brightness,
                            contrast,
                            saturation,
                            hue,
                        },
                    ) => {
                        let mut img = img;
                        for step in order {
                            img = match (step, brightness, contrast, saturation, hue) {
                                (0, Some(b), ..) => f::adjust_brightness(&img, *b),
                                (1, _, Some(c), ..) => f::adjust_contrast(&img, *c),
                                (2, _, _, Some(s), _) => f::adjust_saturation(&img, *s),
                                (3, .., Some(h)) => f::adjust_hue(&img, *h as f32),
                                _ => img,
                            };
                        }
                        img
                    }
                    (Self::DownUpResize { .. }, Drawn::Resize(Some(size))) => {
                        f::down_up(&img, *size)
                    }
                    (Self::GaussianBlur { .. }, Drawn::Blur(Some(sigma))) => {
                        f::gaussian_blur(&img, *sigma as f32)
                    }
                    (Self::HsvShift { .. }, Drawn::Hsv(Some([h, s, v]))) => {
                        f::hsv_shift(&img, *h as f32, *s as f32, *v as f32)
                    }
                    _ => img,
                };
                Ok(Sample::Image(out))
            }
        }
    }
}

impl Transform for TransformConfig {
    fn name(&self) -> &'static str {
        match self {
            Self::HorizontalFlip { .. } => "HorizontalFlip",
            Self::Rotation { .. } => "Rotation",
            Self::ColorJitter { .. } => "ColorJitter",
            Self::DownUpResize { .. } => "DownUpResize",
            Self::GaussianBlur { .. } => "GaussianBlur",
            Self::Greyscale { .. } => "Greyscale",
            Self::HsvShift { .. } => "HsvShift",
            Self::ToTensor => "ToTensor",
            Self::Normalize { .. } => "Normalize",
            Self::RandomErasing { .. } => "RandomErasing",
        }
    }

    fn stage(&self) -> Stage {
        match self {
            Self::ToTensor => Stage::ToTensor,
            Self::Normalize { .. } | Self::RandomErasing { .. } => Stage::Tensor,
            _ => Stage::Image,
        }
    }

    fn apply(&self, sample: Sample, rng: &mut StdRng) -> Result<Sample, AugmentError> {
        let (h, w) = match &sample {
            Sample::Image(img) => (img.height() as usize, img.width() as usize),
            Sample::Tensor(t) => (t.height, t.width),
        };
        let drawn = self.draw(rng, h, w);
        self.apply_drawn(sample, &drawn, rng)
    }
}
