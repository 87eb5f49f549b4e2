/// Why a gallery operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The embedding's size is not the gallery's.
    #[error("embedding has {got} values, the gallery holds {expected}-dimensional ones")]
    Dimension {
        /// Its size.
        got: usize,
        /// The gallery's.
        expected: usize,
    },
    /// The embedding has NaN, infinite or only zero values.
    #[error("embedding is not usable: {0}")]
    BadEmbedding(&'static str),
    /// Enrolling an id the index already holds.
    #[error("id {0} is already in the index")]
    DuplicateId(i64),
    /// Kernels asked for that this CPU cannot run.
    #[error("the {0:?} kernels need CPU features this machine lacks")]
    Unsupported(crate::Kernels),
    /// Index settings out of range.
    #[error("bad index settings: {0}")]
    Config(String),
    /// The SQLite gallery failed.
    #[error("gallery database: {0}")]
    Database(#[from] rusqlite::Error),
    /// The PostgreSQL gallery failed (or its server could not be reached).
    #[error("gallery database {location}: {source}")]
    Postgres {
        /// The database's URL, without its password.
        location: String,
        /// The cause.
        #[source]
        source: postgres::Error,
    },
    /// The database holds what a gallery cannot (wrong schema, bad rows).
    #[error("gallery database {path}: {reason}")]
    Corrupt {
        /// The database file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}
