//! One model loader for every command and the service: a file is recognised by its first bytes
//! (not its name) and turned into an [`Embedder`], so anything that embeds faces takes every
//! format the project writes: `.arcface` (Burn, f32 or f16, from `arcface train` or
//! `arcface import`) and `.aq8` (int8, from `arcface quantize`).
//!
//! ```no_run
//! let device = Default::default();
//! let model = face_models::load_embedder::<burn::backend::Flex>("m.aq8".as_ref(), &device)?;
//! println!("{}-d embeddings", model.embedding_dim());
//! # Ok::<(), face_models::LoadError>(())
//! ```

pub mod cache;
#[cfg(feature = "fetch")]
pub mod fetch;

use std::io::Read;
use std::path::{Path, PathBuf};

use eval::{BurnEmbedder, Embedder};

/// The model formats, by signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// `ARCFRSM1` (`iresnet::record::MAGIC`): a Burn backbone with its architecture in the header.
    Arcface,
    /// `ARCFQ8\r\n` (`quantize::MAGIC`): a BatchNorm-folded int8 graph for the CPU engine.
    Aq8,
}

impl ModelFormat {
    const SIGNATURES: [(&'static [u8; 8], ModelFormat); 2] = [
        (iresnet::record::MAGIC, ModelFormat::Arcface),
        (quantize::MAGIC, ModelFormat::Aq8),
    ];

    /// The format of `path`, read off its first eight bytes.
    pub fn of(path: &Path) -> Result<Self, LoadError> {
        let mut head = [0u8; 8];
        let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
        if let Err(source) = read {
            return Err(match source.kind() {
                std::io::ErrorKind::UnexpectedEof => LoadError::Unknown(path.to_path_buf()),
                _ => LoadError::Io {
                    path: path.to_path_buf(),
                    source,
                },
            });
        }
        Self::SIGNATURES
            .iter()
            .find(|(signature, _)| **signature == head)
            .map(|(_, format)| *format)
            .ok_or_else(|| LoadError::Unknown(path.to_path_buf()))
    }
}

/// Why a model file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file's signature is no format this loader knows.
    #[error("{0}: not a model file arcface-rs reads (.arcface from `arcface train`/`arcface import`, .aq8 from `arcface quantize`); an ONNX or PyTorch file needs `arcface import` first")]
    Unknown(PathBuf),
    /// An `.arcface` file that does not load (damaged, truncated, unknown architecture).
    #[error(transparent)]
    Arcface(#[from] iresnet::BackboneError),
    /// An `.aq8` file that does not load.
    #[error(transparent)]
    Aq8(#[from] quantize::ModelError),
    /// No path was given and the cache has no model.
    #[error(transparent)]
    Missing(#[from] cache::Missing),
}

/// `path` as an embedder: `.aq8` on the int8 CPU engine, `.arcface` on Burn's backend `B`.
pub fn load_embedder<B: iresnet::ConvBackend>(
    path: &Path,
    device: &B::Device,
) -> Result<Box<dyn Embedder + Send>, LoadError> {
    match ModelFormat::of(path)? {
        ModelFormat::Aq8 => {
            let model = quantize::QuantizedModel::load(path)?;
            Ok(Box::new(model.engine()?))
        }
        ModelFormat::Arcface => {
            let (backbone, _) = iresnet::record::load_model::<B>(path, device)?;
            Ok(Box::new(BurnEmbedder::new(backbone, device.clone())))
        }
    }
}
