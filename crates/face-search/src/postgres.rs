//! A gallery store on PostgreSQL, shared by service replicas: faces in `arcface_faces`, and
//! every enrolment and deletion logged in `arcface_changes` under a sequence number in the same
//! transaction, with a `NOTIFY` on commit. A replica loads every face and the newest sequence in
//! one snapshot, then follows the log from there ([`ChangeFeed`]): woken by the notification,
//! and polling every quarter second in case one is lost; after a lost connection it reconnects
//! and reads what it missed from the log. Writers take one transaction-level advisory lock, so
//! sequence numbers are assigned in commit order and a follower never skips a late commit.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, IsolationLevel, NoTls};

use crate::gallery::{
    check_meta, decode_embedding, encode_embedding, Change, ChangeFeed, FaceSink, GalleryStore,
    StoredFace, FORMAT,
};
use crate::SearchError;

/// The channel replicas listen on.
const CHANNEL: &str = "arcface_gallery";
/// The advisory lock every writing transaction holds until it commits.
const WRITE_LOCK: i64 = 0x6172_6366_6163_6531;
/// Changes read per query while catching up.
const BATCH: i64 = 10_000;

/// A gallery in a PostgreSQL database (`postgres://user@host:port/db`), which any number of
/// galleries (service replicas) may share. It reconnects by itself after the server restarts:
/// the call that met the broken connection fails (nothing acknowledged is lost), the next one
/// connects again.
pub struct PgStore {
    url: String,
    shown: String,
    client: Option<Client>,
}

impl PgStore {
    /// Connects to the database at `url`.
    pub fn connect(url: &str) -> Result<Self, SearchError> {
        let mut store = Self {
            url: url.to_string(),
            shown: without_password(url),
            client: None,
        };
        store.client()?;
        Ok(store)
    }

    fn client(&mut self) -> Result<&mut Client, SearchError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(connect(&self.url, &self.shown)?);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Runs `write` in one transaction holding the writers' lock, then notifies the replicas.
    fn write<T>(
        &mut self,
        write: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, postgres::Error>,
    ) -> Result<T, SearchError> {
        let shown = self.shown.clone();
        let client = self.client()?;
        let result = (|| {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
            let value = write(&mut tx)?;
            tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])?;
            tx.commit()?;
            Ok(value)
        })();
        result.map_err(|e| pg_error(&shown, e))
    }
}

impl GalleryStore for PgStore {
    fn location(&self) -> String {
        self.shown.clone()
    }

    fn prepare(&mut self, dim: usize) -> Result<(), SearchError> {
        let shown = self.shown.clone();
        let (format, stored) = self.write(|tx| {
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS arcface_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS arcface_faces (
                     id BIGSERIAL PRIMARY KEY,
                     identity TEXT NOT NULL,
                     metadata TEXT,
                     embedding BYTEA NOT NULL);
                 CREATE INDEX IF NOT EXISTS arcface_faces_identity ON arcface_faces(identity);
                 CREATE TABLE IF NOT EXISTS arcface_changes (
                     seq BIGSERIAL PRIMARY KEY,
                     face_id BIGINT NOT NULL,
                     enrolled BOOLEAN NOT NULL);",
            )?;
            let meta = |tx: &mut postgres::Transaction<'_>, key: &str| {
                let row = tx.query_opt("SELECT value FROM arcface_meta WHERE key = $1", &[&key])?;
                Ok::<_, postgres::Error>(row.map(|r| r.get::<_, String>(0)))
            };
            let (format, stored) = (meta(tx, "format")?, meta(tx, "dim")?);
            if format.is_none() && stored.is_none() {
                tx.execute(
                    "INSERT INTO arcface_meta (key, value) VALUES ('format', $1), ('dim', $2)",
                    &[&FORMAT, &dim.to_string()],
                )?;
            }
            Ok((format, stored))
        })?;
        match (format, stored) {
            (None, None) => Ok(()),
            (Some(format), Some(stored)) => check_meta(&format, &stored, dim, &shown),
            _ => Err(SearchError::Corrupt {
                path: shown,
                reason: "incomplete arcface_meta table".into(),
            }),
        }
    }

    fn load(
        &mut self,
        dim: usize,
        follow: bool,
        sink: &mut dyn FaceSink,
    ) -> Result<Option<Box<dyn ChangeFeed>>, SearchError> {
        // The feed listens before the snapshot is taken.
        let mut feed = match follow {
            true => Some(PgFeed::connect(&self.url, &self.shown, dim)?),
            false => None,
        };
        let shown = self.shown.clone();
        let client = self.client()?;
        let pg = |e| pg_error(&shown, e);
        let mut tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg)?;
        let counts = tx
            .query_one(
                "SELECT COALESCE((SELECT MAX(seq) FROM arcface_changes), 0), (SELECT COUNT(*) FROM arcface_faces)",
                &[],
            )
            .map_err(pg)?;
        let (seq, count): (i64, i64) = (counts.get(0), counts.get(1));
        sink.expect(count.max(0) as usize);
        // Streamed: rows are decoded into the sink as they arrive, never all held.
        let no_params: [&(dyn postgres::types::ToSql + Sync); 0] = [];
        let mut rows = tx
            .query_raw(
                "SELECT id, identity, metadata, embedding FROM arcface_faces ORDER BY id",
                no_params,
            )
            .map_err(pg)?;
        while let Some(row) = rows.next().map_err(pg)? {
            sink.push(face(&row, 0, dim, &shown)?)?;
        }
        drop(rows);
        tx.commit().map_err(pg)?;
        if let Some(feed) = feed.as_mut() {
            feed.seq = seq;
        }
        Ok(feed.map(|f| Box::new(f) as Box<dyn ChangeFeed>))
    }

    fn insert(&mut self, faces: &[(&str, Option<&str>, &[f32])]) -> Result<Vec<i64>, SearchError> {
        self.write(|tx| {
            let insert = tx.prepare(
                "INSERT INTO arcface_faces (identity, metadata, embedding) VALUES ($1, $2, $3) RETURNING id",
            )?;
            let log = tx.prepare("INSERT INTO arcface_changes (face_id, enrolled) VALUES ($1, TRUE)")?;
            let mut ids = Vec::with_capacity(faces.len());
            for (identity, metadata, v) in faces {
                let bytes = encode_embedding(v);
                let id: i64 = tx.query_one(&insert, &[identity, metadata, &bytes])?.get(0);
                tx.execute(&log, &[&id])?;
                ids.push(id);
            }
            Ok(ids)
        })
    }

    fn delete(&mut self, face_id: i64) -> Result<bool, SearchError> {
        self.write(|tx| {
            let n = tx.execute("DELETE FROM arcface_faces WHERE id = $1", &[&face_id])?;
            if n > 0 {
                tx.execute(
                    "INSERT INTO arcface_changes (face_id, enrolled) VALUES ($1, FALSE)",
                    &[&face_id],
                )?;
            }
            Ok(n > 0)
        })
    }

    fn delete_identity(&mut self, identity: &str) -> Result<Vec<i64>, SearchError> {
        self.write(|tx| {
            let ids: Vec<i64> = tx
                .query(
                    "DELETE FROM arcface_faces WHERE identity = $1 RETURNING id",
                    &[&identity],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            tx.execute(
                "INSERT INTO arcface_changes (face_id, enrolled) SELECT unnest($1::BIGINT[]), FALSE",
                &[&ids],
            )?;
            Ok(ids)
        })
    }
}

/// One replica's view of the change log: its own listening connection and the last sequence
/// number it applied.
struct PgFeed {
    url: String,
    shown: String,
    dim: usize,
    client: Option<Client>,
    seq: i64,
}

impl PgFeed {
    fn connect(url: &str, shown: &str, dim: usize) -> Result<Self, SearchError> {
        let mut feed = Self {
            url: url.to_string(),
            shown: shown.to_string(),
            dim,
            client: None,
            seq: 0,
        };
        feed.listening()?;
        Ok(feed)
    }

    fn listening(&mut self) -> Result<&mut Client, SearchError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let mut client = connect(&self.url, &self.shown)?;
            (client.batch_execute(&format!("LISTEN {CHANNEL}")))
                .map_err(|e| pg_error(&self.shown, e))?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    fn read(&mut self, wait: Duration) -> Result<Vec<Change>, postgres::Error> {
        let (dim, shown) = (self.dim, self.shown.clone());
        let client = self.client.as_mut().expect("listening");
        {
            let mut notifications = client.notifications();
            let woken = notifications.timeout_iter(wait).next()?.is_some();
            if woken {
                while notifications.iter().next()?.is_some() {}
            }
        }
        let mut changes = vec![];
        loop {
            let rows = client.query(
                "SELECT c.seq, c.enrolled, c.face_id, f.identity, f.metadata, f.embedding
                 FROM arcface_changes c
                 LEFT JOIN arcface_faces f ON c.enrolled AND f.id = c.face_id
                 WHERE c.seq > $1 ORDER BY c.seq LIMIT $2",
                &[&self.seq, &BATCH],
            )?;
            for row in &rows {
                self.seq = row.get(0);
                let (enrolled, id): (bool, i64) = (row.get(1), row.get(2));
                let identity: Option<&str> = row.get(3);
                match (enrolled, identity) {
                    (false, _) => changes.push(Change::Deleted(id)),
                    // Enrolled, then deleted since: its deletion follows in the log.
                    (true, None) => {}
                    (true, Some(_)) => match face(row, 2, dim, &shown) {
                        Ok(face) => changes.push(Change::Enrolled(face)),
                        Err(e) => tracing::warn!(gallery = %shown, "skipped: {e}"),
                    },
                }
            }
            if (rows.len() as i64) < BATCH {
                return Ok(changes);
            }
        }
    }
}

impl ChangeFeed for PgFeed {
    fn next_changes(&mut self, wait: Duration) -> Result<Vec<Change>, SearchError> {
        self.listening()?;
        self.read(wait).map_err(|e| {
            self.client = None;
            pg_error(&self.shown, e)
        })
    }
}

/// A face from the row's columns `at..at + 4`: id, identity, metadata, embedding.
fn face(
    row: &postgres::Row,
    at: usize,
    dim: usize,
    shown: &str,
) -> Result<StoredFace, SearchError> {
    let id: i64 = row.get(at);
    let bytes: &[u8] = row.get(at + 3);
    let embedding = decode_embedding(bytes, dim).map_err(|reason| SearchError::Corrupt {
        path: shown.to_string(),
        reason: format!("face {id}: {reason}"),
    })?;
    Ok(StoredFace {
        id,
        identity: row.get(at + 1),
        metadata: row.get(at + 2),
        embedding,
    })
}

fn connect(url: &str, shown: &str) -> Result<Client, SearchError> {
    Client::connect(url, NoTls).map_err(|e| pg_error(shown, e))
}

fn pg_error(shown: &str, source: postgres::Error) -> SearchError {
    SearchError::Postgres {
        location: shown.to_string(),
        source,
    }
}

/// `url` with its password, if any, replaced by `***` (for logs and messages).
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_messages() {
        let shown = super::without_password("postgres://app:s3cret@db:5432/faces");
        assert_eq!(shown, "postgres://app:***@db:5432/faces");
        let plain = "postgresql://app@127.0.0.1:5433/postgres";
        assert_eq!(super::without_password(plain), plain);
    }
}
