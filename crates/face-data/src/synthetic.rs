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

use std::f32::consts::PI;
use std::path::PathBuf;

use image::{Rgb, RgbImage};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{
    dataset::{FaceDataset, FaceSample},
    error::{DataError, Result},
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

/// An identity's fixed traits, in 112-pixel template units around the face centre (56, 60).
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    head: [f32; 2],
    jaw: f32,
    skin: [f32; 3],
    texture: f32,
    texture_seed: u64,
    hair: [f32; 3],
    hairline: f32,
    hair_sides: f32,
    fringe: f32,
    bald: bool,
    eye_half_spacing: f32,
    eye_y: f32,
    eye_size: [f32; 2],
    iris: [f32; 3],
    brow_gap: f32,
    brow_thickness: f32,
    brow_tilt: f32,
    nose_y: f32,
    nose_width: f32,
    mouth_y: f32,
    mouth_half_width: f32,
    lip_thickness: f32,
    lips: [f32; 3],
    beard: Option<f32>,
    moustache: bool,
    glasses: Option<[f32; 3]>,
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    std::array::from_fn(|i| a[i] + (b[i] - a[i]) * t)
}

fn pick<const N: usize>(rng: &mut StdRng, palette: [[f32; 3]; N]) -> [f32; 3] {
    let i = rng.random_range(0..N);
    let j = rng.random_range(0..N);
    mix(palette[i], palette[j], rng.random_range(0.0..0.35))
}

impl Identity {
    /// The traits of identity `id` (a pure function of seed and id).
    pub fn draw(seed: u64, id: u64) -> Self {
        let mut r =
            StdRng::seed_from_u64(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5eed_face);
        let skin_light = [0.96, 0.82, 0.72];
        let skin_dark = [0.36, 0.23, 0.16];
        let tone = r.random_range(0.0f32..1.0);
        let skin = mix(skin_light, skin_dark, tone);
        let skin = [
            skin[0] * r.random_range(0.95..1.05),
            skin[1] * r.random_range(0.93..1.05),
            skin[2] * r.random_range(0.9..1.08),
        ];
        let hair = pick(
            &mut r,
            [
                [0.08, 0.06, 0.05],
                [0.3, 0.18, 0.1],
                [0.55, 0.38, 0.2],
                [0.85, 0.7, 0.45],
                [0.6, 0.25, 0.1],
                [0.7, 0.7, 0.7],
            ],
        );
        let iris = pick(
            &mut r,
            [
                [0.25, 0.15, 0.08],
                [0.2, 0.35, 0.6],
                [0.3, 0.45, 0.25],
                [0.45, 0.3, 0.15],
            ],
        );
        let lips = mix(skin, [0.7, 0.25, 0.3], r.random_range(0.25..0.6));
        Self {
            head: [r.random_range(33.0..44.0), r.random_range(43.0..56.0)],
            jaw: r.random_range(0.0..0.35),
            skin,
            texture: r.random_range(0.0..0.12),
            texture_seed: r.random(),
            hair,
            hairline: r.random_range(-36.0..-20.0),
            hair_sides: r.random_range(0.0..45.0),
            fringe: if r.random_bool(0.3) {
                r.random_range(4.0..14.0)
            } else {
                0.0
            },
            bald: r.random_bool(0.1),
            eye_half_spacing: r.random_range(14.0..21.0),
            eye_y: r.random_range(-14.0..-6.0),
            eye_size: [r.random_range(4.5..8.0), r.random_range(2.2..4.2)],
            iris,
            brow_gap: r.random_range(5.0..10.0),
            brow_thickness: r.random_range(1.2..3.8),
            brow_tilt: r.random_range(-0.25..0.25),
            nose_y: r.random_range(6.0..16.0),
            nose_width: r.random_range(3.5..8.0),
            mouth_y: r.random_range(24.0..34.0),
            mouth_half_width: r.random_range(9.0..17.0),
            lip_thickness: r.random_range(1.5..4.5),
            lips,
            beard: r.random_bool(0.2).then(|| r.random_range(0.4..0.95)),
            moustache: r.random_bool(0.2),
            glasses: r.random_bool(0.2).then(|| {
                pick(
                    &mut r,
                    [[0.05, 0.05, 0.05], [0.5, 0.3, 0.1], [0.7, 0.7, 0.75]],
                )
            }),
        }
    }

    /// Landmarks in template units (left eye, right eye, nose tip, mouth corners).
    fn landmarks(&self, yaw: f32) -> [[f32; 2]; 5] {
        let s = yaw * 7.0;
        [
            [-self.eye_half_spacing + s, self.eye_y],
            [self.eye_half_spacing + s, self.eye_y],
            [s * 1.4, self.nose_y],
            [-self.mouth_half_width + s, self.mouth_y],
            [self.mouth_half_width + s, self.mouth_y],
        ]
    }
}

/// One image's nuisance.
#[derive(Debug, Clone)]
struct Nuisance {
    angle: f32,
    scale: f32,
    shift: [f32; 2],
    yaw: f32,
    light_dir: [f32; 2],
    light: f32,
    ambient: f32,
    temperature: [f32; 3],
    smile: f32,
    eye_open: f32,
    background: [[f32; 3]; 2],
    occlusion: Option<([f32; 4], [f32; 3])>,
    blur: u32,
    noise: f32,
    jpeg: Option<u8>,
    seed: u64,
}

impl Nuisance {
    fn draw(seed: u64, id: u64, index: u64, k: f32) -> Self {
        let mut r = StdRng::seed_from_u64(
            seed ^ id.wrapping_mul(0xD6E8_FEB8_6659_FD93)
                ^ index.wrapping_mul(0xA076_1D64_78BD_642F)
                ^ 0xb0b,
        );
        let dir = r.random_range(0.0..2.0 * PI);
        let occluded = r.random_bool((0.25 * k as f64).min(1.0));
        let occ_w = r.random_range(25.0..60.0);
        let occ_h = r.random_range(15.0..40.0);
        let occ = [
            r.random_range(0.0..112.0 - occ_w),
            r.random_range(40.0..112.0 - occ_h),
            occ_w,
            occ_h,
        ];
        let occ_colour = [r.random(), r.random(), r.random()];
        Self {
            angle: r.random_range(-10.0..10.0) * k * PI / 180.0,
            scale: 1.0 + r.random_range(-0.08..0.08) * k,
            shift: [r.random_range(-4.0..4.0) * k, r.random_range(-4.0..4.0) * k],
            yaw: r.random_range(-0.35..0.35) * k,
            light_dir: [dir.cos(), dir.sin()],
            light: r.random_range(0.0..0.5) * k.min(1.5),
            ambient: r.random_range(0.7..1.15),
            temperature: [
                1.0 + r.random_range(-0.1..0.1) * k,
                1.0,
                1.0 + r.random_range(-0.1..0.1) * k,
            ],
            smile: r.random_range(-1.0..1.0),
            eye_open: r.random_range(0.45..1.15),
            background: [
                [r.random(), r.random(), r.random()],
                [r.random(), r.random(), r.random()],
            ],
            occlusion: occluded.then_some((occ, occ_colour)),
            blur: if r.random_bool((0.3 * k as f64).min(1.0)) {
                r.random_range(1..=2)
            } else {
                0
            },
            noise: r.random_range(0.0..0.035) * k,
            jpeg: r
                .random_bool((0.5 * k as f64).min(1.0))
                .then(|| r.random_range(30..90)),
            seed: r.random(),
        }
    }
}

/// Hash-based value noise in [0, 1) at lattice point (x, y).
fn lattice(seed: u64, x: i32, y: i32) -> f32 {
    let mut h = seed
        ^ (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    (h >> 40) as f32 / (1u64 << 24) as f32
}

/// Smooth value noise at (x, y) with lattice spacing `cell`.
fn value_noise(seed: u64, x: f32, y: f32, cell: f32) -> f32 {
    let (gx, gy) = (x / cell, y / cell);
    let (ix, iy) = (gx.floor() as i32, gy.floor() as i32);
    let (fx, fy) = (gx - ix as f32, gy - iy as f32);
    let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
    let a = lattice(seed, ix, iy) + (lattice(seed, ix + 1, iy) - lattice(seed, ix, iy)) * sx;
    let b = lattice(seed, ix, iy + 1)
        + (lattice(seed, ix + 1, iy + 1) - lattice(seed, ix, iy + 1)) * sx;
    a + (b - a) * sy
}

/// Soft inside-ness of a signed distance (negative inside), 1 px feather.
fn cover(d: f32) -> f32 {
    (0.5 - d).clamp(0.0, 1.0)
}

fn over(c: &mut [f32; 3], paint: [f32; 3], alpha: f32) {
    for i in 0..3 {
        c[i] += (paint[i] - c[i]) * alpha;
    }
}

/// Signed distance (approximate, in pixels) to an axis-aligned ellipse.
fn ellipse(p: [f32; 2], c: [f32; 2], r: [f32; 2]) -> f32 {
    let (dx, dy) = ((p[0] - c[0]) / r[0], (p[1] - c[1]) / r[1]);
    ((dx * dx + dy * dy).sqrt() - 1.0) * r[0].min(r[1])
}

/// The colour of the face at template point `p` (units of the 112 template, centre (0, 0) at
/// the face centre), before lighting of the background.
fn shade(id: &Identity, n: &Nuisance, p: [f32; 2]) -> Option<[f32; 3]> {
    let [x, y] = p;
    // Head: an ellipse narrowing towards the chin.
    let taper = 1.0 - id.jaw * (y / id.head[1]).max(0.0).powi(2);
    let head = ellipse([x / taper.max(0.3), y], [0.0, 0.0], id.head);
    let hair_mass = ellipse(p, [0.0, -8.0], [id.head[0] + 5.0, id.head[1] + 6.0]);
    let in_hair_back = !id.bald && hair_mass < 0.0 && y < id.hair_sides - 10.0;
    if head > 1.0 && !in_hair_back {
        return None;
    }
    let mut c = if in_hair_back { id.hair } else { id.skin };
    let skin_alpha = cover(head);
    if skin_alpha > 0.0 {
        let mut skin = id.skin;
        let t = (value_noise(id.texture_seed, x, y, 3.0) - 0.5) * id.texture * 2.0;
        for v in &mut skin {
            *v *= 1.0 + t;
        }
        over(&mut c, skin, skin_alpha);
    }
    let s = n.yaw * 7.0;
    // Hair on top and a fringe.
    if !id.bald {
        let line = id.hairline
            + 4.0 * (x / id.head[0]).powi(2)
            + id.fringe * (1.0 - (x / 20.0).powi(2)).max(0.0);
        let top = cover(y - line);
        let texture = 0.85 + 0.3 * value_noise(id.texture_seed ^ 7, x * 1.5, y * 0.4, 2.0);
        over(
            &mut c,
            id.hair.map(|v| v * texture),
            top * cover(head - 2.0).max(in_hair_back as u8 as f32),
        );
    }
    // Eyes: sclera, iris, pupil, lids closing with the expression.
    for side in [-1.0f32, 1.0] {
        let centre = [side * id.eye_half_spacing + s, id.eye_y];
        let r = [id.eye_size[0], id.eye_size[1] * n.eye_open];
        let e = ellipse(p, centre, r);
        over(&mut c, [0.93, 0.93, 0.9], cover(e));
        let iris_r = id.eye_size[1] * 0.95;
        let iris = ellipse(p, [centre[0] + n.yaw * 2.0, centre[1]], [iris_r, iris_r]);
        over(&mut c, id.iris, cover(iris) * cover(e));
        let pupil = ellipse(
            p,
            [centre[0] + n.yaw * 2.0, centre[1]],
            [iris_r * 0.45, iris_r * 0.45],
        );
        over(&mut c, [0.02, 0.02, 0.02], cover(pupil) * cover(e));
        // Brow: a slanted bar above the eye.
        let bx = (x - centre[0]) / (id.eye_size[0] * 1.3);
        let by =
            y - (centre[1] - id.brow_gap - side * id.brow_tilt * (x - centre[0]) - 2.0 * bx * bx);
        let brow = by.abs() - id.brow_thickness;
        if bx.abs() < 1.0 {
            over(&mut c, id.hair.map(|v| v * 0.8), cover(brow) * 0.9);
        }
        // Glasses: a ring around each eye.
        if let Some(frame) = id.glasses {
            let ring = ellipse(
                p,
                centre,
                [id.eye_size[0] + 4.0, id.eye_size[0] * 0.8 + 2.0],
            )
            .abs()
                - 0.9;
            over(&mut c, frame, cover(ring));
        }
    }
    if let Some(frame) = id.glasses {
        let bridge = (y - id.eye_y)
            .abs()
            .max((x - s).abs() - (id.eye_half_spacing - id.eye_size[0] - 4.0))
            - 0.9;
        over(&mut c, frame, cover(bridge));
    }
    // Nose: a shadow line and two nostrils.
    let nose_line = ((x - s * 1.4).abs() - 0.8)
        .max(y - id.nose_y)
        .max(id.eye_y + 4.0 - y);
    over(&mut c, id.skin.map(|v| v * 0.8), cover(nose_line) * 0.5);
    for side in [-1.0f32, 1.0] {
        let nostril = ellipse(
            p,
            [s * 1.4 + side * id.nose_width * 0.5, id.nose_y + 1.0],
            [1.6, 1.0],
        );
        over(&mut c, id.skin.map(|v| v * 0.45), cover(nostril));
    }
    // Mouth: lips along a curve that bends with the smile.
    let mx = (x - s) / id.mouth_half_width;
    if mx.abs() < 1.0 {
        let curve = id.mouth_y - n.smile * 3.0 * (1.0 - mx * mx) + n.smile * 1.5;
        let lips = (y - curve).abs() - id.lip_thickness * (1.0 - mx * mx).sqrt();
        over(&mut c, id.lips, cover(lips));
        over(&mut c, [0.25, 0.08, 0.08], cover((y - curve).abs() - 0.5));
    }
    // Facial hair.
    if id.moustache {
        let m =
            ((x - s).abs() - id.mouth_half_width * 0.9).max((y - (id.mouth_y - 4.0)).abs() - 1.8);
        over(&mut c, id.hair, cover(m) * 0.9);
    }
    if let Some(density) = id.beard {
        let chin = y - (id.mouth_y + 2.0) + 0.15 * (x - s).abs();
        if chin > 0.0 && head < 0.0 {
            let hair = value_noise(id.texture_seed ^ 3, x * 2.0, y * 2.0, 1.5);
            over(
                &mut c,
                id.hair,
                (cover(-chin) * density * (0.6 + 0.4 * hair)).min(1.0),
            );
        }
    }
    // Lighting: a directional term over the head's rough normal, then ambient.
    let nx = (x / id.head[0]).clamp(-1.0, 1.0);
    let ny = (y / id.head[1]).clamp(-1.0, 1.0);
    let lambert = nx * n.light_dir[0] + ny * n.light_dir[1];
    let light = n.ambient * (1.0 + n.light * lambert);
    Some(c.map(|v| v * light))
}

/// A rendered face and where its landmarks landed.
#[derive(Debug, Clone)]
pub struct RenderedFace {
    /// The rendered face.
    pub image: RgbImage,
    /// Left eye, right eye, nose tip, left and right mouth corner, in image pixels.
    pub landmarks: [[f32; 2]; 5],
}

/// Renders identity `id`'s image `index`. `canvas` > `size` places the face (at `size` scale)
/// at a random spot of a larger background, unaligned, with its landmarks.
pub fn render(config: &SyntheticConfig, id: u64, index: u64, canvas: Option<u32>) -> RenderedFace {
    let identity = Identity::draw(config.seed, id);
    let n = Nuisance::draw(config.seed, id, index, config.nuisance);
    let size = config.size as f32;
    let unit = size / 112.0;
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
    let (cos, sin) = (
        n.angle.cos() * n.scale * unit,
        n.angle.sin() * n.scale * unit,
    );
    let centre = [
        origin[0] + (56.0 + n.shift[0]) * unit,
        origin[1] + (60.0 + n.shift[1]) * unit,
    ];
    let to_image = |p: [f32; 2]| {
        [
            cos * p[0] - sin * p[1] + centre[0],
            sin * p[0] + cos * p[1] + centre[1],
        ]
    };
    let det = cos * cos + sin * sin;
    let to_template = |q: [f32; 2]| {
        let (dx, dy) = (q[0] - centre[0], q[1] - centre[1]);
        [(cos * dx + sin * dy) / det, (-sin * dx + cos * dy) / det]
    };
    let mut img = RgbImage::new(side, side);
    let mut noise_rng = StdRng::seed_from_u64(n.seed);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let q = [x as f32 + 0.5, y as f32 + 0.5];
        let t = (q[1] / side as f32).clamp(0.0, 1.0);
        let mut c = mix(n.background[0], n.background[1], t);
        if let Some(face) = shade(&identity, &n, to_template(q)) {
            c = face;
        }
        if let Some((r, colour)) = n.occlusion {
            let (ox, oy) = ((x as f32 - origin[0]) / unit, (y as f32 - origin[1]) / unit);
            if ox >= r[0] && ox < r[0] + r[2] && oy >= r[1] && oy < r[1] + r[3] {
                c = colour;
            }
        }
        let grain: f32 = if n.noise > 0.0 {
            noise_rng.random_range(-1.0..1.0) * n.noise
        } else {
            0.0
        };
        *px = Rgb(std::array::from_fn(|i| {
            ((c[i] * n.temperature[i] + grain).clamp(0.0, 1.0) * 255.0 + 0.5) as u8
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
    let landmarks = identity.landmarks(n.yaw).map(to_image);
    RenderedFace {
        image: img,
        landmarks,
    }
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
        Ok(FaceSample {
            image: self.render(index, None)?.image,
            label: self.label(index)?,
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
