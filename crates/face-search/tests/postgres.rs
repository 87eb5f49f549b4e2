//! Galleries on one PostgreSQL database, as service replicas use them: each follows the others'
//! enrolments and deletions (measured delay), concurrent clients converge, a replica reopened
//! catches up, and a database crash under load loses no acknowledged enrolment. The server is a
//! throwaway cluster (`initdb`, `pg_ctl`) from the distribution's PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use face_search::{Gallery, GalleryConfig};
use test_support::postgres::TempCluster;

const DIM: usize = 16;

fn replica(cluster: &TempCluster) -> Gallery {
    Gallery::open_location(&cluster.url(), GalleryConfig::new(DIM)).unwrap()
}

/// A unit vector only `seed` gives.
fn face(seed: u64) -> Vec<f32> {
    test_support::net::unit_vector(seed, DIM)
}

/// Waits until `done` holds, up to `limit`; how long it took.
fn within(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Some(start.elapsed())
}

fn ids(g: &Gallery, among: &HashSet<i64>) -> HashSet<i64> {
    among.iter().copied().filter(|&id| g.contains(id)).collect()
}

#[test]
fn an_enrolment_on_one_replica_is_found_on_the_others_within_a_bounded_delay() {
    let cluster = TempCluster::start();
    let replicas: Vec<Gallery> = (0..3).map(|_| replica(&cluster)).collect();
    assert!(replicas.iter().all(Gallery::is_shared));
    let mut delays = vec![];
    for round in 0..60u64 {
        let (writer, reader) = (round as usize % 3, (round as usize + 1) % 3);
        let v = face(round);
        let id = replicas[writer]
            .enroll(&format!("p{round}"), Some("m"), &v)
            .unwrap();
        let found = || {
            let best = replicas[reader].search(&v, 1).unwrap();
            best.first()
                .is_some_and(|m| m.face_id == id && m.identity == format!("p{round}"))
        };
        let delay = within(Duration::from_secs(5), found)
            .unwrap_or_else(|| panic!("face {id} never reached replica {reader}"));
        delays.push(delay.as_secs_f64() * 1e3);
        if round % 3 == 0 {
            // Deleted through a third replica: gone from all.
            assert!(replicas[(writer + 2) % 3].delete(id).unwrap());
            for g in &replicas {
                within(Duration::from_secs(5), || !g.contains(id)).expect("deletion followed");
            }
        }
    }
    delays.sort_by(f64::total_cmp);
    let (p50, max) = (delays[delays.len() / 2], delays[delays.len() - 1]);
    println!("replica-to-replica delay over 60 enrolments: p50 {p50:.1} ms, max {max:.1} ms");
    assert!(
        max < 1000.0,
        "slowest enrolment took {max:.1} ms to reach another replica"
    );
    // The last enrolments may still be on their way to the third replica.
    for g in &replicas {
        within(Duration::from_secs(5), || g.len() == 40).expect("40 faces everywhere");
    }
}

#[test]
fn concurrent_clients_on_three_replicas_converge_and_a_reopened_replica_catches_up() {
    let cluster = TempCluster::start();
    let replicas: Arc<Vec<Gallery>> = Arc::new((0..3).map(|_| replica(&cluster)).collect());
    let kept = Arc::new(Mutex::new(HashSet::new()));
    let gone = Arc::new(Mutex::new(HashSet::new()));
    let seeds = Arc::new(Mutex::new(HashMap::new()));
    let clients: Vec<_> = (0..4u64)
        .map(|client| {
            let (replicas, kept, gone) = (replicas.clone(), kept.clone(), gone.clone());
            let seeds = seeds.clone();
            std::thread::spawn(move || {
                for k in 0..40u64 {
                    let seed = client * 1000 + k;
                    let g = &replicas[(seed % 3) as usize];
                    let id = g.enroll(&format!("c{client}"), None, &face(seed)).unwrap();
                    seeds.lock().unwrap().insert(id, seed);
                    // Searches run beside the writes on every replica.
                    let other = &replicas[((seed + 1) % 3) as usize];
                    other.search(&face(seed), 5).unwrap();
                    if k % 4 == 3 {
                        assert!(replicas[((seed + 2) % 3) as usize].delete(id).unwrap());
                        gone.lock().unwrap().insert(id);
                    } else {
                        kept.lock().unwrap().insert(id);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let (kept, gone) = (kept.lock().unwrap().clone(), gone.lock().unwrap().clone());
    assert_eq!((kept.len(), gone.len()), (120, 40));
    let all: HashSet<i64> = kept.union(&gone).copied().collect();
    for (r, g) in replicas.iter().enumerate() {
        within(Duration::from_secs(5), || ids(g, &all) == kept).unwrap_or_else(|| {
            panic!("replica {r} holds {} of {}", ids(g, &all).len(), kept.len())
        });
        assert_eq!(g.len(), kept.len());
    }
    // Every kept face is its own best match on every replica.
    let seeds = seeds.lock().unwrap().clone();
    for g in replicas.iter() {
        for &id in kept.iter().take(20) {
            let best = g.search(&face(seeds[&id]), 1).unwrap();
            assert_eq!(best[0].face_id, id);
        }
    }

    // A replica closed (killed) while the others write reopens with everything.
    let mut replicas = Arc::try_unwrap(replicas).ok().expect("clients finished");
    drop(replicas.pop());
    let late = replicas[0].enroll("late", None, &face(99_999)).unwrap();
    assert_eq!(replicas[1].delete_identity("c0").unwrap(), 30);
    let reopened = replica(&cluster);
    assert!(reopened.contains(late));
    assert_eq!(reopened.len(), kept.len() + 1 - 30);
    let best = reopened.search(&face(99_999), 1).unwrap();
    assert_eq!((best[0].face_id, best[0].identity.as_str()), (late, "late"));
}

#[test]
fn a_database_crash_under_load_loses_no_acknowledged_enrolment() {
    let cluster = TempCluster::start();
    let replicas: Arc<Vec<Gallery>> = Arc::new((0..3).map(|_| replica(&cluster)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let failed = Arc::new(Mutex::new(vec![]));
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let (replicas, stop, acked, failed) = (
                replicas.clone(),
                stop.clone(),
                acked.clone(),
                failed.clone(),
            );
            std::thread::spawn(move || {
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let seed = w * 1_000_000 + k;
                    match replicas[w as usize].enroll(&format!("w{w}"), None, &face(seed)) {
                        Ok(id) => {
                            acked.lock().unwrap().insert(id);
                        }
                        Err(e) => {
                            failed.lock().unwrap().push(e.to_string());
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            })
        })
        .collect();
    let count = || acked.lock().unwrap().len();
    within(Duration::from_secs(30), || count() >= 60).expect("enrolments before the crash");
    cluster.crash();
    let at_crash = count();
    std::thread::sleep(Duration::from_millis(300));
    cluster.start_server();
    within(Duration::from_secs(30), || count() >= at_crash + 60).expect("enrolments after");
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let failed = failed.lock().unwrap().clone();
    assert!(!failed.is_empty(), "the crash failed no call");
    assert!(
        failed
            .iter()
            .all(|e| e.contains("gallery database postgres://arcface@127.0.0.1")),
        "{:?}",
        &failed[..3.min(failed.len())]
    );
    // Every acknowledged enrolment is in the database, and reaches every replica (their
    // followers reconnected and read the log from where they were).
    let fresh = replica(&cluster);
    let missing: Vec<_> = acked.iter().filter(|&&id| !fresh.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    for (r, g) in replicas.iter().enumerate() {
        within(Duration::from_secs(10), || {
            acked.iter().all(|&id| g.contains(id))
        })
        .unwrap_or_else(|| panic!("replica {r} did not catch up after the restart"));
    }
    println!(
        "{} enrolments acknowledged, {} calls failed while the server was down",
        acked.len(),
        failed.len()
    );
}
