//! Batching of concurrent embedding requests: one worker thread owns the embedder, takes the
//! first waiting job, gathers whatever else arrives within a short window (up to a batch size),
//! embeds all those faces in one call and hands each job its share. Under load the network
//! runs on batches (higher throughput); alone, a request waits at most the window.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use eval::Embedder;
use image::RgbImage;
use tokio::sync::oneshot;

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, String>>;

struct Job {
    faces: Vec<RgbImage>,
    reply: Reply,
}

/// Handle to the embedding worker; cheap to share (`Sync`).
pub struct Batcher {
    jobs: std::sync::Mutex<mpsc::Sender<Job>>,
    dim: usize,
}

impl Batcher {
    /// Starts the worker. `max_batch` faces at most per call; `window` is how long the worker
    /// waits for more jobs after the first.
    pub fn start(embedder: Box<dyn Embedder + Send>, max_batch: usize, window: Duration) -> Self {
        let dim = embedder.embedding_dim();
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("embed-batcher".into())
            .spawn(move || worker(embedder, rx, max_batch.max(1), window))
            .expect("spawning the embedding thread");
        Self {
            jobs: std::sync::Mutex::new(tx),
            dim,
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Embeddings of `faces` (aligned 112x112), in order, not normalised.
    pub async fn embed(&self, faces: Vec<RgbImage>) -> Result<Vec<Vec<f32>>, String> {
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Job { faces, reply })
            .map_err(|_| "the embedding worker stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the embedding worker dropped the request".to_string())?
    }
}

fn worker(
    embedder: Box<dyn Embedder + Send>,
    jobs: mpsc::Receiver<Job>,
    max_batch: usize,
    window: Duration,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        let mut count = batch[0].faces.len();
        let until = Instant::now() + window;
        while count < max_batch {
            let left = until.saturating_duration_since(Instant::now());
            match jobs.recv_timeout(left) {
                Ok(job) => {
                    count += job.faces.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let faces: Vec<RgbImage> = batch.iter().flat_map(|j| j.faces.iter().cloned()).collect();
        tracing::debug!(jobs = batch.len(), faces = faces.len(), "embedding batch");
        // A panic inside the embedder must not take the worker (and the server) down.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| embedder.embed(&faces)));
        let result = match result {
            Ok(Ok(e)) if e.len() == faces.len() => Ok(e),
            Ok(Ok(e)) => Err(format!(
                "embedder returned {} embeddings for {} faces",
                e.len(),
                faces.len()
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the embedder panicked".to_string()),
        };
        let mut start = 0;
        for job in batch {
            let n = job.faces.len();
            let share = result
                .as_ref()
                .map(|e| e[start..start + n].to_vec())
                .map_err(Clone::clone);
            start += n;
            let _ = job.reply.send(share);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records the size of every batch it is given; embeds a face as its first pixel.
    struct Recorder(Arc<Mutex<Vec<usize>>>);

    impl Embedder for Recorder {
        fn embedding_dim(&self) -> usize {
            1
        }
        fn embed(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, eval::EvalError> {
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
        let batcher = Arc::new(Batcher::start(
            Box::new(Recorder(sizes.clone())),
            16,
            Duration::from_millis(200),
        ));
        let jobs: Vec<_> = (0..6u8)
            .map(|j| {
                let b = batcher.clone();
                tokio::spawn(async move { b.embed(vec![face(2 * j), face(2 * j + 1)]).await })
            })
            .collect();
        for (j, job) in jobs.into_iter().enumerate() {
            let out = job.await.unwrap().unwrap();
            assert_eq!(out, vec![vec![2.0 * j as f32], vec![2.0 * j as f32 + 1.0]]);
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 12);
        assert!(sizes.len() < 6, "no batching: {sizes:?}");
        assert!(sizes.iter().all(|&s| s <= 16 + 1), "{sizes:?}");
    }

    #[tokio::test]
    async fn a_failing_embedder_fails_its_jobs_not_the_worker() {
        struct Panics;
        impl Embedder for Panics {
            fn embedding_dim(&self) -> usize {
                1
            }
            fn embed(&self, faces: &[RgbImage]) -> Result<Vec<Vec<f32>>, eval::EvalError> {
                if faces.len() == 1 {
                    panic!("boom");
                }
                Ok(vec![vec![0.0]; faces.len()])
            }
        }
        let b = Batcher::start(Box::new(Panics), 4, Duration::ZERO);
        assert!(b
            .embed(vec![face(1)])
            .await
            .unwrap_err()
            .contains("panicked"));
        assert_eq!(b.embed(vec![face(1), face(2)]).await.unwrap().len(), 2);
    }
}
