/// Why a gallery operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("embedding has {got} values, the gallery holds {expected}-dimensional ones")]
    Dimension { got: usize, expected: usize },
    #[error("embedding is not usable: {0}")]
    BadEmbedding(&'static str),
    #[error("id {0} is already in the index")]
    DuplicateId(i64),
    #[error("the {0:?} kernels need CPU features this machine lacks")]
    Unsupported(crate::Kernels),
    #[error("bad index settings: {0}")]
    Config(String),
    #[error("gallery database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("gallery database {path}: {reason}")]
    Corrupt { path: String, reason: String },
}
