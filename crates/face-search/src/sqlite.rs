//! The embedded gallery store: one SQLite file in WAL mode with `synchronous=FULL`, every
//! enrolment and deletion one transaction (durable when it returns; tested with SIGKILL).

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::gallery::{
    check_meta, decode_embedding, encode_embedding, ChangeFeed, FaceSink, GalleryStore, StoredFace,
    FORMAT,
};
use crate::SearchError;

/// A gallery in one SQLite file, created when missing.
pub struct SqliteStore {
    path: PathBuf,
    db: Connection,
}

impl SqliteStore {
    /// Opens (or creates) the database at `path` and checks its integrity.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SearchError> {
        let path = path.as_ref().to_path_buf();
        let db = Connection::open(&path)?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        // A 512-d row is a 2 KiB blob: SQLite's default 4 KiB pages hold one row each (half the
        // file empty, measured: 4.1 GB for a million rows), 16 KiB pages hold seven. Takes
        // effect when the database is created (before WAL mode is set); a no-op after.
        db.execute_batch("PRAGMA page_size=16384")?;
        let mode: String = db.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        let store = Self { path, db };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(store.corrupt(format!("journal mode {mode}, WAL needed")));
        }
        Ok(store)
    }

    fn corrupt(&self, reason: String) -> SearchError {
        SearchError::Corrupt {
            path: self.path.display().to_string(),
            reason,
        }
    }
}

impl GalleryStore for SqliteStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn prepare(&mut self, dim: usize) -> Result<(), SearchError> {
        let db = &self.db;
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
            return Err(self.corrupt(format!("integrity check: {check}")));
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
                    params![FORMAT, dim.to_string()],
                )?;
                Ok(())
            }
            (Some(format), Some(stored)) => check_meta(&format, &stored, dim, &self.location()),
            _ => Err(self.corrupt("incomplete meta table".into())),
        }
    }

    fn load(
        &mut self,
        dim: usize,
        _follow: bool,
        sink: &mut dyn FaceSink,
    ) -> Result<Option<Box<dyn ChangeFeed>>, SearchError> {
        let count: i64 = self
            .db
            .query_row("SELECT COUNT(*) FROM faces", [], |r| r.get(0))?;
        sink.expect(count.max(0) as usize);
        let mut stmt =
            (self.db).prepare("SELECT id, identity, metadata, embedding FROM faces ORDER BY id")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let blob: Vec<u8> = row.get(3)?;
            let embedding =
                decode_embedding(&blob, dim).map_err(|reason| SearchError::Corrupt {
                    path: self.path.display().to_string(),
                    reason: format!("face {id}: {reason}"),
                })?;
            sink.push(StoredFace {
                id,
                identity: row.get(1)?,
                metadata: row.get(2)?,
                embedding,
            })?;
        }
        Ok(None)
    }

    fn insert(&mut self, faces: &[(&str, Option<&str>, &[f32])]) -> Result<Vec<i64>, SearchError> {
        let tx = (self.db).transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ids = Vec::with_capacity(faces.len());
        {
            let mut insert = tx
                .prepare("INSERT INTO faces (identity, metadata, embedding) VALUES (?1, ?2, ?3)")?;
            for (identity, metadata, v) in faces {
                insert.execute(params![identity, metadata, encode_embedding(v)])?;
                ids.push(tx.last_insert_rowid());
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    fn delete(&mut self, face_id: i64) -> Result<bool, SearchError> {
        Ok(self
            .db
            .execute("DELETE FROM faces WHERE id = ?1", [face_id])?
            > 0)
    }

    fn delete_identity(&mut self, identity: &str) -> Result<Vec<i64>, SearchError> {
        let tx = (self.db).transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<i64> = tx
            .prepare("SELECT id FROM faces WHERE identity = ?1")?
            .query_map([identity], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        tx.execute("DELETE FROM faces WHERE identity = ?1", [identity])?;
        tx.commit()?;
        Ok(ids)
    }
}
