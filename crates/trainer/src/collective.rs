//! Data parallelism across processes and machines: the seam the loop calls ([`Collective`]: a
//! sum over every node) and its implementation over Burn's WebSocket transport
//! ([`RingCollective`]: rank 0 introduces the nodes, then each sum is a ring all-reduce).
//!
//! Why not burn-collective's own multi-node all-reduce: in 0.21.0 it completes once per
//! process (its node barrier, `SyncService::sync`, clears a copy of its peer list, so the second
//! global all-reduce waits forever), and its global reduce and broadcast are `unimplemented!`
//! (docs/training.md, "Several machines"). Its transport, burn-communication, works and is
//! what this module uses.
//!
//! Every call is bounded by a timeout, and a closed connection fails at once: a node that died
//! makes the others stop with [`TrainError::Collective`] instead of waiting forever; the run is
//! restarted on every node with `--resume` (the nodes then agree on their last common
//! checkpoint).

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burn::tensor::{backend::Backend, Tensor, TensorData};
use burn_communication::websocket::{WsClient, WsClientChannel, WsServer};
use burn_communication::{Address, CommunicationChannel, Message, ProtocolClient, ProtocolServer};
use bytes::Bytes;
use face_data::shard_range;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::TrainError;

/// Sums over every node of a run: what the loop needs to keep replicas on several processes in
/// step (gradients, BatchNorm statistics, the loss and the stop decisions).
pub trait Collective<B: Backend> {
    /// This process's rank, `0..nodes()`: which part of each batch it trains on.
    fn rank(&self) -> usize;
    /// The number of processes in the run.
    fn nodes(&self) -> usize;
    /// The element-wise sum of `tensor` over every node; every node gets the same result.
    fn sum(&self, tensor: Tensor<B, 1>, what: &str) -> Result<Tensor<B, 1>, TrainError>;
}

/// Where a node of a multi-node run finds the others.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Processes in the run (each with its own devices).
    pub nodes: usize,
    /// This process's rank; rank 0 also serves the rendezvous.
    pub rank: usize,
    /// The rendezvous address (rank 0's host and a free port): every node connects to it.
    pub coordinator: SocketAddr,
    /// Where this node serves its tensors to the others (its own host, a free port).
    pub node_address: SocketAddr,
    /// How long any collective call may wait for the other nodes (joining included) before
    /// the run stops with an error: longer than the slowest node's step plus an evaluation.
    pub timeout: Duration,
}

impl ClusterConfig {
    /// `nodes` processes on this host: the coordinator at `coordinator`, node `rank` serving on
    /// the port `coordinator + 1 + rank`.
    pub fn local(nodes: usize, rank: usize, coordinator: SocketAddr) -> Self {
        let mut node_address = coordinator;
        node_address.set_port(coordinator.port().wrapping_add(1 + rank as u16));
        Self {
            nodes,
            rank,
            coordinator,
            node_address,
            timeout: Duration::from_secs(300),
        }
    }

    fn check(&self) -> Result<(), TrainError> {
        if self.nodes == 0 || self.rank >= self.nodes {
            return Err(TrainError::Collective(format!(
                "node rank {} of {} nodes: ranks run from 0 to nodes - 1",
                self.rank, self.nodes
            )));
        }
        if self.node_address.port() == self.coordinator.port()
            && self.node_address.ip() == self.coordinator.ip()
        {
            return Err(TrainError::Collective(format!(
                "node {} would serve on the coordinator's own address {}: give it another port",
                self.rank, self.coordinator
            )));
        }
        Ok(())
    }
}

/// [`Collective`] over burn-communication's WebSocket channels: each node serves a `ring`
/// route its predecessor sends to, and sends to its successor's; a sum is a ring all-reduce
/// (N - 1 steps of reduce-scatter, N - 1 of all-gather, each node sending 2 (N - 1) / N of the
/// tensor), so every node ends with the same bits.
pub struct RingCollective {
    rank: usize,
    nodes: usize,
    timeout: Duration,
    runtime: tokio::runtime::Runtime,
    ring: Mutex<Ring>,
    _stop: watch::Sender<bool>,
}

/// The two neighbours, and how many sums this node has made.
struct Ring {
    next: Option<WsClientChannel>,
    prev: mpsc::UnboundedReceiver<Result<Bytes, String>>,
    calls: u64,
}

/// A piece of a ring step: `[call u64][step u32][piece u32]` then little-endian f32s. Pieces
/// stay under the server's 16 MB frame limit.
const HEADER: usize = 16;
const PIECE: usize = 1 << 20;

impl RingCollective {
    /// Joins the run `cluster` describes, waiting (up to its timeout) until every node has:
    /// rank 0 serves the rendezvous at the coordinator address, every node its ring route.
    pub fn join(cluster: &ClusterConfig) -> Result<Self, TrainError> {
        cluster.check()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| TrainError::Collective(format!("no runtime: {e}")))?;
        // burn-communication's servers bind 0.0.0.0 and report a failed bind nowhere: a port in
        // use is found here, with a message, instead of as a timeout.
        free_port(cluster.node_address.port(), "--node-address")?;
        if cluster.rank == 0 {
            free_port(cluster.coordinator.port(), "--coordinator")?;
        }
        let (stop, stopped) = watch::channel(false);
        let prev = runtime.block_on(serve_ring(cluster.node_address.port(), stopped.clone()));
        if cluster.rank == 0 {
            runtime.spawn(serve_rendezvous(cluster.clone(), stopped));
        }
        tracing::info!(
            "node {} of {}: joining the run at {} (ring on {})",
            cluster.rank,
            cluster.nodes,
            cluster.coordinator,
            cluster.node_address
        );
        let timeout = cluster.timeout;
        let next = runtime.block_on(async {
            let joined = tokio::time::timeout(timeout, join_ring(cluster)).await;
            joined.unwrap_or_else(|_| {
                Err(format!(
                    "joining the run: not every node arrived within {:.0} s (start all {} with the same --nodes and --coordinator)",
                    timeout.as_secs_f64(),
                    cluster.nodes
                ))
            })
        });
        let next = next.map_err(TrainError::Collective)?;
        tracing::info!("node {}: all {} nodes joined", cluster.rank, cluster.nodes);
        Ok(Self {
            rank: cluster.rank,
            nodes: cluster.nodes,
            timeout,
            runtime,
            ring: Mutex::new(Ring {
                next,
                prev,
                calls: 0,
            }),
            _stop: stop,
        })
    }
}

impl<B: Backend> Collective<B> for RingCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn nodes(&self) -> usize {
        self.nodes
    }

    fn sum(&self, tensor: Tensor<B, 1>, what: &str) -> Result<Tensor<B, 1>, TrainError> {
        if self.nodes == 1 {
            return Ok(tensor);
        }
        let device = tensor.device();
        let mut data: Vec<f32> = (tensor.into_data().convert::<f32>().into_vec())
            .map_err(|e| TrainError::Collective(format!("{what}: not f32 data: {e:?}")))?;
        let mut ring = self
            .ring
            .lock()
            .map_err(|_| TrainError::Collective(format!("{what}: an earlier exchange panicked")))?;
        ring.calls += 1;
        let (rank, nodes, timeout) = (self.rank, self.nodes, self.timeout);
        let done = self.runtime.block_on(async {
            let sum = all_reduce(&mut ring, rank, nodes, &mut data);
            tokio::time::timeout(timeout, sum).await
        });
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(TrainError::Collective(format!(
                    "{what}: {e}: stopping; restart every node with --resume to continue from their last common checkpoint"
                )))
            }
            Err(_) => {
                return Err(TrainError::Collective(format!(
                    "{what}: the other nodes did not answer within {:.0} s (a node died, stopped or is much slower): stopping; restart every node with --resume to continue from their last common checkpoint",
                    timeout.as_secs_f64()
                )))
            }
        }
        let len = data.len();
        Ok(Tensor::from_data(TensorData::new(data, [len]), &device))
    }
}

/// Ring all-reduce (sum) of `data` in place: chunk `k` of `nodes` is summed along the ring
/// ending at node `k`, then passed around whole.
async fn all_reduce(
    ring: &mut Ring,
    rank: usize,
    nodes: usize,
    data: &mut [f32],
) -> Result<(), String> {
    let len = data.len();
    let chunk = |k: usize| shard_range(len, nodes, k % nodes);
    for step in 0..2 * (nodes - 1) {
        let gather = step >= nodes - 1;
        let s = step % (nodes - 1);
        // Reduce-scatter sends chunk r - s, all-gather chunk r + 1 - s; both receive the one
        // before.
        let send = chunk(rank + 2 * nodes - s + usize::from(gather));
        let recv = chunk(rank + 2 * nodes - s - 1 + usize::from(gather));
        send_chunk(ring, step as u32, &data[send]).await?;
        receive_chunk(ring, step as u32, &mut data[recv], !gather).await?;
    }
    Ok(())
}

async fn send_chunk(ring: &mut Ring, step: u32, values: &[f32]) -> Result<(), String> {
    let next = ring.next.as_mut().ok_or("no successor")?;
    let pieces = values.chunks(PIECE);
    for (k, piece) in pieces.enumerate() {
        let mut bytes = Vec::with_capacity(HEADER + 4 * piece.len());
        bytes.extend_from_slice(&ring.calls.to_le_bytes());
        bytes.extend_from_slice(&step.to_le_bytes());
        bytes.extend_from_slice(&(k as u32).to_le_bytes());
        for v in piece {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        next.send(Message::new(bytes.into()))
            .await
            .map_err(|e| format!("the next node closed the connection ({e:?})"))?;
    }
    Ok(())
}

async fn receive_chunk(
    ring: &mut Ring,
    step: u32,
    values: &mut [f32],
    add: bool,
) -> Result<(), String> {
    for (k, piece) in values.chunks_mut(PIECE).enumerate() {
        let bytes = match ring.prev.recv().await {
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) => return Err(e),
            None => return Err("the ring's server stopped".into()),
        };
        if bytes.len() < HEADER {
            return Err(format!(
                "the previous node sent {} bytes, not a ring message",
                bytes.len()
            ));
        }
        let (call, at, index) = (
            u64::from_le_bytes(bytes[0..8].try_into().unwrap_or_default()),
            u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default()),
            u32::from_le_bytes(bytes[12..16].try_into().unwrap_or_default()),
        );
        if (call, at, index as usize) != (ring.calls, step, k)
            || bytes.len() != HEADER + 4 * piece.len()
        {
            return Err(format!(
                "the previous node sent piece {index} of step {at} of exchange {call} ({} bytes) where this node expected piece {k} of step {step} of exchange {} ({} bytes): the nodes run different code or configs",
                bytes.len(),
                ring.calls,
                HEADER + 4 * piece.len()
            ));
        }
        let incoming = bytes[HEADER..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        match add {
            true => piece.iter_mut().zip(incoming).for_each(|(v, x)| *v += x),
            false => piece.iter_mut().zip(incoming).for_each(|(v, x)| *v = x),
        }
    }
    Ok(())
}

/// Serves the `ring` route on `port`: what the previous node sends, in order, or why it stopped.
async fn serve_ring(
    port: u16,
    mut stopped: watch::Receiver<bool>,
) -> mpsc::UnboundedReceiver<Result<Bytes, String>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = WsServer::new(port).route("ring", move |mut channel| async move {
        loop {
            let item = match channel.recv().await {
                Ok(Some(m)) => Ok(m.data),
                Ok(None) => Err("the previous node closed the connection".to_string()),
                Err(e) => Err(format!("the previous node's connection broke ({e:?})")),
            };
            let end = item.is_err();
            if tx.send(item).is_err() || end {
                return;
            }
        }
    });
    tokio::spawn(server.serve(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    rx
}

/// Rank 0's rendezvous: every node sends `rank nodes address`; once all have, each gets every
/// address, in rank order.
async fn serve_rendezvous(cluster: ClusterConfig, mut stopped: watch::Receiver<bool>) {
    let (arrived, mut arrivals) =
        mpsc::unbounded_channel::<(usize, String, oneshot::Sender<String>)>();
    let nodes = cluster.nodes;
    let server =
        WsServer::new(cluster.coordinator.port()).route("join", move |mut channel| async move {
            let Ok(Some(m)) = channel.recv().await else {
                return;
            };
            let text = String::from_utf8_lossy(&m.data).to_string();
            let mut parts = text.split(' ');
            let (rank, count, addr) = (parts.next(), parts.next(), parts.next());
            let (reply, answer) = oneshot::channel();
            let ok = match (
                rank.and_then(|r| r.parse().ok()),
                count.and_then(|c| c.parse::<usize>().ok()),
                addr,
            ) {
                (Some(rank), Some(count), Some(addr)) if count == nodes => {
                    arrived.send((rank, addr.to_string(), reply)).is_ok()
                }
                _ => {
                    let _ = reply.send(format!(
                        "error: expected `rank {nodes} address`, got `{text}`"
                    ));
                    true
                }
            };
            if ok {
                if let Ok(list) = answer.await {
                    let _ = channel.send(Message::new(list.into_bytes().into())).await;
                }
            }
        });
    tokio::spawn(server.serve(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let mut addresses = vec![None; nodes];
    let mut replies = vec![];
    while addresses.iter().any(Option::is_none) {
        let Some((rank, addr, reply)) = arrivals.recv().await else {
            return;
        };
        match addresses.get_mut(rank) {
            Some(slot @ None) => {
                *slot = Some(addr);
                replies.push(reply);
            }
            _ => {
                let _ = reply.send(format!("error: rank {rank} is taken or out of range"));
            }
        }
    }
    let list: Vec<String> = addresses.into_iter().flatten().collect();
    for reply in replies {
        let _ = reply.send(list.join(" "));
    }
}

/// Announces this node at the rendezvous, then connects to its successor's ring route.
async fn join_ring(cluster: &ClusterConfig) -> Result<Option<WsClientChannel>, String> {
    let coordinator = ws_address(cluster.coordinator)?;
    let mut join = loop {
        if let Some(channel) = WsClient::connect(coordinator.clone(), "join").await {
            break channel;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let hello = format!(
        "{} {} {}",
        cluster.rank, cluster.nodes, cluster.node_address
    );
    join.send(Message::new(hello.into_bytes().into()))
        .await
        .map_err(|e| format!("the coordinator closed the connection ({e:?})"))?;
    let answer = match join.recv().await {
        Ok(Some(m)) => String::from_utf8_lossy(&m.data).to_string(),
        _ => return Err("the coordinator closed the connection before every node arrived".into()),
    };
    if let Some(e) = answer.strip_prefix("error: ") {
        return Err(format!("the coordinator refused this node: {e}"));
    }
    let addresses: Vec<&str> = answer.split(' ').collect();
    if addresses.len() != cluster.nodes {
        return Err(format!("the coordinator answered {answer:?}"));
    }
    let next = addresses[(cluster.rank + 1) % cluster.nodes];
    let next = SocketAddr::from_str(next).map_err(|e| format!("next node {next}: {e}"))?;
    let start = Instant::now();
    loop {
        if let Some(channel) = WsClient::connect(ws_address(next)?, "ring").await {
            return Ok(Some(channel));
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("no ring route at the next node, {next}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether this node can serve on `port` (all interfaces, as burn-communication binds).
fn free_port(port: u16, flag: &str) -> Result<(), TrainError> {
    std::net::TcpListener::bind(("0.0.0.0", port))
        .map(drop)
        .map_err(|e| TrainError::Collective(format!("port {port} ({flag}) cannot be served: {e}")))
}

fn ws_address(addr: SocketAddr) -> Result<Address, String> {
    Address::from_str(&format!("ws://{addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    /// Three nodes (threads here; nothing is global) sum tensors of every length, again and
    /// again: every node gets the same bits, equal to the sum.
    #[test]
    fn three_nodes_sum_repeatedly_to_the_same_bits() {
        let port = test_support::net::free_ports(3);
        let coordinator = SocketAddr::from(([127, 0, 0, 1], port));
        let lengths = [0usize, 1, 2, 3, 7, 1000, (1 << 20) + 5];
        let results: Vec<Vec<Vec<f32>>> = std::thread::scope(|s| {
            let nodes: Vec<_> = (0..3)
                .map(|rank| {
                    s.spawn(move || {
                        let mut cluster = ClusterConfig::local(3, rank, coordinator);
                        cluster.timeout = Duration::from_secs(60);
                        let ring = RingCollective::join(&cluster).unwrap();
                        let device = Default::default();
                        lengths
                            .iter()
                            .map(|&n| {
                                let v: Vec<f32> = (0..n)
                                    .map(|i| (i as f32 + 0.25) * (rank + 1) as f32)
                                    .collect();
                                let t = Tensor::<Flex, 1>::from_floats(v.as_slice(), &device);
                                let sum = Collective::<Flex>::sum(&ring, t, "test").unwrap();
                                sum.into_data().to_vec::<f32>().unwrap()
                            })
                            .collect()
                    })
                })
                .collect();
            nodes.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results[0], results[1]);
        assert_eq!(results[0], results[2]);
        for (sums, &n) in results[0].iter().zip(&lengths) {
            assert_eq!(sums.len(), n);
            for (i, &x) in sums.iter().enumerate() {
                let expected = (i as f32 + 0.25) * 6.0;
                assert!(
                    (x - expected).abs() <= 1e-6 * expected,
                    "{n}: [{i}] {x} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn a_port_in_use_is_an_error_that_names_it() {
        let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut cluster = ClusterConfig::local(2, 1, SocketAddr::from(([127, 0, 0, 1], 1)));
        cluster.node_address = SocketAddr::from(([127, 0, 0, 1], port));
        let err = RingCollective::join(&cluster)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains(&format!("port {port} (--node-address)")),
            "{err}"
        );
    }
}
