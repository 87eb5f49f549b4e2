//! Helpers: a small identity folder of real PNG files from the synthetic renderer.
#![allow(dead_code)]

use std::path::Path;

use face_data::{render, SyntheticConfig};

/// Writes `identities` folders of `per_identity` synthetic PNGs under `root`.
pub fn synthetic_folder(root: &Path, identities: usize, per_identity: usize) {
    let config = SyntheticConfig {
        identities,
        per_identity,
        ..SyntheticConfig::default()
    };
    for id in 0..identities {
        let dir = root.join(format!("person_{id:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for k in 0..per_identity {
            let face = render(&config, id as u64, k as u64, None);
            // Mix encodings, as real folders do.
            let name = if k % 2 == 0 {
                format!("{k:04}.png")
            } else {
                format!("{k:04}.jpg")
            };
            face.image.save(dir.join(name)).unwrap();
        }
    }
}

/// A `python3` command, for the fixture scripts these tests run.
pub fn python3() -> std::process::Command {
    std::process::Command::new("python3")
}
