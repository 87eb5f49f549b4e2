//! The synthetic face model: an identity's traits, one image's nuisance, and how a point of
//! the face looks in each modality (colour under visible light, near-infrared under the camera's
//! illuminator, height for the depth sensor). Everything is a pure function of its seeds.

use std::f32::consts::PI;

use rand::{rngs::StdRng, Rng, SeedableRng};

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
    /// How the identity looks in near-infrared and its 3-D shape (drawn from a stream of their
    /// own, so the colour traits above are the ones they always were).
    nir: Look,
    shape: Shape,
}

/// The reflectances a face is painted with: colours in RGB, grey levels (all three equal) in
/// near-infrared.
#[derive(Debug, Clone, PartialEq)]
struct Look {
    skin: [f32; 3],
    hair: [f32; 3],
    iris: [f32; 3],
    lips: [f32; 3],
    glasses: Option<[f32; 3]>,
    sclera: [f32; 3],
    pupil: [f32; 3],
    mouth: [f32; 3],
}

/// Relief the depth sensor sees, in template units: what colour cannot show.
#[derive(Debug, Clone, PartialEq)]
struct Shape {
    /// Head depth as a share of its half-width.
    depth: f32,
    nose_projection: f32,
    brow_ridge: f32,
    eye_socket: f32,
    cheekbones: f32,
    chin: f32,
}

fn grey(v: f32) -> [f32; 3] {
    [v; 3]
}

fn luma(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

pub(super) fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
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
        let mut identity = Self {
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
            nir: Look::rgb_defaults([0.0; 3], [0.0; 3], [0.0; 3], [0.0; 3], None),
            shape: Shape::FLAT,
        };
        let mut extra =
            StdRng::seed_from_u64(seed ^ id.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x4e1d_ee9f);
        identity.nir = identity.nir_look(&mut extra);
        identity.shape = Shape::draw(&mut extra);
        identity
    }

    /// How the identity looks in colour.
    fn rgb(&self) -> Look {
        Look::rgb_defaults(self.skin, self.hair, self.iris, self.lips, self.glasses)
    }

    /// Near-infrared reflectances: skin reflects strongly whatever its visible tone (melanin
    /// absorbs little there), dark hair turns mid-grey, irises of every colour look alike but
    /// differ in grain, lips all but vanish into the skin, and frames reflect as their
    /// material does rather than as their colour.
    fn nir_look(&self, r: &mut StdRng) -> Look {
        let skin = (0.62 + 0.15 * (luma(self.skin) - 0.6) + r.random_range(-0.07..0.07)).min(0.95);
        let hair = 0.3 + 0.45 * luma(self.hair) + r.random_range(-0.06..0.06);
        Look {
            skin: grey(skin),
            hair: grey(hair),
            iris: grey(r.random_range(0.3..0.65)),
            lips: grey(skin * r.random_range(0.9..0.98)),
            glasses: self.glasses.map(|_| grey(r.random_range(0.08..0.7))),
            sclera: grey(0.75),
            pupil: grey(0.04),
            mouth: grey(0.12),
        }
    }

    /// Landmarks in template units (left eye, right eye, nose tip, mouth corners).
    pub(super) fn landmarks(&self, yaw: f32) -> [[f32; 2]; 5] {
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

impl Look {
    /// A look with the fixed sclera, pupil and mouth colours the RGB renderer has always used.
    fn rgb_defaults(
        skin: [f32; 3],
        hair: [f32; 3],
        iris: [f32; 3],
        lips: [f32; 3],
        glasses: Option<[f32; 3]>,
    ) -> Self {
        Self {
            skin,
            hair,
            iris,
            lips,
            glasses,
            sclera: [0.93, 0.93, 0.9],
            pupil: [0.02, 0.02, 0.02],
            mouth: [0.25, 0.08, 0.08],
        }
    }
}

impl Shape {
    const FLAT: Self = Self {
        depth: 0.0,
        nose_projection: 0.0,
        brow_ridge: 0.0,
        eye_socket: 0.0,
        cheekbones: 0.0,
        chin: 0.0,
    };

    fn draw(r: &mut StdRng) -> Self {
        Self {
            depth: r.random_range(0.75..1.05),
            nose_projection: r.random_range(7.0..16.0),
            brow_ridge: r.random_range(0.5..4.0),
            eye_socket: r.random_range(1.5..5.0),
            cheekbones: r.random_range(0.0..4.0),
            chin: r.random_range(0.0..5.0),
        }
    }
}

/// What the other sensors add to one image: whether it is taken at night and how dark and
/// noisy the colour camera is then, the infrared camera's noise and background, the depth
/// sensor's noise and distance. Drawn from a stream of its own (the colour nuisance is the one
/// it always was).
#[derive(Debug, Clone)]
pub(super) struct Sensors {
    /// Uniform in [0, 1): the image is taken at night when this is below the config's share.
    pub night_draw: f32,
    /// Share of the visible light left at night.
    pub dim: f32,
    /// Tint of the night's light sources (sodium and LED street lights).
    pub tint: [f32; 3],
    /// Read noise before the camera's gain, in [0, 1] units.
    pub read_noise: f32,
    /// The mean level the camera's auto-gain brings the dark image up to.
    pub target: f32,
    pub nir_background: f32,
    pub nir_noise: f32,
    /// How far the face is: shifts every depth value.
    pub depth_offset: f32,
    pub depth_noise: f32,
    pub seed: u64,
}

impl Sensors {
    pub(super) fn draw(seed: u64, id: u64, index: u64) -> Self {
        let mut r = StdRng::seed_from_u64(
            seed ^ id.wrapping_mul(0x94D0_49BB_1331_11EB)
                ^ index.wrapping_mul(0xBF58_476D_1CE4_E5B9)
                ^ 0x5e45_0125,
        );
        let sodium = r.random_range(0.0f32..1.0);
        Self {
            night_draw: r.random(),
            dim: r.random_range(0.03..0.08),
            tint: [
                1.0,
                0.8 + 0.15 * (1.0 - sodium),
                0.45 + 0.5 * (1.0 - sodium),
            ],
            read_noise: r.random_range(0.012..0.024),
            target: r.random_range(0.3..0.45),
            nir_background: r.random_range(0.03..0.15),
            nir_noise: r.random_range(0.01..0.03),
            depth_offset: r.random_range(-12.0..12.0),
            depth_noise: r.random_range(0.6..1.6),
            seed: r.random(),
        }
    }
}

/// One image's nuisance.
#[derive(Debug, Clone)]
pub(super) struct Nuisance {
    pub(super) angle: f32,
    pub(super) scale: f32,
    pub(super) shift: [f32; 2],
    pub(super) yaw: f32,
    pub(super) light_dir: [f32; 2],
    pub(super) light: f32,
    pub(super) ambient: f32,
    pub(super) temperature: [f32; 3],
    pub(super) smile: f32,
    pub(super) eye_open: f32,
    pub(super) background: [[f32; 3]; 2],
    pub(super) occlusion: Option<([f32; 4], [f32; 3])>,
    pub(super) blur: u32,
    pub(super) noise: f32,
    pub(super) jpeg: Option<u8>,
    pub(super) seed: u64,
}

impl Nuisance {
    pub(super) fn draw(seed: u64, id: u64, index: u64, k: f32) -> Self {
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

/// The reflectance of the face at template point `p` in `look`, before lighting; `None` off
/// the head. The same geometry paints every modality.
fn paint(id: &Identity, look: &Look, n: &Nuisance, p: [f32; 2]) -> Option<[f32; 3]> {
    let [x, y] = p;
    // Head: an ellipse narrowing towards the chin.
    let taper = 1.0 - id.jaw * (y / id.head[1]).max(0.0).powi(2);
    let head = ellipse([x / taper.max(0.3), y], [0.0, 0.0], id.head);
    let hair_mass = ellipse(p, [0.0, -8.0], [id.head[0] + 5.0, id.head[1] + 6.0]);
    let in_hair_back = !id.bald && hair_mass < 0.0 && y < id.hair_sides - 10.0;
    if head > 1.0 && !in_hair_back {
        return None;
    }
    let mut c = if in_hair_back { look.hair } else { look.skin };
    let skin_alpha = cover(head);
    if skin_alpha > 0.0 {
        let mut skin = look.skin;
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
            look.hair.map(|v| v * texture),
            top * cover(head - 2.0).max(in_hair_back as u8 as f32),
        );
    }
    // Eyes: sclera, iris, pupil, lids closing with the expression.
    for side in [-1.0f32, 1.0] {
        let centre = [side * id.eye_half_spacing + s, id.eye_y];
        let r = [id.eye_size[0], id.eye_size[1] * n.eye_open];
        let e = ellipse(p, centre, r);
        over(&mut c, look.sclera, cover(e));
        let iris_r = id.eye_size[1] * 0.95;
        let iris = ellipse(p, [centre[0] + n.yaw * 2.0, centre[1]], [iris_r, iris_r]);
        over(&mut c, look.iris, cover(iris) * cover(e));
        let pupil = ellipse(
            p,
            [centre[0] + n.yaw * 2.0, centre[1]],
            [iris_r * 0.45, iris_r * 0.45],
        );
        over(&mut c, look.pupil, cover(pupil) * cover(e));
        // Brow: a slanted bar above the eye.
        let bx = (x - centre[0]) / (id.eye_size[0] * 1.3);
        let by =
            y - (centre[1] - id.brow_gap - side * id.brow_tilt * (x - centre[0]) - 2.0 * bx * bx);
        let brow = by.abs() - id.brow_thickness;
        if bx.abs() < 1.0 {
            over(&mut c, look.hair.map(|v| v * 0.8), cover(brow) * 0.9);
        }
        // Glasses: a ring around each eye.
        if let Some(frame) = look.glasses {
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
    if let Some(frame) = look.glasses {
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
    over(&mut c, look.skin.map(|v| v * 0.8), cover(nose_line) * 0.5);
    for side in [-1.0f32, 1.0] {
        let nostril = ellipse(
            p,
            [s * 1.4 + side * id.nose_width * 0.5, id.nose_y + 1.0],
            [1.6, 1.0],
        );
        over(&mut c, look.skin.map(|v| v * 0.45), cover(nostril));
    }
    // Mouth: lips along a curve that bends with the smile.
    let mx = (x - s) / id.mouth_half_width;
    if mx.abs() < 1.0 {
        let curve = id.mouth_y - n.smile * 3.0 * (1.0 - mx * mx) + n.smile * 1.5;
        let lips = (y - curve).abs() - id.lip_thickness * (1.0 - mx * mx).sqrt();
        over(&mut c, look.lips, cover(lips));
        over(&mut c, look.mouth, cover((y - curve).abs() - 0.5));
    }
    // Facial hair.
    if id.moustache {
        let m =
            ((x - s).abs() - id.mouth_half_width * 0.9).max((y - (id.mouth_y - 4.0)).abs() - 1.8);
        over(&mut c, look.hair, cover(m) * 0.9);
    }
    if let Some(density) = id.beard {
        let chin = y - (id.mouth_y + 2.0) + 0.15 * (x - s).abs();
        if chin > 0.0 && head < 0.0 {
            let hair = value_noise(id.texture_seed ^ 3, x * 2.0, y * 2.0, 1.5);
            over(
                &mut c,
                look.hair,
                (cover(-chin) * density * (0.6 + 0.4 * hair)).min(1.0),
            );
        }
    }
    Some(c)
}

/// The head's rough normal at `p`: its x and y components.
fn rough_normal(id: &Identity, p: [f32; 2]) -> [f32; 2] {
    [
        (p[0] / id.head[0]).clamp(-1.0, 1.0),
        (p[1] / id.head[1]).clamp(-1.0, 1.0),
    ]
}

/// The colour of the face at template point `p` (units of the 112 template, centre (0, 0) at
/// the face centre) under visible light: a directional term over the head's rough normal,
/// then ambient. `None` off the head.
pub(super) fn shade(id: &Identity, n: &Nuisance, p: [f32; 2]) -> Option<[f32; 3]> {
    let c = paint(id, &id.rgb(), n, p)?;
    let [nx, ny] = rough_normal(id, p);
    let lambert = nx * n.light_dir[0] + ny * n.light_dir[1];
    let light = n.ambient * (1.0 + n.light * lambert);
    Some(c.map(|v| v * light))
}

/// The near-infrared level at `p` under the camera's own illuminator: brightest where the face
/// looks at the camera, whatever the visible light. `None` off the head.
pub(super) fn shade_nir(id: &Identity, n: &Nuisance, p: [f32; 2]) -> Option<f32> {
    let c = paint(id, &id.nir, n, p)?;
    let [nx, ny] = rough_normal(id, p);
    let facing = (1.0 - nx * nx - ny * ny).max(0.0).sqrt();
    Some(c[0] * (0.45 + 0.65 * facing))
}

/// A smooth bump of `height` and radius `r` at `c`.
fn bump(p: [f32; 2], c: [f32; 2], r: [f32; 2], height: f32) -> f32 {
    let (dx, dy) = ((p[0] - c[0]) / r[0], (p[1] - c[1]) / r[1]);
    height * (-(dx * dx + dy * dy)).exp()
}

/// Height of the face above the background plane at `p`, in template units: an ellipsoidal
/// head, the nose ridge rising to its tip, brow ridge, eye sockets, cheekbones, lips and chin,
/// hair volume; yaw tilts it. `None` off the head.
pub(super) fn height(id: &Identity, n: &Nuisance, p: [f32; 2]) -> Option<f32> {
    let [x, y] = p;
    let sh = &id.shape;
    let taper = 1.0 - id.jaw * (y / id.head[1]).max(0.0).powi(2);
    let (u, v) = (x / (id.head[0] * taper.max(0.3)), y / id.head[1]);
    let r2 = u * u + v * v;
    let hair_mass = ellipse(p, [0.0, -8.0], [id.head[0] + 5.0, id.head[1] + 6.0]);
    let in_hair_back = !id.bald && hair_mass < 0.0 && y < id.hair_sides - 10.0;
    if r2 > 1.0 && !in_hair_back {
        return None;
    }
    let s = n.yaw * 7.0;
    let mut z = sh.depth * id.head[0] * (1.0 - r2.min(1.0)).sqrt();
    if r2 > 1.0 {
        z = 3.0; // hair beyond the face's outline
    }
    // Nose: a ridge from between the eyes to the tip, rising towards the tip.
    let top = id.eye_y + 2.0;
    if y > top - 4.0 && y < id.nose_y + 4.0 {
        let t = ((y - top) / (id.nose_y - top).max(1.0)).clamp(0.0, 1.0);
        let half = 3.0 + id.nose_width * 0.6 * t;
        let across = (x - s * 1.4) / half;
        let fade = (1.0 - ((y - id.nose_y) / 4.0).max(0.0)).max(0.0);
        z += sh.nose_projection * t.powf(0.8) * (-across * across).exp() * fade;
    }
    for side in [-1.0f32, 1.0] {
        let eye = [side * id.eye_half_spacing + s, id.eye_y];
        z -= bump(
            p,
            eye,
            [id.eye_size[0] * 1.2, id.eye_size[0]],
            sh.eye_socket,
        );
        z += bump(
            p,
            [eye[0], eye[1] - id.brow_gap],
            [id.eye_size[0] * 1.6, 3.0],
            sh.brow_ridge,
        );
        let cheek = [side * (id.eye_half_spacing + 5.0) + s, id.eye_y + 12.0];
        z += bump(p, cheek, [7.0, 6.0], sh.cheekbones);
    }
    let mouth = [s, id.mouth_y - n.smile * 1.5];
    z += bump(
        p,
        mouth,
        [id.mouth_half_width, id.lip_thickness + 1.0],
        id.lip_thickness * 0.5,
    );
    z += bump(p, [s, id.head[1] * 0.8], [10.0, 6.0], sh.chin);
    if !id.bald && y < id.hairline + 4.0 * (x / id.head[0]).powi(2) {
        z += 2.5;
    }
    // Turning the head tilts its surface towards one side.
    Some(z - n.yaw * x * 0.5)
}

/// Whether the depth sensor loses its projected pattern at `p`: hair scatters it, in patches.
pub(super) fn hair_holes(id: &Identity, p: [f32; 2]) -> bool {
    if id.bald {
        return false;
    }
    let [x, y] = p;
    let line = id.hairline
        + 4.0 * (x / id.head[0]).powi(2)
        + id.fringe * (1.0 - (x / 20.0).powi(2)).max(0.0);
    let outside_face = ellipse(p, [0.0, 0.0], id.head) > 0.0;
    (y < line || outside_face) && value_noise(id.texture_seed ^ 0x401e, x, y, 4.0) > 0.45
}
