//! Modalities beside RGB: a near-infrared and a depth image of the same face, from the same
//! moment. A batch stacks the chosen modalities' planes along the channel axis in the order they
//! are listed (RGB 3 planes, NIR 1, depth 1); a modality that is missing for a sample (dropped in
//! training, or a camera without it) is all zeros, a value no real plane has after
//! normalisation (`(v - 127.5) / 127.5` of an integer `v` is never 0).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::GrayImage;
use serde::{Deserialize, Serialize};

use crate::dataset::{decode, encode_png, FaceSample};
use crate::error::{io, DataError, Result};

/// One kind of image of a face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    /// The colour camera (3 planes).
    Rgb,
    /// Near-infrared under the camera's own illuminator (1 plane).
    Nir,
    /// A structured-light depth map, nearer is brighter, 0 where the sensor saw nothing (1 plane).
    Depth,
}

impl Modality {
    /// Every modality, in the canonical order.
    pub const ALL: [Modality; 3] = [Modality::Rgb, Modality::Nir, Modality::Depth];

    /// The single-plane modalities a dataset may carry beside its RGB images.
    pub const EXTRA: [Modality; 2] = [Modality::Nir, Modality::Depth];

    /// Planes it adds to a batch.
    pub fn planes(self) -> usize {
        match self {
            Self::Rgb => 3,
            Self::Nir | Self::Depth => 1,
        }
    }

    /// Its name in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rgb => "rgb",
            Self::Nir => "nir",
            Self::Depth => "depth",
        }
    }

    /// A comma-separated list such as `rgb,nir,depth`: at least one, none twice.
    pub fn parse_list(text: &str) -> Result<Vec<Modality>> {
        let list = (text.split(','))
            .map(|s| s.trim().parse())
            .collect::<Result<Vec<Modality>>>()?;
        check_list(&list)?;
        Ok(list)
    }
}

/// Refuses an empty list or one naming a modality twice.
pub fn check_list(list: &[Modality]) -> Result<()> {
    let bad = |reason: String| DataError::Config {
        what: "modalities",
        reason,
    };
    if list.is_empty() {
        return Err(bad("no modality chosen (rgb, nir, depth)".into()));
    }
    for (k, m) in list.iter().enumerate() {
        if list[..k].contains(m) {
            return Err(bad(format!("{m} is listed twice")));
        }
    }
    Ok(())
}

impl fmt::Display for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Modality {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| DataError::Config {
                what: "modalities",
                reason: format!("unknown modality {s:?}: choose from rgb, nir, depth"),
            })
    }
}

/// Where the `modality` images of the dataset at `path` live, beside it, so readers that know
/// only RGB read the dataset unchanged: an image folder `faces/` has `faces.nir/` (same
/// relative paths, PNG), a record file `train.rec` has `train.nir.rec` (+ `.idx`, same keys).
pub fn companion(path: &Path, modality: Modality) -> PathBuf {
    let is_rec = path.extension().is_some_and(|e| e == "rec");
    if is_rec {
        path.with_extension(format!("{modality}.rec"))
    } else {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{modality}"));
        path.with_file_name(name)
    }
}

/// The single-plane modalities whose companion exists beside `path`.
pub(crate) fn companions_present(path: &Path) -> Vec<Modality> {
    (Modality::EXTRA.into_iter())
        .filter(|&m| companion(path, m).exists())
        .collect()
}

/// Decodes a stored NIR or depth image (a grey PNG; of any other image, the first channel).
pub(crate) fn decode_plane(bytes: &[u8], path: &Path, index: usize) -> Result<GrayImage> {
    let rgb = decode(bytes, path, index)?;
    Ok(GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        image::Luma([rgb.get_pixel(x, y).0[0]])
    }))
}

/// Writes the NIR and depth images `sample` carries into the companion folders of `root`, at
/// `relative` with a `.png` extension, each atomically.
pub fn write_companions(root: &Path, relative: &Path, sample: &FaceSample) -> Result<()> {
    for m in Modality::EXTRA {
        let Ok(plane) = sample.gray_plane(m, 0) else {
            continue;
        };
        let path = companion(root, m).join(relative).with_extension("png");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        atomic_file::write(&path, &encode_png(plane)?).map_err(io(&path))?;
    }
    Ok(())
}

/// Planes of a batch of `modalities`, stacked in order.
pub fn total_planes(modalities: &[Modality]) -> usize {
    modalities.iter().map(|m| m.planes()).sum()
}

/// Where each modality's planes sit in a batch of `modalities`.
pub fn plane_ranges(modalities: &[Modality]) -> Vec<(Modality, Range<usize>)> {
    let mut start = 0;
    (modalities.iter())
        .map(|&m| {
            let range = start..start + m.planes();
            start = range.end;
            (m, range)
        })
        .collect()
}

impl FaceSample {
    /// The single-plane image of `modality` (NIR or depth), or an error that names what the
    /// dataset lacks.
    pub fn gray_plane(&self, modality: Modality, index: usize) -> Result<&GrayImage> {
        let plane = match modality {
            Modality::Nir => self.nir.as_ref(),
            Modality::Depth => self.depth.as_ref(),
            Modality::Rgb => None,
        };
        plane.ok_or_else(|| DataError::Config {
            what: "modalities",
            reason: format!(
                "sample {index} has no {modality} image (the dataset does not carry it)"
            ),
        })
    }

    /// Sets the NIR or depth image (RGB is `image`).
    pub fn set_plane(&mut self, modality: Modality, plane: GrayImage) {
        match modality {
            Modality::Nir => self.nir = Some(plane),
            Modality::Depth => self.depth = Some(plane),
            Modality::Rgb => {}
        }
    }

    /// The sample as a network's input planes (no augmentation): `modalities` stacked in order,
    /// each normalised as RGB is, `[C, H, W]` row-major. A modality in `missing` is all zeros.
    pub fn planes(
        &self,
        modalities: &[Modality],
        missing: &[Modality],
        index: usize,
    ) -> Result<Vec<f32>> {
        let (w, h) = self.image.dimensions();
        let area = (w * h) as usize;
        let mut out = Vec::with_capacity(total_planes(modalities) * area);
        for &m in modalities {
            if missing.contains(&m) {
                out.resize(out.len() + m.planes() * area, 0.0);
                continue;
            }
            if m == Modality::Rgb {
                for c in 0..3 {
                    (out.extend(self.image.pixels().map(|p| face_embed::input_value(p.0[c]))));
                }
                continue;
            }
            let plane = self.gray_plane(m, index)?;
            if plane.dimensions() != (w, h) {
                return Err(DataError::Config {
                    what: "modalities",
                    reason: format!(
                        "sample {index}: the {m} image is {}x{}, the RGB one {w}x{h}",
                        plane.width(),
                        plane.height()
                    ),
                });
            }
            out.extend(plane.pixels().map(|p| face_embed::input_value(p.0[0])));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_refuse_repeats_and_unknown_names() {
        assert_eq!(
            Modality::parse_list("rgb, NIR,depth").unwrap(),
            vec![Modality::Rgb, Modality::Nir, Modality::Depth]
        );
        assert!(Modality::parse_list("rgb,rgb").is_err());
        assert!(Modality::parse_list("rgb,thermal").is_err());
        assert!(Modality::parse_list("").is_err());
    }

    #[test]
    fn companions_sit_beside_folders_and_record_files() {
        let c = |p: &str, m| companion(Path::new(p), m);
        assert_eq!(c("data/faces", Modality::Nir), Path::new("data/faces.nir"));
        assert_eq!(
            c("data/faces/", Modality::Depth),
            Path::new("data/faces.depth")
        );
        assert_eq!(
            c("out/train.rec", Modality::Nir),
            Path::new("out/train.nir.rec")
        );
    }

    #[test]
    fn planes_stack_in_the_listed_order() {
        let list = [Modality::Depth, Modality::Rgb, Modality::Nir];
        assert_eq!(total_planes(&list), 5);
        let ranges: Vec<_> = plane_ranges(&list).into_iter().map(|(_, r)| r).collect();
        assert_eq!(ranges, vec![0..1, 1..4, 4..5]);
    }
}
