//! Test helpers shared by the crates' integration tests, as a dev-dependency: the repository's
//! fixtures and the pinned real-data fetch ([`real_data`]), real faces for the real checks
//! ([`real_faces`], feature `real-faces`) and the smallest training run ([`tiny_training`],
//! feature `training`) and a throwaway PostgreSQL server ([`postgres`], feature `postgres`).

pub mod net;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod real_data;
#[cfg(feature = "real-faces")]
pub mod real_faces;
#[cfg(feature = "training")]
pub mod tiny_training;

pub use real_data::{fixture, read_json, real_data, reference_python, repo_root};
