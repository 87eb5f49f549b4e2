//! `arcface serve --gallery postgres://...`: three service processes on one throwaway
//! PostgreSQL cluster. A face enrolled through one is found through the others (the delay is
//! measured), a deletion is followed, and a replica killed with SIGKILL and started again serves
//! what was enrolled and deleted while it was down. Real detector and model from the registry
//! packages (datasets/fetch_real.py).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use face_serve::proto::face_service_client::FaceServiceClient;
use face_serve::proto::{self, face_input::Source};
use test_support::postgres::TempCluster;
use test_support::real_data::real_data;

/// insightface's w600k_mbf as `arcface import` writes it, into `dir`.
fn model(dir: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join("mbf.arcface");
    let status = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(["import", "--arch", "mbf", "--from"])
        .arg(real_data().join("models/w600k_mbf.onnx"))
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    out
}

/// One `arcface serve` on `addr` over `url`, once it listens.
fn replica(url: &str, addr: SocketAddr, model: &std::path::Path) -> Child {
    let models = real_data().join("models");
    let mut child = Command::new(env!("CARGO_BIN_EXE_arcface"))
        .args(["serve", "--gallery", url, "--addr", &addr.to_string()])
        .arg("--model")
        .arg(model)
        .arg("--detector-weights")
        .arg(models.join("scrfd_500m_bnkps.onnx"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = vec![];
    while let Some(Ok(line)) = lines.next() {
        if line.contains("listening on") {
            // Keep draining its log, so the server never blocks on a full pipe.
            std::thread::spawn(move || lines.map_while(Result::ok).count());
            return child;
        }
        said.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "arcface serve on {addr} did not start:\n{}",
        said.join("\n")
    );
}

fn free_addr() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

fn unit(seed: u64) -> Vec<f32> {
    test_support::net::unit_vector(seed, 512)
}

fn input(values: Vec<f32>) -> Option<proto::FaceInput> {
    Some(proto::FaceInput {
        source: Some(Source::Embedding(proto::Embedding { values })),
    })
}

type Client = FaceServiceClient<tonic::transport::Channel>;

async fn client(addr: SocketAddr) -> Client {
    let start = Instant::now();
    loop {
        match FaceServiceClient::connect(format!("http://{addr}")).await {
            Ok(c) => return c,
            Err(e) if start.elapsed() > Duration::from_secs(30) => panic!("{addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn enroll(c: &mut Client, identity: &str, seed: u64) -> i64 {
    let request = proto::EnrollRequest {
        identity: identity.into(),
        metadata: String::new(),
        face: input(unit(seed)),
    };
    c.enroll(request).await.unwrap().into_inner().face_id
}

/// The best match's face id for face `seed`, if any.
async fn best(c: &mut Client, seed: u64) -> Option<i64> {
    let request = proto::SearchRequest {
        face: input(unit(seed)),
        top_k: 1,
    };
    let matches = c.search(request).await.unwrap().into_inner().matches;
    matches.first().map(|m| m.face_id)
}

/// How long until `c` answers face `seed` with `id` (`None`: with anything else).
async fn until_found(c: &mut Client, seed: u64, id: Option<i64>) -> Duration {
    let start = Instant::now();
    while best(c, seed).await != id {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "face {seed} never became {id:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

#[test]
fn three_service_replicas_share_one_gallery_and_a_killed_one_catches_up() {
    let cluster = TempCluster::start();
    let url = cluster.url();
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let mut replicas: Vec<Child> = addrs.iter().map(|&a| replica(&url, a, &model)).collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut clients = vec![];
        for &a in &addrs {
            clients.push(client(a).await);
        }
        // Enrolled through one replica, found through the next.
        let mut delays = vec![];
        for seed in 0..12u64 {
            let (w, r) = (seed as usize % 3, (seed as usize + 1) % 3);
            let id = enroll(&mut clients[w], &format!("p{seed}"), seed).await;
            delays.push(until_found(&mut clients[r], seed, Some(id)).await);
        }
        delays.sort();
        println!(
            "enrol-to-found across replicas: p50 {:?}, max {:?}",
            delays[6], delays[11]
        );

        // Replica 2 is killed; replica 0 enrols and deletes while it is down.
        replicas[2].kill().unwrap();
        replicas[2].wait().unwrap();
        let late = enroll(&mut clients[0], "late", 100).await;
        let removed = best(&mut clients[0], 0).await.expect("face 0");
        let deleted = clients[1]
            .delete(proto::DeleteRequest {
                target: Some(proto::delete_request::Target::FaceId(removed)),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(deleted.deleted, 1);
        replicas[2] = replica(&url, addrs[2], &model);
        clients[2] = client(addrs[2]).await;
        assert_eq!(best(&mut clients[2], 100).await, Some(late));
        assert_ne!(best(&mut clients[2], 0).await, Some(removed));
        // And it follows again: a face enrolled through it reaches the others.
        let back = enroll(&mut clients[2], "back", 200).await;
        until_found(&mut clients[0], 200, Some(back)).await;
        until_found(&mut clients[1], 200, Some(back)).await;
    });
    for mut r in replicas {
        let _ = r.kill();
        let _ = r.wait();
    }
}
