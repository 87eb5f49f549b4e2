//! Helpers the examples share.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Reads an already-aligned 112x112 face as interleaved RGB bytes.
pub fn read_aligned_face(path: &Path) -> Result<Vec<u8>> {
    let image = image::open(path).with_context(|| format!("reading {}", path.display()))?;
    if (image.width(), image.height()) != (112, 112) {
        bail!(
            "{} is {}x{}, not an aligned 112x112 face",
            path.display(),
            image.width(),
            image.height()
        );
    }
    Ok(image.to_rgb8().into_raw())
}
