//! The persistent gallery: round trips through SQLite, durability of acknowledged enrolments
//! after SIGKILL, searches running while another thread writes, damaged databases, and the IVF
//! index's recall against exact search.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use face_search::{
    FlatIndex, Gallery, GalleryConfig, IndexKind, IvfConfig, IvfIndex, Precision, SearchError,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn unit(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

#[test]
fn enrol_search_delete_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let mut rng = StdRng::seed_from_u64(1);
    let faces: Vec<Vec<f32>> = (0..30).map(|_| unit(&mut rng, 32)).collect();
    for precision in [
        Precision::F32,
        Precision::F16,
        Precision::Int8,
        Precision::Sq4,
    ] {
        let _ = std::fs::remove_file(&path);
        let config = GalleryConfig {
            precision,
            ..GalleryConfig::new(32)
        };
        let g = Gallery::open(&path, config).unwrap();
        let mut ids = Vec::new();
        for (i, f) in faces.iter().enumerate() {
            let meta = (i % 2 == 0).then(|| format!("{{\"n\":{i}}}"));
            ids.push(
                g.enroll(&format!("person{}", i / 3), meta.as_deref(), f)
                    .unwrap(),
            );
        }
        assert_eq!(g.len(), 30);
        let top = g.search(&faces[7], 3).unwrap();
        assert_eq!(top[0].face_id, ids[7]);
        assert_eq!(top[0].identity, "person2");
        assert_eq!(top[0].metadata, None);
        assert_eq!(
            g.search(&faces[8], 1).unwrap()[0].metadata.as_deref(),
            Some("{\"n\":8}")
        );
        assert!(g.delete(ids[7]).unwrap());
        assert!(!g.delete(ids[7]).unwrap());
        assert_eq!(g.delete_identity("person0").unwrap(), 3);
        assert_eq!(g.len(), 26);
        drop(g);
        // Reopened: the same rows, the index rebuilt from the database.
        let g = Gallery::open(&path, config).unwrap();
        assert_eq!(g.len(), 26);
        assert_ne!(g.search(&faces[7], 1).unwrap()[0].face_id, ids[7]);
        assert_ne!(g.search(&faces[1], 1).unwrap()[0].identity, "person0");
        assert_eq!(g.search(&faces[20], 1).unwrap()[0].face_id, ids[20]);
        let batch = g.search_batch(&[&faces[20], &faces[21]], 1).unwrap();
        assert_eq!(
            (batch[0][0].face_id, batch[1][0].face_id),
            (ids[20], ids[21])
        );
    }
}

#[test]
fn bulk_enrolment_is_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let mut rng = StdRng::seed_from_u64(2);
    let faces: Vec<Vec<f32>> = (0..100).map(|_| unit(&mut rng, 16)).collect();
    let g = Gallery::open(&path, GalleryConfig::new(16)).unwrap();
    let mut rows: Vec<(&str, Option<&str>, &[f32])> =
        faces.iter().map(|f| ("bulk", None, f.as_slice())).collect();
    // One bad row refuses the whole batch.
    let bad = [1.0f32; 3];
    rows.push(("bulk", None, &bad));
    assert!(matches!(
        g.enroll_many(&rows),
        Err(SearchError::Dimension { .. })
    ));
    assert!(g.is_empty());
    rows.pop();
    let ids = g.enroll_many(&rows).unwrap();
    assert_eq!(ids.len(), 100);
    drop(g);
    let g = Gallery::open(&path, GalleryConfig::new(16)).unwrap();
    assert_eq!(g.len(), 100);
    // Created with pages that hold several 2 KiB rows (see `Gallery::open`).
    let page: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!(page, 16384);
    for (f, id) in faces.iter().zip(&ids) {
        assert_eq!(g.search(f, 1).unwrap()[0].face_id, *id);
    }
}

#[test]
fn bad_input_and_damaged_databases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let g = Gallery::open(&path, GalleryConfig::new(8)).unwrap();
    assert!(matches!(
        g.enroll("a", None, &[1.0; 7]),
        Err(SearchError::Dimension { .. })
    ));
    assert!(matches!(
        g.enroll("a", None, &[0.0; 8]),
        Err(SearchError::BadEmbedding(_))
    ));
    assert!(matches!(
        g.enroll("", None, &[1.0; 8]),
        Err(SearchError::Config(_))
    ));
    assert!(g.is_empty(), "refused enrolments leave nothing behind");
    g.enroll("a", None, &[1.0; 8]).unwrap();
    drop(g);
    // Another dimension than the one it was made with.
    assert!(matches!(
        Gallery::open(&path, GalleryConfig::new(16)),
        Err(SearchError::Config(_))
    ));
    // A row whose embedding was damaged behind the gallery's back.
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute("UPDATE faces SET embedding = x'0000'", [])
        .unwrap();
    drop(db);
    let err = Gallery::open(&path, GalleryConfig::new(8)).err().unwrap();
    assert!(matches!(err, SearchError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("2 bytes"), "{err}");
    // Not a database at all.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x5au8; 8192]).unwrap();
    assert!(Gallery::open(&junk, GalleryConfig::new(8)).is_err());
}

/// The child side of the SIGKILL test: enrols forever, printing each id once `enroll` returned.
#[test]
fn child_enrols_until_killed() {
    let Ok(path) = std::env::var("FACE_SEARCH_CHILD_DB") else {
        return; // Only runs as the child of `acknowledged_enrolments_survive_sigkill`.
    };
    let g = Gallery::open(&path, GalleryConfig::new(64)).unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    for i in 0.. {
        let id = g
            .enroll(&format!("p{i}"), None, &unit(&mut rng, 64))
            .unwrap();
        println!("ACK {id}");
    }
}

#[test]
fn acknowledged_enrolments_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_enrols_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FACE_SEARCH_CHILD_DB", &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // libtest may print the test's name on the same line as the first output.
        if let Some(at) = line.find("ACK ") {
            acked.push(line[at + 4..].trim().parse::<i64>().unwrap());
            if acked.len() == 200 {
                // SIGKILL: no destructors, no flush, mid-transaction as likely as not.
                child.kill().unwrap();
                break;
            }
        }
    }
    child.wait().unwrap();
    assert_eq!(acked.len(), 200, "the child stopped early");
    let g = Gallery::open(&path, GalleryConfig::new(64)).unwrap();
    assert!(g.len() >= 200, "{} rows after the kill", g.len());
    let mut rng = StdRng::seed_from_u64(9);
    for (i, id) in acked.iter().enumerate() {
        let top = g.search(&unit(&mut rng, 64), 1).unwrap();
        assert_eq!(top[0].face_id, *id, "acknowledged enrolment {i} lost");
        assert_eq!(top[0].identity, format!("p{i}"));
    }
}

#[test]
fn searches_continue_while_another_thread_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let mut rng = StdRng::seed_from_u64(3);
    let g = Arc::new(Gallery::open(&path, GalleryConfig::new(64)).unwrap());
    let anchor = unit(&mut rng, 64);
    let anchor_id = g.enroll("anchor", None, &anchor).unwrap();
    // Another connection holds the database's write lock, so the next enrolment stays in
    // progress (waiting inside its transaction) until that connection commits.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let written = Arc::new(AtomicBool::new(false));
    let writer = {
        let (g, written, face) = (g.clone(), written.clone(), unit(&mut rng, 64));
        std::thread::spawn(move || {
            let id = g.enroll("late", None, &face).unwrap();
            written.store(true, Ordering::SeqCst);
            id
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !written.load(Ordering::SeqCst),
        "the enrolment should be waiting"
    );
    // Searches go on meanwhile, from this thread and from others.
    let started = std::time::Instant::now();
    let searches = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (g, searches, anchor) = (g.clone(), searches.clone(), anchor.clone());
            std::thread::spawn(move || {
                for _ in 0..50 {
                    assert_eq!(g.search(&anchor, 1).unwrap()[0].face_id, anchor_id);
                    searches.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Wait (at most 5 s) for the searches, then let the write through either way, so that a
    // regression fails here instead of hanging.
    while searches.load(Ordering::SeqCst) < 100 && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let done_before_commit = searches.load(Ordering::SeqCst);
    let write_waited = !written.load(Ordering::SeqCst);
    other.execute_batch("COMMIT").unwrap();
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(
        done_before_commit, 100,
        "searches waited behind a write in progress"
    );
    assert!(write_waited, "the enrolment should still have been waiting");
    let late = writer.join().unwrap();
    assert_eq!(g.len(), 2);
    assert!(g
        .search(&anchor, 2)
        .unwrap()
        .iter()
        .any(|m| m.face_id == late));
}

#[test]
fn ivf_recall_against_exact_search() {
    let mut rng = StdRng::seed_from_u64(4);
    let (dim, n) = (64, 20_000);
    // Clustered like faces: 500 identities, 40 photos each around its centre.
    let centres: Vec<Vec<f32>> = (0..500).map(|_| unit(&mut rng, dim)).collect();
    let rows: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            let noise = unit(&mut rng, dim);
            centres[i % 500]
                .iter()
                .zip(&noise)
                .map(|(c, e)| c + 0.6 * e)
                .collect()
        })
        .collect();
    let mut exact = FlatIndex::new(dim, Precision::F32);
    // Every third row (500 is not a multiple of 3, so every identity is in the sample).
    let sample: Vec<Vec<f32>> = rows.iter().step_by(3).cloned().collect();
    let config = IvfConfig {
        nlist: 128,
        nprobe: 8,
        iterations: 8,
        seed: 1,
    };
    let mut ivf = IvfIndex::train(dim, Precision::F32, &sample, config).unwrap();
    for (i, r) in rows.iter().enumerate() {
        exact.add(i as i64, r).unwrap();
        ivf.add(i as i64, r).unwrap();
    }
    let queries: Vec<Vec<f32>> = (0..200)
        .map(|i| {
            let noise = unit(&mut rng, dim);
            centres[i * 7 % 500]
                .iter()
                .zip(&noise)
                .map(|(c, e)| c + 0.6 * e)
                .collect()
        })
        .collect();
    let truth = exact.search_batch(&queries, 10).unwrap();
    let recall = |ivf: &IvfIndex| {
        let found = ivf.search_batch(&queries, 10).unwrap();
        found
            .iter()
            .zip(&truth)
            .map(|(f, t)| f.iter().filter(|h| t.iter().any(|x| x.id == h.id)).count())
            .sum::<usize>() as f64
            / (10 * queries.len()) as f64
    };
    let at8 = recall(&ivf);
    ivf.set_nprobe(128);
    let all = recall(&ivf);
    ivf.set_nprobe(1);
    let at1 = recall(&ivf);
    assert_eq!(all, 1.0, "probing every cell is exact");
    assert!(at8 >= 0.98, "recall@10 with 8 of 128 cells: {at8}");
    assert!(
        at1 < at8,
        "one cell {at1} should lose recall against 8 {at8}"
    );
    // Removal reaches the right cell.
    assert!(ivf.remove(5));
    assert!(!ivf.remove(5));
    assert_eq!(ivf.len(), n - 1);
    // Too little to train on.
    assert!(IvfIndex::train(dim, Precision::F32, &sample[..10], config).is_err());
}

#[test]
fn a_gallery_can_serve_through_ivf() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(6);
    let path = dir.path().join("g.db");
    let config = GalleryConfig {
        dim: 32,
        precision: Precision::Int8,
        index: IndexKind::Ivf(IvfConfig {
            nlist: 16,
            nprobe: 16,
            iterations: 5,
            seed: 0,
        }),
    };
    let g = Gallery::open(&path, config).unwrap();
    let faces: Vec<Vec<f32>> = (0..200).map(|_| unit(&mut rng, 32)).collect();
    let ids: Vec<i64> = faces
        .iter()
        .map(|f| g.enroll("x", None, f).unwrap())
        .collect();
    // Opened with enough rows: IVF cells trained from the database; every cell probed = exact.
    drop(g);
    let g = Gallery::open(&path, config).unwrap();
    for (f, id) in faces.iter().zip(&ids).take(50) {
        assert_eq!(g.search(f, 1).unwrap()[0].face_id, *id);
    }
}
