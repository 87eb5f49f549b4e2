//! Synthetic identities: a procedural renderer of face-like 112x112 images, the project's
//! built-in dataset.
//!
//! Each identity is a fixed random draw of geometry and appearance (head shape, skin tone and
//! texture, hair shape and colour, eye size, spacing and colour, brows, nose, mouth, facial
//! hair, glasses); each image of it adds nuisance (pose: in-plane rotation, scale, shift and a
//! yaw-like shift of the inner features; lighting direction and strength; colour temperature;
//! expression; background; occlusion; blur; noise; JPEG artefacts). Everything is a pure function
//! of (seed, identity, image index). Landmarks are known, so faces can also be rendered
//! unaligned on a larger canvas. Raw pixels are a poor verifier on it (measured in the tests),
//! so learning it is a real problem.
//!
//! The same face and moment can also be seen by a near-infrared camera with its own illuminator
//! and by a structured-light depth sensor (`modalities`), and images can be taken at night
//! (`night`): the colour camera then sees little light and much noise, the other two are
//! unchanged (docs/multimodal.md).

mod scene;

use std::path::PathBuf;

use image::{GrayImage, Luma, Rgb, RgbImage};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub use scene::Identity;
use scene::{height, mix, shade, shade_nir, Nuisance, Sensors};

use crate::{
    dataset::{FaceDataset, FaceSample},
    error::{DataError, Result},
    modality::Modality,
};

/// Identities of the held-out split start here, so they never coincide with training ones.
const HELD_OUT_BASE: u64 = 1 << 40;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Training identities.
    pub identities: usize,
    /// Images per identity.
    pub per_identity: usize,
    /// Identities kept apart for evaluation (never in the training split).
    pub held_out: usize,
    /// Side of the (aligned) image.
    pub size: u32,
    /// Seed: the same seed draws the same identities and images.
    pub seed: u64,
    /// Scales every nuisance (pose, lighting, occlusion, blur, noise); 1 is the default mix.
    pub nuisance: f32,
    /// The first training identity's number: `identities` people from here on. Sets of one seed
    /// with disjoint ranges hold different people (continual learning adds them in turns).
    pub first_identity: u64,
    /// The images rendered per sample: RGB always, near-infrared and depth when listed.
    pub modalities: Vec<Modality>,
    /// Share of images taken at night, 0 to 1 (each image's draw decides; 1 renders every image
    /// at night, 0 none).
    pub night: f32,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            identities: 1000,
            per_identity: 20,
            held_out: 200,
            size: 112,
            seed: 0,
            nuisance: 1.0,
            first_identity: 0,
            modalities: vec![Modality::Rgb],
            night: 0.0,
        }
    }
}

impl SyntheticConfig {
    /// Refuses counts and sizes out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| DataError::Config {
            what: "synthetic dataset",
            reason,
        };
        if self.identities == 0 || self.per_identity == 0 {
            return Err(bad("identities and per_identity must be > 0".into()));
        }
        if self.size < 32 || self.size > 1024 {
            return Err(bad(format!("size {} is outside 32..=1024", self.size)));
        }
        if !(0.0..=1.0).contains(&self.night) {
            return Err(bad(format!("night {} is outside [0, 1]", self.night)));
        }
        crate::modality::check_list(&self.modalities)?;
        if !(0.0..=3.0).contains(&self.nuisance) {
            return Err(bad(format!("nuisance {} is outside [0, 3]", self.nuisance)));
        }
        if self.first_identity.saturating_add(self.identities as u64) > HELD_OUT_BASE {
            return Err(bad(format!(
                "first_identity {} + identities reaches the held-out identities (from {HELD_OUT_BASE})",
                self.first_identity
            )));
        }
        Ok(())
    }
}

/// A rendered face and where its landmarks landed.
#[derive(Debug, Clone)]
pub struct RenderedFace {
    /// The rendered face (the colour camera).
    pub image: RgbImage,
    /// Left eye, right eye, nose tip, left and right mouth corner, in image pixels.
    pub landmarks: [[f32; 2]; 5],
    /// The near-infrared image, when the config lists it.
    pub nir: Option<GrayImage>,
    /// The depth map (nearer is brighter, 0 where the sensor saw nothing), when listed.
    pub depth: Option<GrayImage>,
    /// Whether the image was taken at night.
    pub night: bool,
}

/// Where the face sits in the image: template point <-> pixel.
struct Frame {
    side: u32,
    origin: [f32; 2],
    unit: f32,
    cos: f32,
    sin: f32,
    centre: [f32; 2],
}

impl Frame {
    fn new(config: &SyntheticConfig, n: &Nuisance, canvas: Option<u32>) -> Self {
        let unit = config.size as f32 / 112.0;
        let side = canvas.unwrap_or(config.size).max(config.size);
        let mut place = StdRng::seed_from_u64(n.seed ^ 0xc0ffee);
        let origin = if side > config.size {
            [
                place.random_range(0.0..(side - config.size) as f32),
                place.random_range(0.0..(side - config.size) as f32),
            ]
        } else {
            [0.0, 0.0]
        };
        // Template point -> image: rotate, scale, shift about the face centre (56, 60).
        Self {
            side,
            origin,
            unit,
            cos: n.angle.cos() * n.scale * unit,
            sin: n.angle.sin() * n.scale * unit,
            centre: [
                origin[0] + (56.0 + n.shift[0]) * unit,
                origin[1] + (60.0 + n.shift[1]) * unit,
            ],
        }
    }

    fn to_image(&self, p: [f32; 2]) -> [f32; 2] {
        [
            self.cos * p[0] - self.sin * p[1] + self.centre[0],
            self.sin * p[0] + self.cos * p[1] + self.centre[1],
        ]
    }

    /// The template point under pixel (x, y).
    fn to_template(&self, x: u32, y: u32) -> [f32; 2] {
        let det = self.cos * self.cos + self.sin * self.sin;
        let (dx, dy) = (
            x as f32 + 0.5 - self.centre[0],
            y as f32 + 0.5 - self.centre[1],
        );
        [
            (self.cos * dx + self.sin * dy) / det,
            (-self.sin * dx + self.cos * dy) / det,
        ]
    }

    /// Whether pixel (x, y) is behind the image's occluder.
    fn occluded(&self, n: &Nuisance, x: u32, y: u32) -> bool {
        n.occlusion.is_some_and(|(r, _)| {
            let (ox, oy) = (
                (x as f32 - self.origin[0]) / self.unit,
                (y as f32 - self.origin[1]) / self.unit,
            );
            ox >= r[0] && ox < r[0] + r[2] && oy >= r[1] && oy < r[1] + r[3]
        })
    }
}

/// Renders identity `id`'s image `index`. `canvas` > `size` places the face (at `size` scale)
/// at a random spot of a larger background, unaligned, with its landmarks.
pub fn render(config: &SyntheticConfig, id: u64, index: u64, canvas: Option<u32>) -> RenderedFace {
    let identity = Identity::draw(config.seed, id);
    let n = Nuisance::draw(config.seed, id, index, config.nuisance);
    let sensors = Sensors::draw(config.seed, id, index);
    let frame = Frame::new(config, &n, canvas);
    let night = sensors.night_draw < config.night;
    let wants = |m| config.modalities.contains(&m);
    RenderedFace {
        image: render_rgb(&identity, &n, &frame, night.then_some(&sensors)),
        landmarks: identity.landmarks(n.yaw).map(|p| frame.to_image(p)),
        nir: wants(Modality::Nir).then(|| render_nir(&identity, &n, &sensors, &frame)),
        depth: wants(Modality::Depth).then(|| render_depth(&identity, &n, &sensors, &frame)),
        night,
    }
}

/// The colour camera's image; at night (`Some(sensors)`) the scene's light is dimmed and tinted,
/// read noise added and the auto-gain brings the mean back up, amplifying the noise with it.
fn render_rgb(
    identity: &Identity,
    n: &Nuisance,
    frame: &Frame,
    night: Option<&Sensors>,
) -> RgbImage {
    let side = frame.side;
    let mut img = RgbImage::new(side, side);
    let mut noise_rng = StdRng::seed_from_u64(n.seed);
    let mut night_rng = StdRng::seed_from_u64(night.map_or(0, |s| s.seed));
    let gain = night.map_or(1.0, |s| s.target / (0.45 * s.dim));
    for (x, y, px) in img.enumerate_pixels_mut() {
        let t = ((y as f32 + 0.5) / side as f32).clamp(0.0, 1.0);
        let mut c = mix(n.background[0], n.background[1], t);
        if let Some(face) = shade(identity, n, frame.to_template(x, y)) {
            c = face;
        }
        if let (true, Some((_, colour))) = (frame.occluded(n, x, y), n.occlusion) {
            c = colour;
        }
        let grain: f32 = if n.noise > 0.0 {
            noise_rng.random_range(-1.0..1.0) * n.noise
        } else {
            0.0
        };
        *px = Rgb(std::array::from_fn(|i| {
            let mut v = (c[i] * n.temperature[i] + grain).clamp(0.0, 1.0);
            if let Some(s) = night {
                let read: f32 =
                    night_rng.random_range(-1.0f32..1.0) + night_rng.random_range(-1.0f32..1.0);
                // The sensor digitises the dark signal; the gain then spreads its few levels.
                let dark = ((v * s.dim * s.tint[i] + read * s.read_noise).max(0.0) * 255.0).round();
                v = (dark / 255.0 * gain).clamp(0.0, 1.0);
            }
            (v * 255.0 + 0.5) as u8
        }));
    }
    for _ in 0..n.blur {
        img = image::imageops::blur(&img, 0.8);
    }
    if let Some(quality) = n.jpeg {
        let mut bytes = Vec::new();
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality);
        if img.write_with_encoder(encoder).is_ok() {
            if let Ok(decoded) = image::load_from_memory(&bytes) {
                img = decoded.to_rgb8();
            }
        }
    }
    img
}

/// The near-infrared camera's image: the face under the camera's illuminator, a dark
/// background it barely reaches, the occluder, its own noise and the scene's blur.
fn render_nir(identity: &Identity, n: &Nuisance, sensors: &Sensors, frame: &Frame) -> GrayImage {
    let mut img = GrayImage::new(frame.side, frame.side);
    let mut rng = StdRng::seed_from_u64(sensors.seed ^ 0x1e);
    let occluder = n
        .occlusion
        .map_or(0.0, |(_, c)| 0.2 + 0.5 * (c[0] + c[1] + c[2]) / 3.0);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let mut v =
            shade_nir(identity, n, frame.to_template(x, y)).unwrap_or(sensors.nir_background);
        if frame.occluded(n, x, y) {
            v = occluder;
        }
        v += rng.random_range(-1.0f32..1.0) * sensors.nir_noise;
        *px = Luma([(v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8]);
    }
    for _ in 0..n.blur {
        img = image::imageops::blur(&img, 0.8);
    }
    img
}

/// The depth sensor's map: height above the background plane, scaled to grey levels (nearer is
/// brighter), quantised, noisy, and with the holes structured light leaves: no return where the
/// surface turns away steeply (the outline), on much of the hair, in scattered speckles and on
/// most of the far background (0 = no reading).
fn render_depth(identity: &Identity, n: &Nuisance, sensors: &Sensors, frame: &Frame) -> GrayImage {
    let side = frame.side as usize;
    let scale = n.scale * frame.unit;
    let mut z = vec![f32::NAN; side * side];
    for y in 0..side {
        for x in 0..side {
            let (px, py) = (x as u32, y as u32);
            if frame.occluded(n, px, py) {
                z[y * side + x] = 70.0; // a hand or object held in front of the face
            } else if let Some(h) = height(identity, n, frame.to_template(px, py)) {
                z[y * side + x] = h;
            }
        }
    }
    let mut rng = StdRng::seed_from_u64(sensors.seed ^ 0xde97);
    let mut img = GrayImage::new(frame.side, frame.side);
    for y in 0..side {
        for x in 0..side {
            let h = z[y * side + x];
            let value = if h.is_nan() {
                // The far background: mostly out of range.
                if rng.random_bool(0.7) {
                    0.0
                } else {
                    12.0 + rng.random_range(0.0..6.0)
                }
            } else {
                let slope = slope(&z, side, x, y) / scale;
                let hair = scene::hair_holes(identity, frame.to_template(x as u32, y as u32));
                if slope > 3.5 || hair || rng.random_bool(0.015) {
                    0.0
                } else {
                    let v = 60.0 + (h + sensors.depth_offset) * 2.4 * n.scale;
                    (v + rng.random_range(-1.0f32..1.0) * sensors.depth_noise).clamp(1.0, 255.0)
                }
            };
            // The sensor's depth steps: 2 grey levels.
            let q = if value == 0.0 {
                0
            } else {
                ((value / 2.0).round() * 2.0).clamp(2.0, 254.0) as u8
            };
            img.put_pixel(x as u32, y as u32, Luma([q]));
        }
    }
    img
}

/// The steepest height difference to a neighbour (a missing neighbour is a cliff).
fn slope(z: &[f32], side: usize, x: usize, y: usize) -> f32 {
    let h = z[y * side + x];
    let mut worst = 0.0f32;
    for (dx, dy) in [(1i64, 0i64), (-1, 0), (0, 1), (0, -1)] {
        let (nx, ny) = (x as i64 + dx, y as i64 + dy);
        if nx < 0 || ny < 0 || nx >= side as i64 || ny >= side as i64 {
            continue;
        }
        let other = z[ny as usize * side + nx as usize];
        worst = worst.max(if other.is_nan() {
            f32::INFINITY
        } else {
            (other - h).abs()
        });
    }
    worst
}

/// A split of the synthetic set as a dataset: sample `i` is image `first_image + i % per` of
/// identity `first_id + i / per`.
#[derive(Debug, Clone)]
pub struct SyntheticFaces {
    config: SyntheticConfig,
    first_id: u64,
    identities: usize,
    first_image: u64,
    per: usize,
}

impl SyntheticFaces {
    /// The training split (`config.identities` identities from `config.first_identity`).
    pub fn train(config: SyntheticConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            identities: config.identities,
            first_id: config.first_identity,
            first_image: 0,
            per: config.per_identity,
            config,
        })
    }

    /// `images` further images of each training identity, never rendered for training: how
    /// well the trained people are still recognised (continual learning's old and new identities).
    pub fn unseen_images(config: SyntheticConfig, images: usize) -> Result<Self> {
        config.validate()?;
        if images == 0 {
            return Err(DataError::Config {
                what: "synthetic dataset",
                reason: "0 unseen images per identity".into(),
            });
        }
        Ok(Self {
            identities: config.identities,
            first_id: config.first_identity,
            first_image: config.per_identity as u64,
            per: images,
            config,
        })
    }

    /// The held-out split (`config.held_out` identities never seen in training).
    pub fn held_out(config: SyntheticConfig) -> Result<Self> {
        config.validate()?;
        if config.held_out == 0 {
            return Err(DataError::Config {
                what: "synthetic dataset",
                reason: "held_out is 0".into(),
            });
        }
        Ok(Self {
            identities: config.held_out,
            first_id: HELD_OUT_BASE,
            first_image: 0,
            per: config.per_identity,
            config,
        })
    }

    /// The settings it renders with.
    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }

    /// Images per identity in this split.
    pub fn per_identity(&self) -> usize {
        self.per
    }

    /// Renders sample `index` with its landmarks (optionally unaligned on a `canvas`).
    pub fn render(&self, index: usize, canvas: Option<u32>) -> Result<RenderedFace> {
        self.check_index(index)?;
        Ok(render(
            &self.config,
            self.first_id + (index / self.per) as u64,
            self.first_image + (index % self.per) as u64,
            canvas,
        ))
    }
}

impl FaceDataset for SyntheticFaces {
    fn len(&self) -> usize {
        self.identities * self.per
    }

    fn num_identities(&self) -> usize {
        self.identities
    }

    fn label(&self, index: usize) -> Result<usize> {
        self.check_index(index)?;
        Ok(index / self.per)
    }

    fn get(&self, index: usize) -> Result<FaceSample> {
        let face = self.render(index, None)?;
        Ok(FaceSample {
            image: face.image,
            label: self.label(index)?,
            nir: face.nir,
            depth: face.depth,
        })
    }

    fn source(&self) -> PathBuf {
        PathBuf::from(format!("synthetic:seed={}", self.config.seed))
    }

    /// `synthetic-<seed>-<identity number>`: the same person in every split and range of a seed.
    fn identity_name(&self, label: usize) -> Option<String> {
        (label < self.identities).then(|| {
            format!(
                "synthetic-{}-{}",
                self.config.seed,
                self.first_id + label as u64
            )
        })
    }
}

/// Verification pairs from a split (usually [`SyntheticFaces::held_out`]): `pairs` matched
/// pairs (two images of one identity) and as many mismatched ones, interleaved, PNG-encoded as an
/// insightface `.bin` holds them. Deterministic from `seed`.
pub fn verification_pairs(
    split: &SyntheticFaces,
    pairs: usize,
    seed: u64,
) -> Result<crate::bin::VerificationBin> {
    let mut images = Vec::with_capacity(4 * pairs);
    let mut issame = Vec::with_capacity(2 * pairs);
    for (a, b, same) in verification_pair_indices(split, pairs, seed)? {
        images.push(crate::dataset::encode_png(&split.get(a)?.image)?);
        images.push(crate::dataset::encode_png(&split.get(b)?.image)?);
        issame.push(same);
    }
    Ok(crate::bin::VerificationBin { images, issame })
}

/// The sample indices behind [`verification_pairs`]: `(first, second, same identity)`,
/// alternating matched and mismatched, for callers that use the images directly.
pub fn verification_pair_indices(
    split: &SyntheticFaces,
    pairs: usize,
    seed: u64,
) -> Result<Vec<(usize, usize, bool)>> {
    let per = split.per;
    let ids = split.num_identities();
    if ids < 2 || per < 2 {
        return Err(DataError::Config {
            what: "verification pairs",
            reason: "need at least 2 identities with 2 images each".into(),
        });
    }
    let mut r = StdRng::seed_from_u64(seed ^ 0x9a125);
    Ok((0..2 * pairs)
        .map(|k| {
            let same = k % 2 == 0;
            let a = r.random_range(0..ids);
            let b = if same {
                a
            } else {
                (a + r.random_range(1..ids)) % ids
            };
            let i = r.random_range(0..per);
            let j = if same {
                (i + r.random_range(1..per)) % per
            } else {
                r.random_range(0..per)
            };
            (a * per + i, b * per + j, same)
        })
        .collect())
}
