//! A persistent gallery: (identity, optional metadata, embedding) rows in a [`GalleryStore`],
//! searched through an in-memory index built from the store when the gallery is opened.
//!
//! Stores: [`SqliteStore`](crate::SqliteStore), one embedded file (the default), and
//! [`PgStore`](crate::PgStore), one PostgreSQL database that several service replicas share;
//! a user's own plugs in through [`Gallery::with_store`]. Every enrolment and deletion is one
//! store transaction, durable when the call returns. Searches take a read lock on the index
//! only, so they continue while other threads write; the index is locked for writing just long
//! enough to add or remove rows. A shared store's [`ChangeFeed`] brings the other replicas'
//! enrolments and deletions into this one's index (a thread per gallery follows it).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::flat::{normalized, FlatIndex, Precision};
use crate::ivf::{IvfConfig, IvfIndex};
use crate::topk::Hit;
use crate::SearchError;

/// The database layout this code writes and reads.
pub(crate) const FORMAT: &str = "arcface-rs gallery 1";

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

impl Label {
    fn of(identity: String, metadata: Option<String>) -> Self {
        Self { identity, metadata }
    }
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

/// A face as a store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFace {
    /// Its id (the store's, unique for the gallery's life).
    pub id: i64,
    /// Whose face it is.
    pub identity: String,
    /// What was stored with it.
    pub metadata: Option<String>,
    /// The normalized embedding.
    pub embedding: Vec<f32>,
}

/// What another writer did to a shared store.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A face was enrolled (and still exists).
    Enrolled(StoredFace),
    /// A face was deleted.
    Deleted(i64),
}

/// The changes of a store shared by several galleries (replicas), in commit order.
pub trait ChangeFeed: Send {
    /// Waits up to `wait` for a change, then returns every change since the last call (empty
    /// when none); after a lost connection, reconnects and returns what it missed.
    fn next_changes(&mut self, wait: Duration) -> Result<Vec<Change>, SearchError>;
}

/// Where a gallery's faces live durably: the seam between the in-memory index and a database.
pub trait GalleryStore: Send {
    /// Where it is, for messages (a path, or a URL without its password).
    fn location(&self) -> String;
    /// Creates the layout for `dim`-value embeddings, or checks the one there.
    fn prepare(&mut self, dim: usize) -> Result<(), SearchError>;
    /// Every stored face, each checked, into `sink` one at a time (a gallery builds its index as
    /// they come, without holding them all); with `follow`, for a store others write to as well,
    /// the feed of their changes from this snapshot on.
    fn load(
        &mut self,
        dim: usize,
        follow: bool,
        sink: &mut dyn FaceSink,
    ) -> Result<Option<Box<dyn ChangeFeed>>, SearchError>;
    /// Stores normalized faces in one transaction and returns their ids in order; durable
    /// when it returns.
    fn insert(&mut self, faces: &[(&str, Option<&str>, &[f32])]) -> Result<Vec<i64>, SearchError>;
    /// Deletes one face; whether there was one.
    fn delete(&mut self, face_id: i64) -> Result<bool, SearchError>;
    /// Deletes every face of `identity` in one transaction; their ids.
    fn delete_identity(&mut self, identity: &str) -> Result<Vec<i64>, SearchError>;
}

/// What a store's [`GalleryStore::load`] fills: told how many faces to expect, then each face.
pub trait FaceSink {
    /// About how many faces follow (to reserve room once).
    fn expect(&mut self, faces: usize);
    /// One stored face.
    fn push(&mut self, face: StoredFace) -> Result<(), SearchError>;
}

impl FaceSink for Vec<StoredFace> {
    fn expect(&mut self, faces: usize) {
        self.reserve(faces);
    }

    fn push(&mut self, face: StoredFace) -> Result<(), SearchError> {
        Vec::push(self, face);
        Ok(())
    }
}

/// An embedding as stored: little-endian f32s.
pub(crate) fn encode_embedding(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A stored embedding back, checked (length, finite values).
pub(crate) fn decode_embedding(bytes: &[u8], dim: usize) -> Result<Vec<f32>, String> {
    if bytes.len() != dim * 4 {
        return Err(format!(
            "embedding of {} bytes, {} expected",
            bytes.len(),
            dim * 4
        ));
    }
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if !v.iter().all(|x| x.is_finite()) {
        return Err("non-finite embedding value".into());
    }
    Ok(v)
}

/// Checks a store's recorded (format, dim) against this code's and the one asked for.
pub(crate) fn check_meta(
    format: &str,
    stored_dim: &str,
    dim: usize,
    location: &str,
) -> Result<(), SearchError> {
    if format != FORMAT {
        return Err(SearchError::Corrupt {
            path: location.to_string(),
            reason: format!("format {format:?}, expected {FORMAT:?}"),
        });
    }
    if stored_dim != dim.to_string() {
        return Err(SearchError::Config(format!(
            "{location} holds {stored_dim}-dimensional embeddings, {dim} asked for"
        )));
    }
    Ok(())
}

struct State {
    index: Index,
    labels: HashMap<i64, Label>,
}

impl FaceSink for State {
    fn expect(&mut self, faces: usize) {
        if let Index::Exact(flat) = &mut self.index {
            flat.reserve(faces);
        }
        self.labels.reserve(faces);
    }

    fn push(&mut self, face: StoredFace) -> Result<(), SearchError> {
        self.add(
            face.id,
            Label::of(face.identity, face.metadata),
            &face.embedding,
        )
    }
}

impl State {
    /// Loads every face of `store` into a new index: exact indexes are filled as the faces
    /// arrive; IVF cells are trained on a sample, so the faces are held until then.
    fn load(
        store: &mut dyn GalleryStore,
        config: &GalleryConfig,
        follow: bool,
    ) -> Result<(Self, Option<Box<dyn ChangeFeed>>), SearchError> {
        if let IndexKind::Exact = config.index {
            let mut state = Self {
                index: Index::Exact(FlatIndex::new(config.dim, config.precision)),
                labels: HashMap::new(),
            };
            let feed = store.load(config.dim, follow, &mut state)?;
            return Ok((state, feed));
        }
        let mut faces: Vec<StoredFace> = vec![];
        let feed = store.load(config.dim, follow, &mut faces)?;
        let index = build_index(config, &faces)?;
        let labels = faces
            .into_iter()
            .map(|f| (f.id, Label::of(f.identity, f.metadata)))
            .collect();
        Ok((Self { index, labels }, feed))
    }

    /// Adds a face unless the index has it (a replica sees its own enrolments come back).
    fn add(&mut self, id: i64, label: Label, v: &[f32]) -> Result<(), SearchError> {
        if self.labels.contains_key(&id) {
            return Ok(());
        }
        self.index.add(id, v)?;
        self.labels.insert(id, label);
        Ok(())
    }

    fn remove(&mut self, id: i64) {
        self.index.remove(id);
        self.labels.remove(&id);
    }
}

/// The gallery. `Sync`: share it between threads (an `Arc`), every method takes `&self`.
pub struct Gallery {
    location: String,
    config: GalleryConfig,
    store: Mutex<Box<dyn GalleryStore>>,
    state: Arc<RwLock<State>>,
    follower: Option<Follower>,
}

impl Gallery {
    /// Opens the SQLite gallery at `path`, creating it if missing, checks the database and
    /// every stored row, and builds the index.
    pub fn open(path: impl AsRef<Path>, config: GalleryConfig) -> Result<Self, SearchError> {
        Self::with_store(Box::new(crate::SqliteStore::open(path)?), config)
    }

    /// Opens `location`: a `postgres://` or `postgresql://` URL (a gallery service replicas
    /// share, [`PgStore`](crate::PgStore)) or a SQLite file's path.
    pub fn open_location(location: &str, config: GalleryConfig) -> Result<Self, SearchError> {
        if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            return Self::with_store(Box::new(crate::PgStore::connect(location)?), config);
        }
        Self::open(location, config)
    }

    /// A gallery over any store: its layout prepared, every face loaded and checked, the index
    /// built and, for a shared store, a thread following the other writers' changes.
    pub fn with_store(
        mut store: Box<dyn GalleryStore>,
        config: GalleryConfig,
    ) -> Result<Self, SearchError> {
        if config.dim == 0 {
            return Err(SearchError::Config("embedding dimension 0".into()));
        }
        store.prepare(config.dim)?;
        let (state, feed) = State::load(store.as_mut(), &config, true)?;
        let count = state.labels.len();
        let state = Arc::new(RwLock::new(state));
        let location = store.location();
        let follower = feed.map(|feed| Follower::start(feed, state.clone(), location.clone()));
        tracing::info!(gallery = %location, rows = count, "gallery opened");
        Ok(Self {
            location,
            config,
            store: Mutex::new(store),
            state,
            follower,
        })
    }

    /// Where the faces are stored (a path, or a URL without its password).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Whether other replicas' changes are followed (a shared store).
    pub fn is_shared(&self) -> bool {
        self.follower.is_some()
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

    /// Whether the index holds face `face_id` (enrolled here, or followed from a replica).
    pub fn contains(&self, face_id: i64) -> bool {
        self.read().labels.contains_key(&face_id)
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
        let rows: Vec<(&str, Option<&str>, &[f32])> = (faces.iter().zip(&checked))
            .map(|((identity, metadata, _), v)| (*identity, *metadata, v.as_slice()))
            .collect();
        let ids = self.store().insert(&rows)?;
        let mut state = self.write();
        for ((identity, metadata, v), id) in rows.iter().zip(&ids) {
            state.add(
                *id,
                Label::of(identity.to_string(), metadata.map(str::to_string)),
                v,
            )?;
        }
        Ok(ids)
    }

    /// Deletes one face; false if there was none with this id.
    pub fn delete(&self, face_id: i64) -> Result<bool, SearchError> {
        let existed = self.store().delete(face_id)?;
        self.write().remove(face_id);
        Ok(existed)
    }

    /// Deletes every face of `identity` in one transaction; returns how many.
    pub fn delete_identity(&self, identity: &str) -> Result<usize, SearchError> {
        let ids = self.store().delete_identity(identity)?;
        let mut state = self.write();
        for id in &ids {
            state.remove(*id);
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

    /// Rebuilds the in-memory index from the store (after many enrolments, to retrain IVF
    /// cells).
    pub fn rebuild_index(&self) -> Result<(), SearchError> {
        let (state, _) = State::load(self.store().as_mut(), &self.config, false)?;
        *self.write() = state;
        Ok(())
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Box<dyn GalleryStore>> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The thread that applies a shared store's changes to the index, until the gallery is dropped.
struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    fn start(mut feed: Box<dyn ChangeFeed>, state: Arc<RwLock<State>>, location: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("gallery-follower".into())
            .spawn(move || {
                let mut failing = false;
                while !stopped.load(Ordering::Relaxed) {
                    match feed.next_changes(Duration::from_millis(250)) {
                        Ok(changes) => {
                            if failing {
                                tracing::info!(gallery = %location, "following changes again");
                                failing = false;
                            }
                            apply(&state, changes);
                        }
                        Err(e) => {
                            if !failing {
                                tracing::warn!(gallery = %location, "following changes: {e}; retrying");
                                failing = true;
                            }
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            })
            .expect("a thread for the gallery follower");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn apply(state: &RwLock<State>, changes: Vec<Change>) {
    if changes.is_empty() {
        return;
    }
    let mut state = state.write().unwrap_or_else(|p| p.into_inner());
    for change in changes {
        match change {
            Change::Enrolled(f) => {
                let label = Label::of(f.identity, f.metadata);
                if let Err(e) = state.add(f.id, label, &f.embedding) {
                    tracing::warn!("a followed enrolment was refused: {e}");
                }
            }
            Change::Deleted(id) => state.remove(id),
        }
    }
}

fn build_index(config: &GalleryConfig, rows: &[StoredFace]) -> Result<Index, SearchError> {
    let mut index = match config.index {
        IndexKind::Ivf(ivf) if rows.len() >= 8 * ivf.nlist => {
            // Train on up to 64 rows per cell, spread over the gallery.
            let step = (rows.len() / (64 * ivf.nlist)).max(1);
            let sample: Vec<Vec<f32>> = rows
                .iter()
                .step_by(step)
                .map(|r| r.embedding.clone())
                .collect();
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
    for f in rows {
        index.add(f.id, &f.embedding)?;
    }
    Ok(index)
}
