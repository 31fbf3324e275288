//! The control plane, on shard 0: the member table, gossip and the failure detector.
//!
//! Every `--membership-interval-ms` the node bumps its heartbeat, lets the detector
//! re-judge every peer, and gossips (push-pull: each MEMBERS request carries this
//! node's [`Exchange`], its answer the peer's) with up to 3 random members and with
//! every seed that is not a member it knows. What comes back merges into the table (a
//! changed table is published to every shard as a new ring snapshot, and kept on disk)
//! and feeds the detector; status changes are published to every shard as a new
//! [`Health`]. The decisions are [`crate::membership::gossip`]'s and
//! [`crate::membership::detector`]'s; this module moves bytes and runs the timer.
//!
//! The shards report their hints here ([`HintReport`]), for CLUSTER_STATUS.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::membership::detector::{Detector, DetectorConfig, Heartbeat, Status, Transition};
use crate::membership::gossip::Gossip;
use crate::membership::{
    ClusterView, Exchange, Health, MemberInfo, MemberTable, PeerView, Snapshot,
};
use crate::protocol::{Request, ResponseBody, Status as WireStatus};
use crate::ring::cluster::NodeId;
use crate::runtime::join::{parse_addr, Joined};
use crate::runtime::ShardMsg;
use crate::version::now_us;

use super::Shard;

/// One shard's hints, as it last reported them to the control plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HintReport {
    /// `(target, hints, bytes)`.
    pub pending: Vec<(NodeId, u64, u64)>,
    pub dropped: u64,
    pub refused: u64,
}

/// Rounds between two measurements of this node's own load (a walk of the data dir).
const LOAD_EVERY_ROUNDS: u64 = 10;

pub struct Control {
    me: MemberInfo,
    table: RefCell<MemberTable>,
    seeds: Vec<(String, u16)>,
    interval: Duration,
    replication_factor: usize,
    /// Where the table is kept across restarts (`DATA/members`).
    data_dir: std::path::PathBuf,
    gossip: RefCell<Gossip>,
    detector: RefCell<Detector>,
    /// Every node's load as last heard, with the heartbeat it was measured at.
    loads: RefCell<BTreeMap<NodeId, (Heartbeat, u64)>>,
    health: RefCell<Health>,
    rng: RefCell<StdRng>,
    rounds: Cell<u64>,
    hints: RefCell<BTreeMap<usize, HintReport>>,
    /// Per shard, what its syncs did with each peer.
    syncs: RefCell<BTreeMap<usize, Vec<(NodeId, super::antientropy::PeerSync)>>>,
}

impl Control {
    pub fn new(
        joined: Joined,
        seeds: &[String],
        interval: Duration,
        replication_factor: usize,
        data_dir: std::path::PathBuf,
    ) -> Control {
        let me = joined.me;
        let detector = Detector::new(DetectorConfig {
            first_interval_us: interval.as_micros() as u64,
            ..DetectorConfig::default()
        });
        let control = Control {
            gossip: RefCell::new(Gossip::new(me.node_id, me.generation)),
            detector: RefCell::new(detector),
            loads: RefCell::default(),
            health: RefCell::default(),
            rng: RefCell::new(StdRng::seed_from_u64(me.node_id ^ me.generation)),
            rounds: Cell::new(0),
            hints: RefCell::default(),
            syncs: RefCell::default(),
            table: RefCell::new(MemberTable::default()),
            me,
            seeds: seeds.iter().filter_map(|s| parse_addr(s).ok()).collect(),
            interval,
            replication_factor,
            data_dir,
        };
        control.table.borrow_mut().merge(&joined.table);
        control.watch_new_members();
        control
    }

    pub fn node_id(&self) -> NodeId {
        self.me.node_id
    }

    /// Starts the detector's clock on every member it has not heard of yet, so that one
    /// that never speaks becomes Suspect like one that fell silent.
    fn watch_new_members(&self) {
        let now = now_us();
        let mut gossip = self.gossip.borrow_mut();
        let mut detector = self.detector.borrow_mut();
        for member in self.table.borrow().members() {
            if member.node_id != self.me.node_id && detector.status(member.node_id).is_none() {
                gossip.learn(member.node_id);
                detector.heartbeat(member.node_id, Heartbeat::default(), now);
            }
        }
    }

    /// This node's side of an exchange.
    fn exchange_message(&self) -> Exchange {
        Exchange {
            from: self.me.node_id,
            table: self.table.borrow().clone(),
            heartbeats: self.gossip.borrow().digest(),
            loads: self
                .loads
                .borrow()
                .iter()
                .map(|(&node, &(heartbeat, bytes))| (node, heartbeat, bytes))
                .collect(),
        }
    }

    /// Takes in a peer's encoded exchange (empty: a client asking) and returns this
    /// node's, encoded, to answer with.
    pub fn exchange(&self, shard: &Shard, incoming: &[u8]) -> Result<Vec<u8>, String> {
        if !incoming.is_empty() {
            let theirs = Exchange::decode(incoming)?;
            self.take_in(shard, &theirs);
        }
        Ok(self.exchange_message().encode())
    }

    fn take_in(&self, shard: &Shard, theirs: &Exchange) {
        let changed = self.table.borrow_mut().merge(&theirs.table);
        if changed {
            self.watch_new_members();
            self.publish(shard);
        }
        let transitions = self.gossip.borrow_mut().receive(
            theirs.from,
            &theirs.heartbeats,
            now_us(),
            &mut self.detector.borrow_mut(),
        );
        {
            let mut loads = self.loads.borrow_mut();
            for &(node, heartbeat, bytes) in &theirs.loads {
                if node == self.me.node_id {
                    continue;
                }
                match loads.get(&node) {
                    Some(&(known, _)) if known >= heartbeat => {}
                    _ => {
                        loads.insert(node, (heartbeat, bytes));
                    }
                }
            }
        }
        self.apply(shard, &transitions);
    }

    /// Records status changes and, if any, publishes the new health to every shard.
    fn apply(&self, shard: &Shard, transitions: &[Transition]) {
        if transitions.is_empty() {
            return;
        }
        let now = now_us();
        let health = {
            let mut health = self.health.borrow_mut();
            for t in transitions {
                eprintln!(
                    "ringkv: node {:016x} sees {:016x} {:?} (was {:?})",
                    self.me.node_id, t.node, t.to, t.from
                );
                match t.to {
                    Status::Up => {
                        health.not_up.remove(&t.node);
                    }
                    // Since when it is in this status: the hint window counts from
                    // the moment it went Down.
                    status => {
                        health.not_up.insert(t.node, (status, now));
                    }
                }
            }
            Arc::new(health.clone())
        };
        for inbox in &shard.peers {
            let (inbox, health) = (inbox.clone(), health.clone());
            glommio::spawn_local(async move {
                let _ = inbox.send_async(ShardMsg::Health(health)).await;
            })
            .detach();
        }
    }

    /// Sends every shard (this one too) a snapshot of the current table.
    fn publish(&self, shard: &Shard) {
        let table = self.table.borrow().clone();
        let snapshot = match Snapshot::new(table, self.replication_factor) {
            Ok(snapshot) => Arc::new(snapshot),
            Err(e) => {
                eprintln!("ringkv: member table refused, keeping the old ring: {e}");
                return;
            }
        };
        eprintln!(
            "ringkv: node {:016x} now knows {} members",
            self.me.node_id,
            snapshot.members.len()
        );
        // Keep it for the next start (a blocking write: off the executor thread).
        let (dir, table) = (self.data_dir.clone(), snapshot.members.clone());
        glommio::spawn_local(async move {
            let stored = glommio::executor()
                .spawn_blocking(move || crate::storage::node_members::store(&dir, &table))
                .await;
            if let Err(e) = stored {
                eprintln!("ringkv: keeping the member table: {e}");
            }
        })
        .detach();
        for inbox in &shard.peers {
            let (inbox, snapshot) = (inbox.clone(), snapshot.clone());
            glommio::spawn_local(async move {
                let _ = inbox.send_async(ShardMsg::Snapshot(snapshot)).await;
            })
            .detach();
        }
    }

    /// Whom to gossip with this round: up to 3 random members, and every seed that is
    /// not the address of a member this node knows.
    fn targets(&self) -> Vec<(Option<NodeId>, String, u16)> {
        let table = self.table.borrow();
        let picked = self.gossip.borrow().pick_peers(&mut *self.rng.borrow_mut());
        let mut targets: Vec<(Option<NodeId>, String, u16)> = picked
            .into_iter()
            .filter_map(|node| table.get(node))
            .map(|m| (Some(m.node_id), m.host.clone(), m.port))
            .collect();
        for (host, port) in &self.seeds {
            let known = table.members().any(|m| m.host == *host && m.port == *port);
            let me = *host == self.me.host && *port == self.me.port;
            if !known && !me {
                targets.push((None, host.clone(), *port));
            }
        }
        targets
    }

    /// A shard's hints changed.
    pub fn hint_report(&self, shard: usize, report: HintReport) {
        self.hints.borrow_mut().insert(shard, report);
    }

    /// What a shard's syncs did, per peer.
    pub fn sync_report(&self, shard: usize, peers: Vec<(NodeId, super::antientropy::PeerSync)>) {
        self.syncs.borrow_mut().insert(shard, peers);
    }

    /// The node's whole view, for CLUSTER_STATUS.
    pub fn view(&self) -> ClusterView {
        let now = now_us();
        let detector = self.detector.borrow();
        let loads = self.loads.borrow();
        let hints = self.hints.borrow();
        let mut pending: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
        for report in hints.values() {
            for &(target, count, bytes) in &report.pending {
                let entry = pending.entry(target).or_default();
                entry.0 += count;
                entry.1 += bytes;
            }
        }
        let mut synced: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
        for peers in self.syncs.borrow().values() {
            for (node, sync) in peers {
                let entry = synced.entry(*node).or_default();
                entry.0 = entry.0.max(sync.last_sync_us);
                entry.1 += sync.keys_repaired;
            }
        }
        let members = self
            .table
            .borrow()
            .members()
            .map(|m| {
                let me = m.node_id == self.me.node_id;
                let (last_sync_us, keys_repaired) =
                    synced.get(&m.node_id).copied().unwrap_or_default();
                let (hints, hint_bytes) = pending.get(&m.node_id).copied().unwrap_or_default();
                PeerView {
                    node_id: m.node_id,
                    host: m.host.clone(),
                    port: m.port,
                    dc: m.dc.clone(),
                    rack: m.rack.clone(),
                    tokens: m.tokens.len() as u32,
                    status: if me {
                        Status::Up
                    } else {
                        detector.status(m.node_id).unwrap_or(Status::Up)
                    },
                    phi: if me {
                        0.0
                    } else {
                        detector.phi(m.node_id, now)
                    },
                    heartbeat: self
                        .gossip
                        .borrow()
                        .heartbeat_of(m.node_id)
                        .unwrap_or_default(),
                    load_bytes: loads.get(&m.node_id).map(|&(_, bytes)| bytes),
                    hints,
                    hint_bytes,
                    last_sync_us,
                    keys_repaired,
                }
            })
            .collect();
        ClusterView {
            observer: self.me.node_id,
            replication_factor: self.replication_factor as u8,
            members,
            hints_dropped: hints.values().map(|r| r.dropped).sum(),
            hints_refused: hints.values().map(|r| r.refused).sum(),
        }
    }
}

/// Gossips once per interval, for as long as the shard runs.
pub async fn run(shard: Rc<Shard>) {
    let control = shard
        .control
        .as_ref()
        .expect("shard 0 runs the control plane");
    loop {
        let round = control.rounds.get();
        control.rounds.set(round + 1);
        control.gossip.borrow_mut().beat();
        if round % LOAD_EVERY_ROUNDS == 0 {
            let dir = shard.data_dir.clone();
            let bytes = glommio::executor()
                .spawn_blocking(move || super::dispatch::dir_bytes(&dir))
                .await;
            let own = control.gossip.borrow().heartbeat_of(control.me.node_id);
            control
                .loads
                .borrow_mut()
                .insert(control.me.node_id, (own.unwrap_or_default(), bytes));
        }
        let transitions = control.detector.borrow_mut().tick(now_us());
        control.apply(&shard, &transitions);
        let message = Bytes::from(control.exchange_message().encode());
        for (node, host, port) in control.targets() {
            // Each exchange on its own: a peer that does not answer holds up no other.
            let (shard, message) = (shard.clone(), message.clone());
            glommio::spawn_local(async move {
                gossip_with(&shard, node, &host, port, message).await;
            })
            .detach();
        }
        glommio::timer::sleep(control.interval).await;
    }
}

async fn gossip_with(shard: &Shard, node: Option<NodeId>, host: &str, port: u16, message: Bytes) {
    let control = shard.control.as_ref().expect("shard 0");
    let request = Request::Members { table: message };
    // A node that is down has nothing to tell this round; the detector notices.
    let timeout = control.interval.min(shard.replica_timeout);
    let Ok(response) = shard.net.request(node, host, port, &request, timeout).await else {
        return;
    };
    match (response.status, response.body) {
        (WireStatus::Ok, ResponseBody::Members { table }) => match Exchange::decode(&table) {
            Ok(theirs) => control.take_in(shard, &theirs),
            Err(e) => eprintln!("ringkv: gossip from {host}:{port}: {e}"),
        },
        (status, _) => eprintln!(
            "ringkv: {host}:{port} answered MEMBERS with {status:?}: {}",
            response.message
        ),
    }
}
