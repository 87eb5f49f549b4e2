//! Files that matter (models, checkpoints, datasets, reports, plots) are written so that a
//! reader, or the next run after a crash or a kill, sees the old file or the whole new one and
//! never a part: the bytes go to a temporary file beside the target (same folder, so the rename
//! cannot cross file systems), which is fsynced, renamed over the target, and the folder is
//! fsynced so the rename itself survives a power cut. A writer dropped before
//! [`AtomicFile::commit`] removes its temporary file.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! atomic_file::write(&dir.path().join("report.json"), b"{}").unwrap();
//! ```
//!
//! Tests kill writers half-way with `ARCFACE_ABORT_WRITING=SUFFIX[:N]`: the process aborts (as a
//! SIGKILL would stop it) once the temporary file of a target whose name ends with `SUFFIX` has
//! received more than `N` bytes (default 0: after the first half of a [`write`]).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Writes `bytes` to `path` atomically and durably.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(path)?;
    // In two halves, so the failpoint can stop a writer in the middle of a file.
    let (first, second) = bytes.split_at(bytes.len() / 2);
    file.write_all(first)?;
    file.write_all(second)?;
    file.commit()
}

/// A file being written; it replaces its target only on [`commit`](Self::commit).
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    written: u64,
}

impl AtomicFile {
    /// Starts writing what will become `path` (its folder must exist).
    pub fn create(path: &Path) -> io::Result<Self> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let file = File::create(&tmp)?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            written: 0,
        })
    }

    /// The file this one will replace.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes and fsyncs the bytes, renames them over the target and fsyncs the folder.
    pub fn commit(mut self) -> io::Result<()> {
        let out = self.out.take().expect("not yet committed");
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path)?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(dir)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.as_mut().expect("not yet committed").write(buf)?;
        self.written += n as u64;
        if abort_after(&self.path).is_some_and(|limit| self.written > limit) {
            // The failpoint tests use: stop as a kill would, with the temporary half written.
            let _ = self.out.as_mut().map(BufWriter::flush);
            std::process::abort();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().expect("not yet committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Makes renames into (and files created in) the folder `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The failpoint's byte limit for `path`, when `ARCFACE_ABORT_WRITING` names it.
fn abort_after(path: &Path) -> Option<u64> {
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    let spec = SPEC.get_or_init(|| {
        let value = std::env::var("ARCFACE_ABORT_WRITING").ok()?;
        let counted = value
            .rsplit_once(':')
            .and_then(|(suffix, n)| Some((suffix, n.parse().ok()?)));
        Some(match counted {
            Some((suffix, n)) => (suffix.to_string(), n),
            None => (value, 0),
        })
    });
    let (suffix, limit) = spec.as_ref()?;
    let name = path.file_name()?.to_string_lossy();
    name.ends_with(suffix.as_str()).then_some(*limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_whole_file_or_leaves_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        write(&path, b"old").unwrap();
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"new, longer contents").unwrap();
        // Before the commit the target is untouched; dropping the writer abandons it.
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "the temporary file is removed");
        write(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        assert!(AtomicFile::create(Path::new("/")).is_err());
    }
}
