//! Checkpoint directories: every file written into a temporary directory, fsynced, listed with
//! its size and CRC-32 in `manifest.json`, and the directory renamed into place, so a crash at
//! any moment leaves either the whole checkpoint or none of it. Loading re-checks every file.
//!
//! Layout: `checkpoints/step-000200/{manifest.json, ...}` for the last `keep_last` steps, the
//! best one kept beside them, named by `checkpoints/best.json`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint that fails its checks.
    #[error("{path}: corrupt checkpoint: {reason}")]
    Corrupt {
        /// The checkpoint.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The run folder has no intact checkpoint.
    #[error("{0}: no checkpoint to resume from")]
    None(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

const MANIFEST: &str = "manifest.json";
const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    step: u64,
    files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileEntry {
    bytes: u64,
    crc32: u32,
}

/// Which checkpoint is the best so far, by the metric early stopping watches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BestMarker {
    /// The best checkpoint's step.
    pub step: u64,
    /// Its metric.
    pub metric: f64,
}

/// A checkpoint read back and verified: its files by name.
#[derive(Debug)]
pub struct Checkpoint {
    /// The step it was written after.
    pub step: u64,
    /// Its folder.
    pub dir: PathBuf,
    /// Its files' contents, by name.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Checkpoint {
    /// A file's bytes, or a clear error when the checkpoint lacks it.
    pub fn take(&mut self, name: &str) -> Result<Vec<u8>, CheckpointError> {
        self.files
            .remove(name)
            .ok_or_else(|| CheckpointError::Corrupt {
                path: self.dir.clone(),
                reason: format!("no {name}"),
            })
    }
}

/// Writes, prunes and finds the checkpoints of one run.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    dir: PathBuf,
    keep_last: usize,
}

/// Writes `bytes` to `path` and flushes them to the disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let mut file = File::create(path).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// Makes a rename inside `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    atomic_file::sync_dir(dir).map_err(io(dir))
}

/// Writes `bytes` to `path` atomically and durably (`atomic_file`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    atomic_file::write(path, bytes).map_err(io(path))
}

impl Checkpointer {
    /// Checkpoints under `run_dir/checkpoints`, keeping the last `keep_last` (at least 1) and
    /// the best. Leftovers of an interrupted write are removed.
    pub fn new(run_dir: &Path, keep_last: usize) -> Result<Self, CheckpointError> {
        let dir = run_dir.join("checkpoints");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
            {
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        Ok(Self {
            dir,
            keep_last: keep_last.max(1),
        })
    }

    /// The run's checkpoint folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn step_dir(&self, step: u64) -> PathBuf {
        self.dir.join(format!("step-{step:06}"))
    }

    /// Writes the checkpoint of `step` from named files; `best` (if given) becomes the best
    /// marker. Older checkpoints beyond `keep_last`, other than the best, are removed after.
    pub fn write<N: AsRef<str>>(
        &self,
        step: u64,
        files: &[(N, Vec<u8>)],
        best: Option<BestMarker>,
    ) -> Result<PathBuf, CheckpointError> {
        let final_dir = self.step_dir(step);
        let tmp = self.dir.join(format!(".tmp-step-{step:06}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let mut manifest = Manifest {
            format: FORMAT,
            step,
            files: BTreeMap::new(),
        };
        for (name, bytes) in files {
            let name = name.as_ref();
            write_synced(&tmp.join(name), bytes)?;
            manifest.files.insert(
                name.to_string(),
                FileEntry {
                    bytes: bytes.len() as u64,
                    crc32: crc32fast::hash(bytes),
                },
            );
        }
        let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("serialisable");
        write_synced(&tmp.join(MANIFEST), &manifest_bytes)?;
        sync_dir(&tmp)?;
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
        sync_dir(&self.dir)?;
        if let Some(best) = best {
            let marker = serde_json::to_vec(&best).expect("serialisable");
            write_atomic(&self.dir.join("best.json"), &marker)?;
        }
        self.prune()?;
        Ok(final_dir)
    }

    /// The best marker, if any.
    pub fn best(&self) -> Option<BestMarker> {
        let bytes = std::fs::read(self.dir.join("best.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Steps that have a checkpoint directory, oldest first.
    pub fn steps(&self) -> Result<Vec<u64>, CheckpointError> {
        let mut steps = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let name = entry.map_err(io(&self.dir))?.file_name();
            if let Some(step) = name
                .to_string_lossy()
                .strip_prefix("step-")
                .and_then(|s| s.parse::<u64>().ok())
            {
                steps.push(step);
            }
        }
        steps.sort_unstable();
        Ok(steps)
    }

    fn prune(&self) -> Result<(), CheckpointError> {
        let steps = self.steps()?;
        let best = self.best().map(|b| b.step);
        let keep_from = steps.len().saturating_sub(self.keep_last);
        for &step in &steps[..keep_from] {
            if Some(step) != best {
                let dir = self.step_dir(step);
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
        }
        Ok(())
    }

    /// Reads and verifies the checkpoint of `step`.
    pub fn load(&self, step: u64) -> Result<Checkpoint, CheckpointError> {
        let dir = self.step_dir(step);
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: dir.clone(),
            reason,
        };
        let manifest_path = dir.join(MANIFEST);
        let manifest: Manifest =
            serde_json::from_slice(&std::fs::read(&manifest_path).map_err(io(&manifest_path))?)
                .map_err(|e| corrupt(format!("manifest: {e}")))?;
        if manifest.format != FORMAT || manifest.step != step {
            return Err(corrupt(format!(
                "manifest says format {} step {}",
                manifest.format, manifest.step
            )));
        }
        let mut files = BTreeMap::new();
        for (name, entry) in &manifest.files {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            if bytes.len() as u64 != entry.bytes {
                return Err(corrupt(format!(
                    "{name} has {} bytes, the manifest says {}",
                    bytes.len(),
                    entry.bytes
                )));
            }
            if crc32fast::hash(&bytes) != entry.crc32 {
                return Err(corrupt(format!("{name} fails its CRC-32")));
            }
            files.insert(name.clone(), bytes);
        }
        Ok(Checkpoint { step, dir, files })
    }

    /// The newest checkpoint that verifies; a corrupt newer one is reported and skipped.
    pub fn latest(&self) -> Result<Checkpoint, CheckpointError> {
        for &step in self.steps()?.iter().rev() {
            match self.load(step) {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!("skipping checkpoint: {e}"),
            }
        }
        Err(CheckpointError::None(self.dir.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_n_and_the_best_and_verifies_on_load() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Checkpointer::new(tmp.path(), 2).unwrap();
        for step in 1..=5u64 {
            let best = (step == 2).then_some(BestMarker { step, metric: 0.9 });
            c.write(step, &[("a.bin", vec![step as u8; 100])], best)
                .unwrap();
        }
        assert_eq!(c.steps().unwrap(), vec![2, 4, 5]);
        assert_eq!(c.best().unwrap().step, 2);
        let mut latest = c.latest().unwrap();
        assert_eq!(latest.step, 5);
        assert_eq!(latest.take("a.bin").unwrap(), vec![5u8; 100]);
        assert!(latest.take("b.bin").is_err());

        // A flipped byte in the newest: it is refused, and the one before is used.
        let file = tmp.path().join("checkpoints/step-000005/a.bin");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        assert!(c.load(5).unwrap_err().to_string().contains("CRC-32"));
        assert_eq!(c.latest().unwrap().step, 4);
        // Truncated: refused by its size.
        std::fs::write(tmp.path().join("checkpoints/step-000004/a.bin"), [4u8; 50]).unwrap();
        assert!(c.load(4).unwrap_err().to_string().contains("50 bytes"));
        assert_eq!(c.latest().unwrap().step, 2);
    }

    #[test]
    fn an_interrupted_write_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("checkpoints/.tmp-step-000007");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.bin"), [1, 2, 3]).unwrap();
        let c = Checkpointer::new(tmp.path(), 3).unwrap();
        assert!(!dir.exists());
        assert!(c.steps().unwrap().is_empty());
        assert!(matches!(c.latest(), Err(CheckpointError::None(_))));
    }
}
