//! A cluster of real nodes on loopback for the multi-node tests: started one by one
//! through the first node as seed, killed (by PID) when dropped.

use std::time::{Duration, Instant};

use super::{free_ports, test_dir, Server};
use ringkv::client::blocking::BlockingClient;
use ringkv::client::ClientError;
use ringkv::membership::detector::Status as Health;
use ringkv::protocol::{Consistency, Status};

pub struct Cluster {
    pub nodes: Vec<Server>,
    pub dir: std::path::PathBuf,
    /// Flags every node gets besides the test's own.
    extra: Vec<String>,
}

/// How many members node `server` knows.
pub fn members_known(server: &Server) -> usize {
    ringkv::local::members_known(server.port)
}

pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Cluster {
    /// `count` nodes of 2 shards; the first is every other's seed. Each starts once
    /// the ones before it know each other, so each joins the whole ring.
    pub fn start(name: &str, count: usize) -> Cluster {
        Cluster::start_with(name, count, &[])
    }

    pub fn start_with(name: &str, count: usize, extra: &[&str]) -> Cluster {
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir: test_dir(name),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for _ in 0..count {
            cluster.add_node();
        }
        cluster
    }

    /// Starts one more node (the first node is its seed) and waits until every node
    /// knows every other.
    pub fn add_node(&mut self) {
        let i = self.nodes.len();
        let seeds = self.nodes.first().map(|n| format!("127.0.0.1:{}", n.port));
        let mut args = vec!["--sync", "batch"];
        // Defaults for tests (fast gossip, patient replicas) unless the test set them.
        for (flag, value) in [
            ("--membership-interval-ms", "100"),
            ("--replica-timeout-ms", "3000"),
        ] {
            if !self.extra.iter().any(|e| e == flag) {
                args.extend([flag, value]);
            }
        }
        if let Some(seeds) = seeds.as_deref() {
            args.extend(["--seeds", seeds]);
        }
        args.extend(self.extra.iter().map(String::as_str));
        let data = self.dir.join(format!("node{i}"));
        let mut last = String::new();
        let server = (0..5)
            .find_map(|_| match Server::start_on(&data, free_ports(3), 2, &args) {
                Ok(server) => Some(server),
                Err(e) => {
                    last = e;
                    None
                }
            })
            .unwrap_or_else(|| panic!("node {i} did not start: {last}"));
        self.nodes.push(server);
        let known = self.nodes.len();
        let nodes = &self.nodes;
        wait_until("every node knows every other", || {
            nodes.iter().all(|n| members_known(n) == known)
        });
    }

    pub fn client(&self, node: usize, consistency: Consistency) -> BlockingClient {
        let mut client = self.nodes[node].client();
        client.set_consistency(consistency);
        client
    }
}

impl Cluster {
    /// Node `node`'s view of the cluster (CLUSTER_STATUS).
    pub fn view(&self, node: usize) -> Result<ringkv::membership::ClusterView, String> {
        ringkv::status::cluster_view("127.0.0.1", self.nodes[node].port, Duration::from_secs(5))
    }

    /// Node `node`'s id.
    pub fn node_id(&self, node: usize) -> u64 {
        self.view(node).expect("the node answers").observer
    }

    /// What `observer` holds of `node`: its status, and the hints it keeps for it.
    pub fn seen(
        &self,
        observer: usize,
        node: u64,
    ) -> Option<(ringkv::membership::detector::Status, u64)> {
        let view = self.view(observer).ok()?;
        let peer = view.members.iter().find(|m| m.node_id == node)?;
        Some((peer.status, peer.hints))
    }

    /// Applies a fault change on node `node` (`ringkv admin fault`).
    pub fn fault(&self, node: usize, change: ringkv::server::faults::FaultChange) {
        let response = self.nodes[node]
            .client()
            .request(&ringkv::protocol::Request::Fault {
                spec: change.encode().into(),
            })
            .expect("the node answers");
        assert_eq!(response.status, Status::Ok, "{}", response.message);
    }

    /// Cuts the nodes of `side` off from the others, both ways (every node drops what
    /// it would send across; faults set before are cleared first).
    pub fn partition(&self, side: &[usize]) {
        let ids: Vec<u64> = (0..self.nodes.len()).map(|i| self.node_id(i)).collect();
        for node in 0..self.nodes.len() {
            let inside = side.contains(&node);
            let drop_to = (0..ids.len())
                .filter(|&other| side.contains(&other) != inside)
                .map(|other| ids[other])
                .collect();
            self.fault(
                node,
                ringkv::server::faults::FaultChange {
                    heal: true,
                    drop_to,
                    ..Default::default()
                },
            );
        }
    }

    /// Clears every fault on every node.
    pub fn heal(&self) {
        for node in 0..self.nodes.len() {
            let heal = ringkv::server::faults::FaultChange {
                heal: true,
                ..Default::default()
            };
            self.fault(node, heal);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill9();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn values(client: &mut BlockingClient, key: &str) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = client
        .get(key.as_bytes())
        .unwrap()
        .values
        .iter()
        .map(|v| v.value.to_vec())
        .collect();
    v.sort();
    v
}

pub fn unavailable(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    match result {
        Err(ClientError::Server {
            status: Status::Unavailable,
            message,
        }) => message,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// Waits until `done`, at most `limit`; how long it took.
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// Waits until every node sees every other Up, with a few heartbeats behind it (so the
/// detector has a rhythm to judge by).
pub fn wait_all_up(cluster: &Cluster, limit: Duration) {
    let ids: Vec<u64> = (0..cluster.nodes.len())
        .map(|i| cluster.node_id(i))
        .collect();
    wait_for("every node sees every other Up", limit, || {
        (0..cluster.nodes.len()).all(|observer| {
            let Ok(view) = cluster.view(observer) else {
                return false;
            };
            ids.iter().all(|&id| {
                view.members
                    .iter()
                    .any(|m| m.node_id == id && m.status == Health::Up && m.heartbeat.counter >= 3)
            })
        })
    });
}
