//! 1:N face search.
//!
//! - [`FlatIndex`]: exact top-k by inner product over normalized embeddings stored as f32, f16
//!   or int8, or 4-bit codes with an exact f16 rerank ([`Precision`]); SIMD kernels chosen at run
//!   time ([`Kernels`]), rayon threads, batched queries sharing one pass over the gallery as
//!   matrix products (f32/f16) or register tiles (int8).
//! - [`IvfIndex`]: approximate search over k-means cells, for galleries past a few million.
//! - [`Gallery`]: identities and metadata in a [`GalleryStore`] (SQLite embedded, or PostgreSQL
//!   shared by service replicas that follow each other's changes), durable enrolment and
//!   deletion, the index rebuilt at open; concurrent searches during writes.

mod error;
pub mod flat;
pub mod gallery;
pub mod ivf;
pub mod kernels;
pub mod postgres;
pub mod sqlite;
pub mod topk;

pub use error::SearchError;
pub use flat::{normalized, FlatIndex, Precision};
pub use gallery::{
    Change, ChangeFeed, FaceSink, Gallery, GalleryConfig, GalleryStore, IndexKind, Match,
    StoredFace,
};
pub use ivf::{IvfConfig, IvfIndex};
pub use kernels::Kernels;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use topk::{Hit, TopK};
