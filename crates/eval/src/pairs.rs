//! Verification pairs held in memory, from insightface `.bin` files, LFW's `pairs.txt` over a
//! folder of aligned faces, or the synthetic identities' held-out split.

use std::path::Path;

use face_data::{
    verification_pair_indices, FaceDataset, LfwPairs, SyntheticFaces, VerificationBin,
};
use image::RgbImage;

use crate::EvalError;

/// Faces `2k` and `2k + 1` are pair `k`; `same[k]` says whether they are one person; `fold`, when
/// the set defines its folds (LFW), gives each pair's.
#[derive(Debug, Clone)]
pub struct PairSet {
    /// The faces, two per pair.
    pub faces: Vec<RgbImage>,
    /// Whether each pair is one person.
    pub same: Vec<bool>,
    /// Each pair's fold, when the set defines folds.
    pub fold: Option<Vec<usize>>,
}

impl PairSet {
    /// `pairs` matched and as many mismatched pairs of a synthetic split, taken from it directly.
    pub fn synthetic(split: &SyntheticFaces, pairs: usize, seed: u64) -> Result<Self, EvalError> {
        let mut set = Self {
            faces: Vec::with_capacity(4 * pairs),
            same: Vec::with_capacity(2 * pairs),
            fold: None,
        };
        for (a, b, same) in verification_pair_indices(split, pairs, seed)? {
            set.faces.push(split.get(a)?.image);
            set.faces.push(split.get(b)?.image);
            set.same.push(same);
        }
        Ok(set)
    }

    /// An insightface verification `.bin` (`lfw.bin`, `cfp_fp.bin`, `agedb_30.bin`, ...).
    pub fn bin(path: &Path) -> Result<Self, EvalError> {
        let bin = VerificationBin::read(path)?;
        let faces = bin
            .images
            .iter()
            .enumerate()
            .map(|(i, bytes)| aligned(face_data::decode(bytes, path, i)?, path, i))
            .collect::<Result<_, EvalError>>()?;
        Ok(Self {
            faces,
            same: bin.issame,
            fold: None,
        })
    }

    /// LFW's `pairs.txt` over a folder `name/name_0001.jpg` of aligned faces, with its own folds.
    pub fn lfw(pairs: &Path, images: &Path) -> Result<Self, EvalError> {
        let list = LfwPairs::read(pairs)?;
        let missing = list.missing_images(images);
        if let Some(first) = missing.first() {
            return Err(EvalError::Input(format!(
                "{} of the images {} names are missing under {}, e.g. {}",
                missing.len(),
                pairs.display(),
                images.display(),
                first.display()
            )));
        }
        let mut set = Self {
            faces: Vec::with_capacity(2 * list.pairs.len()),
            same: Vec::with_capacity(list.pairs.len()),
            fold: Some(Vec::with_capacity(list.pairs.len())),
        };
        for (i, pair) in list.pairs.iter().enumerate() {
            let (a, b) = pair.paths(images);
            for path in [a, b] {
                let bytes = std::fs::read(&path)
                    .map_err(|e| EvalError::Input(format!("{}: {e}", path.display())))?;
                let face = face_data::decode(&bytes, &path, i)?;
                set.faces.push(aligned(face, &path, i)?);
            }
            set.same.push(pair.same);
            if let Some(f) = set.fold.as_mut() {
                f.push(pair.fold);
            }
        }
        Ok(set)
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.same.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.same.is_empty()
    }
}

/// Faces for evaluation must already be aligned crops of the backbone's input size; `face` back,
/// or an error naming `path` and `index`.
pub fn aligned(face: RgbImage, path: &Path, index: usize) -> Result<RgbImage, EvalError> {
    let size = iresnet::INPUT_SIZE as u32;
    if face.dimensions() != (size, size) {
        return Err(EvalError::Input(format!(
            "{} (image {index}): {}x{} pixels; verification needs aligned {size}x{size} faces (arcface align)",
            path.display(),
            face.width(),
            face.height()
        )));
    }
    Ok(face)
}
