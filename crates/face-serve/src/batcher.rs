//! Batching of concurrent requests: one worker thread takes the first waiting job, gathers
//! whatever else arrives within a short window (up to a batch size), runs them all in one call
//! and hands each job its share. Under load the model (or the gallery scan) runs on batches,
//! which is where its throughput is; alone, a request waits at most the window.
//!
//! Two batchers serve the service: faces to embed ([`embedder`]: one network call for the faces
//! of many requests) and search queries ([`searcher`]: one pass over the gallery for many
//! queries).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use face_embed::Embedder;
use face_search::{Gallery, Match};
use image::RgbImage;
use tokio::sync::oneshot;

type Reply<R> = oneshot::Sender<Result<R, String>>;

/// Aligned faces of one request in, their embeddings out.
pub type EmbedBatcher = Batcher<Vec<RgbImage>, Vec<Vec<f32>>>;
/// (normalized query, k) in, the query's matches out.
pub type SearchBatcher = Batcher<(Vec<f32>, usize), Result<Vec<Match>, face_search::SearchError>>;

/// Handle to a batching worker; cheap to share (`Sync`).
pub struct Batcher<J, R> {
    jobs: std::sync::Mutex<mpsc::Sender<(J, Reply<R>)>>,
}

impl<J: Send + 'static, R: Send + 'static> Batcher<J, R> {
    /// Starts the worker thread `name`. A batch closes at `max_batch` units (`weight` of each
    /// job) or `window` after its first job; `run` answers a batch, one result per job in
    /// order.
    pub fn start(
        name: &str,
        max_batch: usize,
        window: Duration,
        weight: fn(&J) -> usize,
        mut run: impl FnMut(Vec<J>) -> Result<Vec<R>, String> + Send + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<(J, Reply<R>)>();
        let max_batch = max_batch.max(1);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut units = weight(&first.0);
                    let mut batch = vec![first];
                    let until = Instant::now() + window;
                    while units < max_batch {
                        let left = until.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(job) => {
                                units += weight(&job.0);
                                batch.push(job);
                            }
                            Err(_) => break,
                        }
                    }
                    let (jobs, replies): (Vec<J>, Vec<Reply<R>>) = batch.into_iter().unzip();
                    let n = jobs.len();
                    tracing::debug!(jobs = n, units, "batch");
                    // A panic inside `run` fails this batch, not the worker (nor the server).
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(jobs)));
                    match result {
                        Ok(Ok(out)) if out.len() == n => {
                            for (reply, r) in replies.into_iter().zip(out) {
                                let _ = reply.send(Ok(r));
                            }
                        }
                        failed => {
                            let why = match failed {
                                Ok(Ok(out)) => format!("{} results for {n} jobs", out.len()),
                                Ok(Err(e)) => e,
                                Err(_) => format!(
                                    "the {name} worker panicked",
                                    name = std::thread::current().name().unwrap_or("batch")
                                ),
                            };
                            for reply in replies {
                                let _ = reply.send(Err(why.clone()));
                            }
                        }
                    }
                }
            })
            .expect("spawning a batching thread");
        Self {
            jobs: std::sync::Mutex::new(tx),
        }
    }

    /// Queues `job` and waits for its result.
    pub async fn submit(&self, job: J) -> Result<R, String> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((job, reply))
            .map_err(|_| "the batching worker stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the batching worker dropped the request".to_string())?
    }
}

/// Embedding: jobs are one request's aligned faces, weighed by their number; a batch is one
/// `embed` call.
pub fn embedder(
    embedder: Box<dyn Embedder + Send>,
    max_faces: usize,
    window: Duration,
) -> EmbedBatcher {
    Batcher::start("embed-batcher", max_faces, window, Vec::len, move |jobs| {
        let sizes: Vec<usize> = jobs.iter().map(Vec::len).collect();
        let faces: Vec<RgbImage> = jobs.into_iter().flatten().collect();
        let all = embedder.embed(&faces).map_err(|e| e.to_string())?;
        if all.len() != faces.len() {
            return Err(format!(
                "embedder returned {} embeddings for {} faces",
                all.len(),
                faces.len()
            ));
        }
        let mut all = all.into_iter();
        Ok(sizes
            .iter()
            .map(|&n| all.by_ref().take(n).collect())
            .collect())
    })
}

/// Search: jobs are (normalized query, k); a batch is one pass over the gallery
/// (`search_batch` with the largest k, each answer cut to its own). If the batch fails, each
/// query is retried alone so that one bad query fails only itself.
pub fn searcher(gallery: Arc<Gallery>, max_queries: usize, window: Duration) -> SearchBatcher {
    Batcher::start(
        "search-batcher",
        max_queries,
        window,
        |_| 1,
        move |jobs| {
            let k = jobs.iter().map(|j| j.1).max().unwrap_or(0);
            let queries: Vec<&[f32]> = jobs.iter().map(|j| j.0.as_slice()).collect();
            Ok(match gallery.search_batch(&queries, k) {
                Ok(all) => all
                    .into_iter()
                    .zip(&jobs)
                    .map(|(mut m, j)| {
                        m.truncate(j.1);
                        Ok(m)
                    })
                    .collect(),
                Err(_) => jobs.iter().map(|(q, k)| gallery.search(q, *k)).collect(),
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records the size of every batch it is given; embeds a face as its first pixel.
    struct Recorder(Arc<Mutex<Vec<usize>>>);

    impl Embedder for Recorder {
        fn embedding_dim(&self) -> usize {
            1
        }
        fn embed(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, face_embed::EmbedError> {
            self.0.lock().unwrap().push(faces.len());
            Ok(faces
                .iter()
                .map(|f| vec![f.get_pixel(0, 0)[0] as f32])
                .collect())
        }
    }

    fn face(v: u8) -> RgbImage {
        RgbImage::from_pixel(2, 2, image::Rgb([v, 0, 0]))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_jobs_share_batches_and_get_their_own_results() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let batcher = Arc::new(embedder(
            Box::new(Recorder(sizes.clone())),
            16,
            Duration::from_millis(200),
        ));
        let jobs: Vec<_> = (0..6u8)
            .map(|j| {
                let b = batcher.clone();
                tokio::spawn(async move { b.submit(vec![face(2 * j), face(2 * j + 1)]).await })
            })
            .collect();
        for (j, job) in jobs.into_iter().enumerate() {
            let out = job.await.unwrap().unwrap();
            assert_eq!(out, vec![vec![2.0 * j as f32], vec![2.0 * j as f32 + 1.0]]);
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 12);
        assert!(sizes.len() < 6, "no batching: {sizes:?}");
        assert!(sizes.iter().all(|&s| s <= 16), "{sizes:?}");
    }

    #[tokio::test]
    async fn a_failing_embedder_fails_its_jobs_not_the_worker() {
        struct Panics;
        impl Embedder for Panics {
            fn embedding_dim(&self) -> usize {
                1
            }
            fn embed(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, face_embed::EmbedError> {
                if faces.len() == 1 {
                    panic!("boom");
                }
                Ok(vec![vec![0.0]; faces.len()])
            }
        }
        let b = embedder(Box::new(Panics), 4, Duration::ZERO);
        assert!(b
            .submit(vec![face(1)])
            .await
            .unwrap_err()
            .contains("panicked"));
        assert_eq!(b.submit(vec![face(1), face(2)]).await.unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_searches_share_a_pass_and_keep_their_own_k() {
        let dir = tempfile::tempdir().unwrap();
        let gallery = Arc::new(
            Gallery::open(dir.path().join("g.db"), face_search::GalleryConfig::new(4)).unwrap(),
        );
        let rows = [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.9, 0.1, 0.0, 0.0],
        ];
        for (i, r) in rows.iter().enumerate() {
            gallery.enroll(&format!("p{i}"), None, r).unwrap();
        }
        let searcher = Arc::new(searcher(gallery, 8, Duration::from_millis(100)));
        let jobs: Vec<_> = (0..4usize)
            .map(|i| {
                let s = searcher.clone();
                let q = rows[i].to_vec();
                tokio::spawn(async move { s.submit((q, i + 1)).await })
            })
            .collect();
        for (i, job) in jobs.into_iter().enumerate() {
            let matches = job.await.unwrap().unwrap().unwrap();
            assert_eq!(matches.len(), i + 1);
            assert_eq!(matches[0].identity, format!("p{i}"));
        }
    }
}
