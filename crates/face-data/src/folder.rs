//! `root/<identity>/*.{jpg,png,bmp}`: identities sorted by name become labels `0..K`.

use std::path::{Path, PathBuf};

use crate::{
    dataset::{decode, FaceDataset, FaceSample},
    error::{io, DataError, Result},
    modality::{companion, companions_present, decode_plane, Modality},
};

/// Whether a file name is an image this crate reads.
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            matches!(
                e.to_ascii_lowercase().as_str(),
                "jpg" | "jpeg" | "png" | "bmp"
            )
        })
        .unwrap_or(false)
}

/// An identity-per-folder image tree.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    identities: Vec<String>,
    /// (relative path, label), sorted by identity then file name.
    files: Vec<(PathBuf, usize)>,
    /// NIR and depth images in companion folders beside the root (`faces.nir/`, same relative
    /// paths as PNG).
    extra: Vec<Modality>,
}

impl ImageFolder {
    /// Lists `root`. An identity folder without images is an error (it would be a label with
    /// no samples), as is a root without identity folders. NIR and depth images are read from
    /// companion folders beside it when they exist (`root.nir/`, `root.depth/`).
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
            .map_err(io(&root))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        if dirs.is_empty() {
            return Err(DataError::Layout {
                path: root,
                reason: "no identity folders (expected root/<identity>/*.jpg)".into(),
            });
        }
        let mut identities = Vec::with_capacity(dirs.len());
        let mut files = Vec::new();
        for (label, dir) in dirs.iter().enumerate() {
            let mut images: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(io(dir))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            if images.is_empty() {
                return Err(DataError::Layout {
                    path: dir.clone(),
                    reason: "identity folder holds no images".into(),
                });
            }
            images.sort();
            let name = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            for img in images {
                files.push((img.strip_prefix(&root).unwrap_or(&img).to_path_buf(), label));
            }
            identities.push(name);
        }
        Ok(Self {
            extra: companions_present(&root),
            root,
            identities,
            files,
        })
    }

    /// Identity names in label order.
    pub fn identities(&self) -> &[String] {
        &self.identities
    }

    /// Relative path and label of every sample.
    pub fn files(&self) -> &[(PathBuf, usize)] {
        &self.files
    }

    /// The encoded bytes of sample `index`, as stored.
    pub fn raw(&self, index: usize) -> Result<Vec<u8>> {
        self.check_index(index)?;
        let path = self.root.join(&self.files[index].0);
        std::fs::read(&path).map_err(io(path))
    }

    /// Writes the label map (`{"identities": [...]}`, label = position) as JSON, atomically:
    /// what a checkpoint needs to turn predicted labels back into names.
    pub fn write_label_map(&self, path: impl AsRef<Path>) -> Result<()> {
        write_label_map(&self.identities, path.as_ref())
    }
}

/// `{"identities": [names in label order]}`, written to a temporary file and renamed.
pub fn write_label_map(identities: &[String], path: &Path) -> Result<()> {
    let json = serde_json::json!({ "identities": identities });
    let bytes = serde_json::to_vec_pretty(&json).expect("serialisable");
    atomic_file::write(path, &bytes).map_err(io(path))
}

impl FaceDataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn num_identities(&self) -> usize {
        self.identities.len()
    }

    fn label(&self, index: usize) -> Result<usize> {
        self.check_index(index)?;
        Ok(self.files[index].1)
    }

    fn get(&self, index: usize) -> Result<FaceSample> {
        let bytes = self.raw(index)?;
        let (relative, label) = &self.files[index];
        let path = self.root.join(relative);
        let mut sample = FaceSample::new(decode(&bytes, &path, index)?, *label);
        for &m in &self.extra {
            let path = companion(&self.root, m)
                .join(relative)
                .with_extension("png");
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            sample.set_plane(m, decode_plane(&bytes, &path, index)?);
        }
        Ok(sample)
    }

    fn source(&self) -> PathBuf {
        self.root.clone()
    }

    fn identity_name(&self, label: usize) -> Option<String> {
        self.identities.get(label).cloned()
    }
}
