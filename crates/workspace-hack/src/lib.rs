//! Feature pins for the workspace's binaries; no code (see `Cargo.toml`).
