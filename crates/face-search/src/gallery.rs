//! A persistent gallery: (identity, optional metadata, embedding) rows in SQLite, searched
//! through an in-memory index rebuilt from the database when the gallery is opened.
//!
//! Every enrolment and deletion is one SQLite transaction in WAL mode with `synchronous=FULL`:
//! once `enroll` returns, the row is on disk and survives the process being killed (tested
//! with SIGKILL). Searches take a read lock on the index only, so they continue while other
//! threads write to the database; the index is locked for writing just long enough to add or
//! remove a row.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::flat::{normalized, FlatIndex, Precision};
use crate::ivf::{IvfConfig, IvfIndex};
use crate::topk::Hit;
use crate::SearchError;

/// The database layout this code writes and reads.
const FORMAT: &str = "arcface-rs gallery 1";

/// Which in-memory index serves searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum IndexKind {
    /// Every row scored: exact, and fast enough well past a million rows in int8 or f16.
    #[default]
    Exact,
    /// IVF cells, trained from the stored rows when the gallery is opened (exact search is used
    /// until there are 8 rows per cell to train on).
    Ivf(IvfConfig),
}

/// How a gallery is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GalleryConfig {
    /// Embedding length; a gallery keeps the one it was created with.
    pub dim: usize,
    /// How the in-memory index stores embeddings (the database always keeps f32).
    pub precision: Precision,
    /// Exact (flat) or IVF search.
    pub index: IndexKind,
}

impl GalleryConfig {
    /// Settings for `dim`-value embeddings: f32, exact search.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            precision: Precision::F32,
            index: IndexKind::Exact,
        }
    }
}

/// One search result with its gallery entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Match {
    /// The enrolled face's id.
    pub face_id: i64,
    /// Whose face it is.
    pub identity: String,
    /// What was stored with it.
    pub metadata: Option<String>,
    /// Cosine similarity to the query.
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq)]
struct Label {
    identity: String,
    metadata: Option<String>,
}

enum Index {
    Exact(FlatIndex),
    Ivf(IvfIndex),
}

impl Index {
    fn add(&mut self, id: i64, v: &[f32]) -> Result<(), SearchError> {
        match self {
            Index::Exact(i) => i.add(id, v),
            Index::Ivf(i) => i.add(id, v),
        }
    }
    fn remove(&mut self, id: i64) -> bool {
        match self {
            Index::Exact(i) => i.remove(id),
            Index::Ivf(i) => i.remove(id),
        }
    }
    fn search_batch(&self, queries: &[&[f32]], k: usize) -> Result<Vec<Vec<Hit>>, SearchError> {
        match self {
            Index::Exact(i) => i.search_batch(queries, k),
            Index::Ivf(i) => i.search_batch(queries, k),
        }
    }
}

struct State {
    index: Index,
    labels: HashMap<i64, Label>,
}

/// The gallery. `Sync`: share it between threads (an `Arc`), every method takes `&self`.
pub struct Gallery {
    path: PathBuf,
    config: GalleryConfig,
    db: Mutex<Connection>,
    state: RwLock<State>,
}

impl Gallery {
    /// Opens the gallery at `path`, creating it if missing, checks the database and every
    /// stored row, and builds the index.
    pub fn open(path: impl AsRef<Path>, config: GalleryConfig) -> Result<Self, SearchError> {
        let path = path.as_ref().to_path_buf();
        if config.dim == 0 {
            return Err(SearchError::Config("embedding dimension 0".into()));
        }
        let corrupt = |reason: String| SearchError::Corrupt {
            path: path.display().to_string(),
            reason,
        };
        let db = Connection::open(&path)?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        // A 512-d row is a 2 KiB blob: SQLite's default 4 KiB pages hold one row each (half the
        // file empty, measured: 4.1 GB for a million rows), 16 KiB pages hold seven. Takes
        // effect when the database is created (before WAL mode is set); a no-op after.
        db.execute_batch("PRAGMA page_size=16384")?;
        let mode: String = db.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(corrupt(format!("journal mode {mode}, WAL needed")));
        }
        db.execute_batch(
            "PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS faces (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 identity TEXT NOT NULL,
                 metadata TEXT,
                 embedding BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS faces_identity ON faces(identity);",
        )?;
        let check: String = db.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(corrupt(format!("integrity check: {check}")));
        }
        let meta = |key: &str| -> Result<Option<String>, SearchError> {
            Ok(db
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?)
        };
        match (meta("format")?, meta("dim")?) {
            (None, None) => {
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('format', ?1), ('dim', ?2)",
                    params![FORMAT, config.dim.to_string()],
                )?;
            }
            (Some(format), Some(dim)) => {
                if format != FORMAT {
                    return Err(corrupt(format!("format {format:?}, expected {FORMAT:?}")));
                }
                if dim != config.dim.to_string() {
                    return Err(SearchError::Config(format!(
                        "{} holds {dim}-dimensional embeddings, {} asked for",
                        path.display(),
                        config.dim
                    )));
                }
            }
            _ => return Err(corrupt("incomplete meta table".into())),
        }
        let rows = load_rows(&db, config.dim, &path)?;
        let count = rows.len();
        let index = build_index(&config, &rows)?;
        let labels = rows.into_iter().map(|(id, label, _)| (id, label)).collect();
        tracing::info!(path = %path.display(), rows = count, "gallery opened");
        Ok(Self {
            path,
            config,
            db: Mutex::new(db),
            state: RwLock::new(State { index, labels }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings it runs with.
    pub fn config(&self) -> GalleryConfig {
        self.config
    }

    /// Faces enrolled.
    pub fn len(&self) -> usize {
        self.read().labels.len()
    }

    /// Whether no face is enrolled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores one face and returns its id; durable when this returns.
    pub fn enroll(
        &self,
        identity: &str,
        metadata: Option<&str>,
        embedding: &[f32],
    ) -> Result<i64, SearchError> {
        Ok(self.enroll_many(&[(identity, metadata, embedding)])?[0])
    }

    /// Stores many faces in one transaction (bulk import: one disk sync for all of them);
    /// returns their ids in order. Nothing is stored if any embedding is refused.
    pub fn enroll_many(
        &self,
        faces: &[(&str, Option<&str>, &[f32])],
    ) -> Result<Vec<i64>, SearchError> {
        let checked: Vec<Vec<f32>> = faces
            .iter()
            .map(|(identity, _, e)| {
                if identity.is_empty() {
                    return Err(SearchError::Config("empty identity".into()));
                }
                normalized(e, self.config.dim)
            })
            .collect::<Result<_, _>>()?;
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ids = Vec::with_capacity(faces.len());
        {
            let mut insert = tx
                .prepare("INSERT INTO faces (identity, metadata, embedding) VALUES (?1, ?2, ?3)")?;
            for ((identity, metadata, _), v) in faces.iter().zip(&checked) {
                let blob: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                insert.execute(params![identity, metadata, blob])?;
                ids.push(tx.last_insert_rowid());
            }
        }
        tx.commit()?;
        let mut state = self.write();
        for (((identity, metadata, _), v), id) in faces.iter().zip(&checked).zip(&ids) {
            state.index.add(*id, v)?;
            state.labels.insert(
                *id,
                Label {
                    identity: identity.to_string(),
                    metadata: metadata.map(str::to_string),
                },
            );
        }
        Ok(ids)
    }

    /// Deletes one face; false if there was none with this id.
    pub fn delete(&self, face_id: i64) -> Result<bool, SearchError> {
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let n = db.execute("DELETE FROM faces WHERE id = ?1", [face_id])?;
        let mut state = self.write();
        state.index.remove(face_id);
        state.labels.remove(&face_id);
        Ok(n > 0)
    }

    /// Deletes every face of `identity` in one transaction; returns how many.
    pub fn delete_identity(&self, identity: &str) -> Result<usize, SearchError> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<i64> = tx
            .prepare("SELECT id FROM faces WHERE identity = ?1")?
            .query_map([identity], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        tx.execute("DELETE FROM faces WHERE identity = ?1", [identity])?;
        tx.commit()?;
        let mut state = self.write();
        for id in &ids {
            state.index.remove(*id);
            state.labels.remove(id);
        }
        Ok(ids.len())
    }

    /// The `k` most similar faces, best first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Match>, SearchError> {
        Ok(self.search_batch(&[query], k)?.pop().unwrap_or_default())
    }

    /// [`Gallery::search`] for several queries in one pass over the index.
    pub fn search_batch(
        &self,
        queries: &[&[f32]],
        k: usize,
    ) -> Result<Vec<Vec<Match>>, SearchError> {
        let state = self.read();
        let hits = state.index.search_batch(queries, k)?;
        Ok(hits
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .filter_map(|h| {
                        state.labels.get(&h.id).map(|l| Match {
                            face_id: h.id,
                            identity: l.identity.clone(),
                            metadata: l.metadata.clone(),
                            score: h.score,
                        })
                    })
                    .collect()
            })
            .collect())
    }

    /// Rebuilds the in-memory index from the database (after many enrolments, to retrain IVF
    /// cells).
    pub fn rebuild_index(&self) -> Result<(), SearchError> {
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let rows = load_rows(&db, self.config.dim, &self.path)?;
        let index = build_index(&self.config, &rows)?;
        let labels = rows.into_iter().map(|(id, l, _)| (id, l)).collect();
        *self.write() = State { index, labels };
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

type Row = (i64, Label, Vec<f32>);

/// Every stored face, each embedding checked (length, finite values); a damaged row is a
/// [`SearchError::Corrupt`] naming it.
fn load_rows(db: &Connection, dim: usize, path: &Path) -> Result<Vec<Row>, SearchError> {
    let corrupt = |reason: String| SearchError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    let mut stmt = db.prepare("SELECT id, identity, metadata, embedding FROM faces ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let blob: Vec<u8> = row.get(3)?;
        if blob.len() != dim * 4 {
            return Err(corrupt(format!(
                "face {id}: embedding of {} bytes, {} expected",
                blob.len(),
                dim * 4
            )));
        }
        let v: Vec<f32> = blob
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if !v.iter().all(|x| x.is_finite()) {
            return Err(corrupt(format!("face {id}: non-finite embedding value")));
        }
        let label = Label {
            identity: row.get(1)?,
            metadata: row.get(2)?,
        };
        out.push((id, label, v));
    }
    Ok(out)
}

fn build_index(config: &GalleryConfig, rows: &[Row]) -> Result<Index, SearchError> {
    let mut index = match config.index {
        IndexKind::Ivf(ivf) if rows.len() >= 8 * ivf.nlist => {
            // Train on up to 64 rows per cell, spread over the gallery.
            let step = (rows.len() / (64 * ivf.nlist)).max(1);
            let sample: Vec<Vec<f32>> = rows.iter().step_by(step).map(|r| r.2.clone()).collect();
            Index::Ivf(IvfIndex::train(config.dim, config.precision, &sample, ivf)?)
        }
        IndexKind::Ivf(ivf) => {
            tracing::warn!(
                rows = rows.len(),
                nlist = ivf.nlist,
                "too few rows to train IVF cells; searching exactly"
            );
            Index::Exact(FlatIndex::new(config.dim, config.precision))
        }
        IndexKind::Exact => {
            let mut flat = FlatIndex::new(config.dim, config.precision);
            flat.reserve(rows.len());
            Index::Exact(flat)
        }
    };
    for (id, _, v) in rows {
        index.add(*id, v)?;
    }
    Ok(index)
}
