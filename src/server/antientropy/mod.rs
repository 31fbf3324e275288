//! Anti-entropy, the do half: the shard's Merkle trees kept current by the engine, the
//! background sync with the other replicas of each range, `ringkv repair`, and the
//! proof that lets compaction drop a tombstone. The decisions (trees, comparison, key
//! diff) are `crate::antientropy`'s; this module moves bytes and keeps the state.
//!
//! # Trees
//!
//! One tree per vnode range this shard replicates under the current ring (`Trees`).
//! The engine reports every change to a key's set ([`KeyChange`]): a write or merge
//! that read the old set moves the key's leaf by `new - old` in O(1); a blind `lww`
//! write, a flush's clock pruning or a compaction's purge marks the leaf dirty, so that
//! the next sync lists it from storage and rebuilds it. At start-up, and when a ring
//! change moves this shard's ranges, one scan of the shard builds the trees in the
//! background; writes during the scan mark their leaves dirty, and until the scan ends
//! the shard neither starts nor accepts syncs.
//!
//! # A sync (initiator side, [`sync_batch`])
//!
//! A round syncs every range with every peer; the ranges shared with one peer go in
//! batches of up to `BATCH_RANGES`, each range a session of its own.
//!
//! 1. Compare, range by range: snapshot the range's tree, run `antientropy::Session`
//!    over SYNC frames (COMPARE steps) until the differing leaves are known. Equal
//!    trees: one round trip, then END. Differing ones: LEAVES tells the peer which
//!    leaves differ, and it drops its snapshot (it holds at most `COMPARING_MAX`).
//! 2. List, once per batch: both sides scan storage once for the keys of every
//!    differing leaf of the batch (the peer on a LIST step naming the batch's sessions,
//!    paged back), and rebuild those leaves from what they listed (a leaf written
//!    meanwhile is left for the next sync). Storage is sorted by key, not token, so a
//!    scan reads the whole shard; batching makes that one scan per batch instead of
//!    one per differing range.
//! 3. Repair: `diff_keys` says which keys differ. This side pushes its sets as
//!    REPLICA_WRITEs, then FETCHes the peer's sets and merges them. A FETCH carries
//!    the contribution of this side's set, and the peer sends back only a set that
//!    still differs from it (its own was newer, or concurrent): after the merges both
//!    hold the same set.
//! 4. End: END with `complete` on each session when every push and merge of the batch
//!    succeeded. Only then do both sides record the sync (`Range::synced`) for the
//!    proof below. A failed sync sends END without `complete`, so the peer drops its
//!    session; a batch's listed ranges succeed or fail together.
//!
//! Scans read at most `--sync-scan-bytes-per-sec`, pushes and fetches move at most
//! `--sync-bytes-per-sec` and `--sync-keys-per-sec` (`Pace`). Builds, rounds
//! (periodic, `ringkv repair`, a replacement's fill) and the scans that answer a peer's
//! LIST run in a task queue with a tenth of the shares requests get. A LIST step may take up to 15 minutes (the peer scans
//! first); every other step waits `--replica-timeout-ms`.
//!
//! # Tombstones are dropped by proof (`Range::proven`)
//!
//! Compaction may drop a deleted key past `--gc-grace` only when every other replica
//! of its range is known to hold the delete (or something newer). A complete sync with
//! a peer, begun at time `T`, proves that the peer holds every set this shard held at
//! `T`: equal leaves hold equal sets, and differing ones were pushed. So the shard keeps,
//! per group of 64 leaves, the second the latest tombstone arrived there (start-up
//! counts as the arrival of everything stored), and a tombstone is proven once every
//! peer's last complete sync began after that. Nothing is dropped on time alone.
//!
//! A replica that purged a key and one that still holds its tombstone differ; without
//! care the tombstone would travel back, be stored anew and wait for proof again. So a
//! side that may itself drop a tombstone (past grace and proven) does not send it to a
//! peer that holds no copy of the key at all: not in a push, not in a FETCH answer.
//!
//! # Not done
//!
//! Keys of a leaf are listed by scanning the whole shard (one paced scan per batch on
//! each side). Incoming sets are merged as they come (clock pruning applies later, on
//! the way into a table), so a replica that pruned an entry gets it back until its
//! peers prune it too. Steps are not authenticated (no internal request is): a sender
//! can name any node as `from`, so whoever can reach the internal ports could forge
//! the END that counts toward a tombstone's proof. The simulator does not run anti-entropy yet.

pub mod wire;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::antientropy::{
    contribution, decode, diff_keys, encode, KeyDigest, Limits, MerkleTree, Message, Refuse,
    RefuseReason, Session, Shape, TokenRange,
};
use crate::membership::Snapshot;
use crate::protocol::{Request, ResponseBody, Status};
use crate::ring::cluster::{NodeId, Replica};
use crate::ring::Token;
use crate::runtime::ShardMsg;
use crate::storage::engine::{ChangeHook, KeyChange, PurgeRule};
use crate::version::{now_us, VersionSet};
use wire::{Reply, Step, StepRequest, TreeInfo};

use super::Shard;

/// Leaves per tombstone-arrival group: `2^(depth - GROUP_LEVEL)`.
const GROUP_LEVEL: u8 = 8;
/// Most comparisons one shard answers at once (each holds a snapshot of its tree:
/// 256 KiB at depth 14); more are refused as busy.
const COMPARING_MAX: usize = 8;
/// Most sessions one shard keeps at once, compared or listed (a few bytes each, plus
/// the differing leaves until they are listed).
const SESSIONS_MAX: usize = 512;
/// Ranges one batch of a round compares with a peer before it lists their differing
/// leaves in one scan on each side (`sync_batch`).
const BATCH_RANGES: usize = 64;
/// A responder's session nobody stepped for this long is dropped; once listed, the
/// initiator may push and fetch for a long time before its END.
const SESSION_IDLE: Duration = Duration::from_secs(60);
const LISTED_IDLE: Duration = Duration::from_secs(30 * 60);
/// Bytes of keys one LIST page carries, of sets one FETCH answer carries.
const PAGE_BYTES: usize = 256 << 10;
/// Keys one FETCH asks for.
const FETCH_KEYS: usize = 64;
/// Pushes in flight at once.
const PUSH_WINDOW: usize = 16;
/// How long a LIST step may take: the peer scans its shard at its scan budget first
/// (a 10 GiB shard at 32 MiB/s takes 5 minutes). Other steps wait the replica timeout.
const LIST_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How the shard syncs (`ServerConfig`'s `--sync-*` and `--gc-grace`).
#[derive(Clone, Copy, Debug)]
pub struct SyncConfig {
    /// Between two periodic rounds (`None`: only `ringkv repair`).
    pub interval: Option<Duration>,
    pub scan_bytes_per_sec: u64,
    pub transfer_bytes_per_sec: u64,
    pub transfer_keys_per_sec: u64,
    pub gc_grace_us: u64,
    pub depth: u8,
}

/// One vnode range this shard replicates.
struct Range {
    range: TokenRange,
    /// The other replicas of the range.
    peers: Vec<Replica>,
    tree: MerkleTree,
    /// Per group of leaves: the second (since the epoch) the latest tombstone-only set
    /// arrived there.
    tombstones: Vec<u32>,
    /// Per peer: when the last complete sync with it began (µs since the epoch).
    synced: BTreeMap<NodeId, u64>,
}

impl Range {
    fn group_of(&self, token: Token) -> usize {
        let level = GROUP_LEVEL.min(self.tree.shape().depth);
        self.tree.shape().node_of(token, level).unwrap_or(0) as usize
    }

    /// Whether every peer completed a sync that began after the latest tombstone of
    /// `token`'s group arrived.
    fn proven(&self, token: Token) -> bool {
        let arrived_by_us = (u64::from(self.tombstones[self.group_of(token)]) + 1) * 1_000_000;
        self.peers.iter().all(|p| {
            self.synced
                .get(&p.node_id)
                .is_some_and(|&t| t > arrived_by_us)
        })
    }
}

/// The shard's trees under one ring snapshot.
struct Trees {
    snapshot: Arc<Snapshot>,
    /// Bumped on every rebuild: a listing begun on older trees does not touch newer ones.
    generation: u64,
    /// Ring range index → index in `ranges`.
    slot_of: AHashMap<usize, usize>,
    ranges: Vec<Range>,
    /// A build scan runs: writes only mark leaves dirty.
    building: bool,
    /// Built: the shard syncs and answers syncs.
    ready: bool,
}

impl Trees {
    /// Empty trees for the ranges `me` replicates under `snapshot`, carrying over the
    /// proof state of ranges whose replicas did not change.
    fn new(snapshot: Arc<Snapshot>, me: Replica, depth: u8, old: Option<&Trees>) -> Trees {
        let now_secs = (now_us() / 1_000_000) as u32;
        let ring = &snapshot.ring;
        let mut slot_of = AHashMap::new();
        let mut ranges = Vec::new();
        for index in 0..ring.range_count() {
            let (start, end, list) = ring.range(index);
            if !list.contains(&me) {
                continue;
            }
            let range = TokenRange::new(start, end);
            let peers: Vec<Replica> = list.iter().copied().filter(|r| *r != me).collect();
            let tree = MerkleTree::new(Shape::new(range, depth));
            let groups = 1usize << GROUP_LEVEL.min(depth);
            let kept = old
                .and_then(|o| o.by_range(range))
                .filter(|r| r.peers == peers);
            let (tombstones, synced) = match kept {
                Some(r) => (r.tombstones.clone(), r.synced.clone()),
                None => (vec![now_secs; groups], BTreeMap::new()),
            };
            slot_of.insert(index, ranges.len());
            ranges.push(Range {
                range,
                peers,
                tree,
                tombstones,
                synced,
            });
        }
        Trees {
            snapshot,
            generation: old.map_or(0, |o| o.generation + 1),
            slot_of,
            ranges,
            building: true,
            ready: false,
        }
    }

    fn locate(&self, token: Token) -> Option<usize> {
        let index = self.snapshot.ring.range_index(token);
        self.slot_of.get(&index).copied()
    }

    fn by_range(&self, range: TokenRange) -> Option<&Range> {
        self.ranges.iter().find(|r| r.range == range)
    }

    fn by_range_mut(&mut self, range: TokenRange) -> Option<&mut Range> {
        self.ranges.iter_mut().find(|r| r.range == range)
    }

    /// Whether every other replica of `key`'s range is proven to hold its latest
    /// tombstone (module doc); never while the trees are not built, nor for a key
    /// outside the shard's ranges.
    fn proven(&self, key: &[u8]) -> bool {
        let token = crate::ring::token(key);
        self.ready
            && self
                .locate(token)
                .is_some_and(|s| self.ranges[s].proven(token))
    }

    /// Whether `snapshot` gives this shard the same ranges with the same replicas.
    fn same_layout(&self, snapshot: &Snapshot, me: Replica) -> bool {
        let ring = &snapshot.ring;
        let mut mine = self.ranges.iter();
        for index in 0..ring.range_count() {
            let (start, end, list) = ring.range(index);
            if !list.contains(&me) {
                continue;
            }
            let Some(r) = mine.next() else { return false };
            let same_peers =
                r.peers.len() + 1 == list.len() && r.peers.iter().all(|p| list.contains(p));
            if r.range != TokenRange::new(start, end) || !same_peers {
                return false;
            }
        }
        mine.next().is_none()
    }
}

/// What this shard did with one peer, for `ringkv status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSync {
    /// When the last complete sync with the peer ended (µs since the epoch; 0: never).
    pub last_sync_us: u64,
    /// Keys pushed to it and pulled from it by syncs this shard began.
    pub keys_repaired: u64,
    pub syncs: u64,
    pub syncs_failed: u64,
}

/// What one repair round did (REPAIR's answer, summed over shards).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    pub shards: u32,
    /// Ranges the round went through, and (range, peer) syncs it ran.
    pub ranges: u64,
    pub syncs: u64,
    pub syncs_failed: u64,
    /// Peers skipped: Down, or a shard whose trees were not built yet.
    pub syncs_skipped: u64,
    /// Ranges no sync of the round completed for (every peer failed or was skipped).
    pub ranges_unsynced: u64,
    pub differing_leaves: u64,
    /// Syncs whose comparison found differing leaves, and the scans of this side's
    /// storage that listed their keys (one per batch of them with a peer).
    pub ranges_differing: u64,
    pub listings: u64,
    pub keys_pushed: u64,
    pub keys_pulled: u64,
    /// Deleted keys not sent back to a peer that had purged them.
    pub tombstones_withheld: u64,
    /// Bytes of SYNC steps and answers, pushes and fetched sets.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

impl RepairReport {
    pub fn add(&mut self, other: &RepairReport) {
        self.shards += other.shards;
        self.ranges += other.ranges;
        self.syncs += other.syncs;
        self.syncs_failed += other.syncs_failed;
        self.syncs_skipped += other.syncs_skipped;
        self.ranges_unsynced += other.ranges_unsynced;
        self.differing_leaves += other.differing_leaves;
        self.ranges_differing += other.ranges_differing;
        self.listings += other.listings;
        self.keys_pushed += other.keys_pushed;
        self.keys_pulled += other.keys_pulled;
        self.tombstones_withheld += other.tombstones_withheld;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a repair report always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<RepairReport, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("repair report does not decode: {e}"))
    }
}

/// A comparison this shard answers.
struct Responder {
    range: TokenRange,
    phase: Phase,
    generation: u64,
    began_us: u64,
    last_step: Instant,
    /// The keys a LIST on this session listed (for every session it named), and how
    /// many were paged out.
    listing: Option<(Vec<KeyDigest>, usize)>,
}

enum Phase {
    /// The comparison runs, on a snapshot of the tree.
    Comparing(Session),
    /// The initiator's comparison is over (LEAVES): these nodes of `level` differ.
    Compared { level: u8, leaves: Vec<u32> },
    /// A LIST covered the session: it waits for END.
    Listed,
}

impl Responder {
    fn idle(&self) -> bool {
        let limit = match self.phase {
            Phase::Listed => LISTED_IDLE,
            _ => SESSION_IDLE,
        };
        self.last_step.elapsed() >= limit
    }
}

/// The shard's anti-entropy state.
pub struct AntiEntropy {
    me: Replica,
    config: SyncConfig,
    trees: Rc<RefCell<Trees>>,
    sessions: RefCell<AHashMap<(NodeId, u64), Responder>>,
    peers: RefCell<BTreeMap<NodeId, PeerSync>>,
    /// One round at a time (periodic and `ringkv repair`).
    round: glommio::sync::Semaphore,
    limits: Limits,
    key_bytes_max: usize,
    /// Set while the shard of a node that replaced another (`--replace`) fills from the
    /// other replicas: it answers no reads as a replica until then. `filled` is the
    /// file that records the end of the fill.
    filling: std::cell::Cell<bool>,
    filled: std::path::PathBuf,
    /// Where everything anti-entropy does runs: fewer shares than requests.
    queue: glommio::TaskQueueHandle,
}

/// In a shard's directory: the fill of a replacing node's shard is done.
pub const FILLED_FILE: &str = "filled";

impl AntiEntropy {
    /// `replacing`: the node took over another's tokens and this shard has not filled
    /// yet unless `shard_dir` holds [`FILLED_FILE`].
    pub fn new(
        me: Replica,
        config: SyncConfig,
        snapshot: Arc<Snapshot>,
        key_bytes_max: usize,
        replacing: bool,
        shard_dir: &std::path::Path,
    ) -> AntiEntropy {
        let filled = shard_dir.join(FILLED_FILE);
        let queue = glommio::executor().create_task_queue(
            glommio::Shares::Static(100),
            glommio::Latency::NotImportant,
            "anti-entropy",
        );
        AntiEntropy {
            queue,
            filling: std::cell::Cell::new(replacing && !filled.exists()),
            filled,
            me,
            config,
            trees: Rc::new(RefCell::new(Trees::new(snapshot, me, config.depth, None))),
            sessions: RefCell::default(),
            peers: RefCell::default(),
            round: glommio::sync::Semaphore::new(1),
            limits: Limits::default(),
            key_bytes_max,
        }
    }

    /// The task queue anti-entropy runs in.
    pub fn queue(&self) -> glommio::TaskQueueHandle {
        self.queue
    }

    /// Whether the shard still fills from the other replicas (`--replace`): it must not
    /// answer reads as a replica, which would return nothing for what it has not got.
    pub fn is_filling(&self) -> bool {
        self.filling.get()
    }

    /// The engine's change hook: keeps the trees current (module doc, "Trees").
    pub fn change_hook(&self) -> ChangeHook {
        let trees = self.trees.clone();
        Box::new(move |key, change| {
            let token = crate::ring::token(key);
            let mut trees = trees.borrow_mut();
            let building = trees.building;
            let Some(slot) = trees.locate(token) else {
                return;
            };
            let range = &mut trees.ranges[slot];
            match change {
                KeyChange::Written {
                    old: Some(old),
                    new,
                    contribution,
                } if !building => {
                    range.tree.update(token, old, Some(contribution));
                    note_tombstone(range, token, new);
                }
                KeyChange::Written { new, .. } => {
                    range.tree.mark_dirty(token);
                    note_tombstone(range, token, new);
                }
                KeyChange::Rewritten => range.tree.mark_dirty(token),
            }
        })
    }

    /// The engine's purge rule: the proof of the module doc.
    pub fn purge_rule(&self) -> PurgeRule {
        let trees = self.trees.clone();
        Box::new(move |key, _| trees.borrow().proven(key))
    }

    /// Whether this shard may drop `versions` itself (a tombstone past grace, proven):
    /// then it need not hand it to a peer that holds no copy.
    fn may_drop(&self, key: &[u8], versions: &VersionSet) -> bool {
        crate::storage::compaction::purgeable(
            versions,
            now_us(),
            self.config.gc_grace_us,
            self.trees.borrow().proven(key),
        )
    }

    /// Per peer, what syncs did (for the control plane).
    pub fn peer_report(&self) -> Vec<(NodeId, PeerSync)> {
        self.peers.borrow().iter().map(|(&n, &p)| (n, p)).collect()
    }

    fn note_peer(&self, peer: NodeId, f: impl FnOnce(&mut PeerSync)) {
        f(self.peers.borrow_mut().entry(peer).or_default());
    }

    /// The trees and their roots (TREES step).
    fn tree_infos(&self) -> Vec<TreeInfo> {
        let trees = self.trees.borrow();
        trees
            .ranges
            .iter()
            .map(|r| TreeInfo {
                start: r.range.start,
                end: r.range.end,
                root: r.tree.root(),
                dirty: r.tree.dirty_count(),
                ready: trees.ready,
            })
            .collect()
    }
}

fn note_tombstone(range: &mut Range, token: Token, new: &VersionSet) {
    if new.is_tombstone_only() {
        let group = range.group_of(token);
        range.tombstones[group] = (now_us() / 1_000_000) as u32;
    }
}

/// The shard's anti-entropy task: builds the trees, rebuilds them when the ring moves
/// this shard's ranges, and runs a round every interval.
pub async fn run(shard: Rc<Shard>) {
    build(&shard).await;
    if shard.antientropy.is_filling() {
        fill(&shard).await;
    }
    let mut last_round = Instant::now();
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let snapshot = shard.snapshot();
        let ae = &shard.antientropy;
        if !ae.trees.borrow().ready {
            // The last build failed (a storage error): try again.
            build(&shard).await;
            continue;
        }
        let changed = !Arc::ptr_eq(&snapshot, &ae.trees.borrow().snapshot);
        if changed {
            let same = ae.trees.borrow().same_layout(&snapshot, ae.me);
            if same {
                ae.trees.borrow_mut().snapshot = snapshot;
            } else {
                build(&shard).await;
                continue;
            }
        }
        let due = ae
            .config
            .interval
            .is_some_and(|i| last_round.elapsed() >= i);
        if due {
            let report = round(&shard, true).await;
            if let Some(e) = &report.first_error {
                eprintln!(
                    "ringkv: shard {}: anti-entropy: {} of {} syncs failed; first: {e}",
                    shard.id,
                    report.syncs_failed,
                    report.syncs + report.syncs_failed
                );
            }
            last_round = Instant::now();
        }
    }
}

/// A replacing node's shard: rounds with every replica of every range until one
/// completes with no failure and every range synced with at least one peer; then the
/// shard serves reads.
async fn fill(shard: &Rc<Shard>) {
    let ae = &shard.antientropy;
    let started = Instant::now();
    let mut keys = 0;
    loop {
        let snapshot = shard.snapshot();
        if !ae.trees.borrow().same_layout(&snapshot, ae.me) {
            build(shard).await;
        }
        let report = round(shard, false).await;
        keys += report.keys_pulled + report.keys_pushed;
        if report.syncs_failed == 0 && report.ranges_unsynced == 0 && report.ranges > 0 {
            break;
        }
        if let Some(e) = &report.first_error {
            eprintln!(
                "ringkv: shard {}: filling (--replace): {e}; retrying",
                shard.id
            );
        }
        glommio::timer::sleep(Duration::from_secs(1)).await;
    }
    if let Err(e) = std::fs::write(&ae.filled, b"") {
        eprintln!(
            "ringkv: {}: {e} (the fill runs again at the next start)",
            ae.filled.display()
        );
    }
    ae.filling.set(false);
    eprintln!(
        "ringkv: shard {}: filled from the other replicas in {:?} ({keys} keys); serving reads",
        shard.id,
        started.elapsed()
    );
}

/// Builds the trees of the current ring from one scan of the shard.
async fn build(shard: &Rc<Shard>) {
    let ae = &shard.antientropy;
    let _round = ae.round.acquire_permit(1).await.expect("never closed");
    let snapshot = shard.snapshot();
    let fresh = {
        let old = ae.trees.borrow();
        Trees::new(snapshot, ae.me, ae.config.depth, Some(&old))
    };
    let generation = fresh.generation;
    *ae.trees.borrow_mut() = fresh;
    ae.sessions.borrow_mut().clear();
    let started = Instant::now();
    let trees = &ae.trees;
    let wanted = |key: &[u8]| trees.borrow().locate(crate::ring::token(key)).is_some();
    let mut keys = 0u64;
    let scanned = shard
        .engine
        .scan(&wanted, ae.config.scan_bytes_per_sec, |key, versions| {
            let token = crate::ring::token(key);
            let mut trees = trees.borrow_mut();
            if let Some(slot) = trees.locate(token) {
                trees.ranges[slot]
                    .tree
                    .update(token, None, Some(contribution(key, versions)));
                keys += 1;
            }
        })
        .await;
    let mut trees = trees.borrow_mut();
    if trees.generation != generation {
        return;
    }
    match scanned {
        Ok(()) => {
            trees.building = false;
            trees.ready = true;
            eprintln!(
                "ringkv: shard {}: anti-entropy trees of {} ranges built from {keys} keys in {:?}",
                shard.id,
                trees.ranges.len(),
                started.elapsed()
            );
        }
        Err(e) => eprintln!(
            "ringkv: shard {}: building anti-entropy trees: {e}",
            shard.id
        ),
    }
}

/// One round: every range with every peer. `periodic` rounds start only the syncs
/// toward peers with a larger id (the other side starts the rest; an END records the
/// sync on both sides); `ringkv repair` starts them all. The ranges shared with one
/// peer go in batches (`sync_batch`), so that a round scans each side's storage once
/// per batch, not once per differing range.
pub async fn round(shard: &Rc<Shard>, periodic: bool) -> RepairReport {
    let ae = &shard.antientropy;
    let _round = ae.round.acquire_permit(1).await.expect("never closed");
    let mut report = RepairReport {
        shards: 1,
        ..RepairReport::default()
    };
    let (ready, work): (bool, Vec<(TokenRange, Vec<Replica>)>) = {
        let trees = ae.trees.borrow();
        let work = trees
            .ranges
            .iter()
            .map(|r| (r.range, r.peers.clone()))
            .collect();
        (trees.ready, work)
    };
    report.ranges = work.len() as u64;
    let mut synced: Vec<bool> = work.iter().map(|(_, peers)| peers.is_empty()).collect();
    // Each peer with the indexes (into `work`) of the ranges it shares with this shard.
    let mut by_peer: Vec<(Replica, Vec<usize>)> = Vec::new();
    for (index, (_, peers)) in work.iter().enumerate() {
        for &peer in peers {
            match by_peer.iter_mut().find(|(p, _)| *p == peer) {
                Some((_, ranges)) => ranges.push(index),
                None => by_peer.push((peer, vec![index])),
            }
        }
    }
    let health = shard.health();
    for (peer, ranges) in by_peer {
        if periodic && peer.node_id < shard.node_id {
            continue;
        }
        if !ready || !health.is_up(peer.node_id) {
            report.syncs_skipped += ranges.len() as u64;
            continue;
        }
        for batch in ranges.chunks(BATCH_RANGES) {
            let batch_ranges: Vec<TokenRange> = batch.iter().map(|&i| work[i].0).collect();
            let results = sync_batch(shard, peer, &batch_ranges, &mut report).await;
            for (&index, result) in batch.iter().zip(results) {
                match result {
                    Ok(()) => {
                        synced[index] = true;
                        report.syncs += 1;
                        ae.note_peer(peer.node_id, |p| {
                            p.syncs += 1;
                            p.last_sync_us = now_us();
                        });
                    }
                    Err(e) => {
                        let range = work[index].0;
                        report.syncs_failed += 1;
                        ae.note_peer(peer.node_id, |p| p.syncs_failed += 1);
                        if report.first_error.is_none() {
                            report.first_error = Some(format!(
                                "range ({:#018x}, {:#018x}] with node {:016x}: {e}",
                                range.start, range.end, peer.node_id
                            ));
                        }
                    }
                }
            }
            glommio::yield_if_needed().await;
        }
    }
    if !periodic {
        report.ranges_unsynced = synced.iter().filter(|&&s| !s).count() as u64;
    }
    report_to_control(shard);
    report
}

fn report_to_control(shard: &Shard) {
    let message = ShardMsg::Syncs {
        shard: shard.id,
        peers: shard.antientropy.peer_report(),
    };
    let _ = shard.peers[0].try_send(message);
}

/// A budget of bytes and keys per second (0: no limit): `spend` sleeps while ahead of
/// either.
struct Pace {
    bytes_per_sec: u64,
    keys_per_sec: u64,
    started: Instant,
    bytes: u64,
    keys: u64,
}

impl Pace {
    fn new(config: &SyncConfig) -> Pace {
        Pace {
            bytes_per_sec: config.transfer_bytes_per_sec,
            keys_per_sec: config.transfer_keys_per_sec,
            started: Instant::now(),
            bytes: 0,
            keys: 0,
        }
    }

    async fn spend(&mut self, bytes: usize, keys: usize) {
        self.bytes += bytes as u64;
        self.keys += keys as u64;
        let due = |spent: u64, per_sec: u64| match per_sec {
            0 => Duration::ZERO,
            _ => Duration::from_secs_f64(spent as f64 / per_sec as f64),
        };
        let due = due(self.bytes, self.bytes_per_sec).max(due(self.keys, self.keys_per_sec));
        let ahead = due.saturating_sub(self.started.elapsed());
        if ahead >= Duration::from_millis(1) {
            glommio::timer::sleep(ahead).await;
        }
    }
}

/// Sends one step to the peer's shard and decodes its answer.
async fn step(
    shard: &Shard,
    peer: Replica,
    session: u64,
    step: Step,
    report: &mut RepairReport,
) -> Result<Reply, String> {
    let listing = matches!(step, Step::List { .. } | Step::ListNext);
    let body = wire::encode_step(&StepRequest {
        from: shard.node_id,
        session,
        step,
    });
    report.bytes_sent += body.len() as u64;
    let request = Request::Sync {
        shard: peer.shard,
        body: body.into(),
    };
    let response = if listing {
        let snapshot = shard.snapshot();
        let member = snapshot
            .members
            .get(peer.node_id)
            .ok_or_else(|| format!("node {:016x} is not in the member table", peer.node_id))?;
        let port = member.shard_port(peer.shard);
        shard
            .net
            .request(
                Some(peer.node_id),
                &member.host,
                port,
                &request,
                LIST_TIMEOUT,
            )
            .await?
    } else {
        super::coordinator::send(shard, &peer, &request).await?
    };
    match (response.status, response.body) {
        (Status::Ok, ResponseBody::Sync { body }) => {
            report.bytes_received += body.len() as u64;
            wire::decode_reply(body, shard.antientropy.key_bytes_max)
        }
        (status, _) => Err(format!("SYNC answered {status:?}: {}", response.message)),
    }
}

fn compare_message(bytes: &[u8], limits: &Limits) -> Result<Message, String> {
    decode(Bytes::copy_from_slice(bytes), limits).map_err(|e| e.to_string())
}

fn compare_bytes(message: &Message) -> Bytes {
    let mut out = Vec::new();
    encode(message, &mut out);
    out.into()
}

/// A range of a batch whose comparison found differing leaves: its session waits for
/// the batch's listing.
struct Pending {
    index: usize,
    session: u64,
    began_us: u64,
    generation: u64,
    item: ListItem,
}

/// What `list` lists of one range: the keys of these nodes of `level`.
struct ListItem {
    range: TokenRange,
    level: u8,
    leaves: Vec<u32>,
}

/// One sync of each of `ranges` with `peer`, as the initiator (module doc): one result
/// per range. The ranges are compared one after another; those that differ are listed
/// together (one scan on each side) and repaired together, and succeed or fail
/// together. A sync that fails tells the peer (END without `complete`), so that it
/// drops the session at once.
pub async fn sync_batch(
    shard: &Rc<Shard>,
    peer: Replica,
    ranges: &[TokenRange],
    report: &mut RepairReport,
) -> Vec<Result<(), String>> {
    let mut results: Vec<Result<(), String>> = vec![Ok(()); ranges.len()];
    let mut pending: Vec<Pending> = Vec::new();
    for (index, &range) in ranges.iter().enumerate() {
        let session: u64 = rand::random();
        let began_us = now_us();
        match compare(shard, range, peer, session, report).await {
            Ok(None) => {} // the ring moved on
            Ok(Some((_, item))) if item.leaves.is_empty() => {
                results[index] = end(shard, peer, session, range, began_us, report).await;
            }
            Ok(Some((generation, item))) => {
                report.differing_leaves += item.leaves.len() as u64;
                report.ranges_differing += 1;
                let leaves = Step::Leaves {
                    level: item.level,
                    leaves: item.leaves.clone(),
                };
                match step(shard, peer, session, leaves, report).await {
                    Ok(Reply::Done) => pending.push(Pending {
                        index,
                        session,
                        began_us,
                        generation,
                        item,
                    }),
                    Ok(_) => results[index] = Err("LEAVES answered with another step".into()),
                    Err(e) => results[index] = Err(e),
                }
            }
            Err(e) => results[index] = Err(e),
        }
        if results[index].is_err() {
            abandon(shard, peer, session, report).await;
        }
        glommio::yield_if_needed().await;
    }
    if pending.is_empty() {
        return results;
    }
    match repair_listed(shard, peer, &pending, report).await {
        Ok(()) => {
            for p in &pending {
                let range = p.item.range;
                results[p.index] = end(shard, peer, p.session, range, p.began_us, report).await;
            }
        }
        Err(e) => {
            for p in &pending {
                results[p.index] = Err(e.clone());
                abandon(shard, peer, p.session, report).await;
            }
        }
    }
    results
}

/// Compares `range`'s tree with the peer's on `session`: the trees' generation and the
/// differing leaves; `None` if this shard no longer has the range.
async fn compare(
    shard: &Rc<Shard>,
    range: TokenRange,
    peer: Replica,
    session_id: u64,
    report: &mut RepairReport,
) -> Result<Option<(u64, ListItem)>, String> {
    let ae = &shard.antientropy;
    let (snapshot, generation) = {
        let trees = ae.trees.borrow();
        let Some(r) = trees.by_range(range) else {
            return Ok(None);
        };
        (r.tree.snapshot(rand::random()), trees.generation)
    };
    let limits = ae.limits;
    let (mut session, open) = Session::open(snapshot, limits);
    let open = Step::Compare(compare_bytes(&Message::Open(open)));
    let Reply::Compare(bytes) = step(shard, peer, session_id, open, report).await? else {
        return Err("COMPARE answered with another step".into());
    };
    let mut next = match compare_message(&bytes, &limits)? {
        Message::Accept(accept) => session.on_accept(&accept).map_err(|e| e.to_string())?,
        Message::Refuse(Refuse { reason }) => return Err(format!("peer refused: {reason:?}")),
        other => return Err(format!("unexpected answer to Open: {other:?}")),
    };
    while let Some(descend) = next {
        let descend = Step::Compare(compare_bytes(&Message::Descend(descend)));
        let Reply::Compare(bytes) = step(shard, peer, session_id, descend, report).await? else {
            return Err("COMPARE answered with another step".into());
        };
        next = match compare_message(&bytes, &limits)? {
            Message::Answer(answer) => session.on_answer(&answer).map_err(|e| e.to_string())?,
            other => return Err(format!("unexpected answer to Descend: {other:?}")),
        };
    }
    let item = ListItem {
        range,
        level: session.leaf_level(),
        leaves: session.differing_leaves().to_vec(),
    };
    Ok(Some((generation, item)))
}

/// Lists the pending ranges' differing leaves on both sides, and moves the sets that
/// differ both ways.
async fn repair_listed(
    shard: &Rc<Shard>,
    peer: Replica,
    pending: &[Pending],
    report: &mut RepairReport,
) -> Result<(), String> {
    let ae = &shard.antientropy;
    let generation = pending[0].generation;
    if pending.iter().any(|p| p.generation != generation) {
        return Err("the trees were rebuilt".into());
    }
    let items: Vec<&ListItem> = pending.iter().map(|p| &p.item).collect();
    let local = list(shard, generation, &items).await?;
    report.listings += 1;
    let handle = pending[0].session;
    let mut sessions: Vec<u64> = pending.iter().map(|p| p.session).collect();
    sessions.sort_unstable();
    let mut remote: Vec<KeyDigest> = Vec::new();
    let mut request = Step::List { sessions };
    loop {
        match step(shard, peer, handle, request, report).await? {
            Reply::Keys { more, keys } => {
                if let (Some(last), Some(first)) = (remote.last(), keys.first()) {
                    if last.key >= first.key {
                        return Err("listed pages out of order".into());
                    }
                }
                remote.extend(keys);
                if !more {
                    break;
                }
            }
            _ => return Err("LIST answered with another step".into()),
        }
        request = Step::ListNext;
    }
    let diff = diff_keys(&local, &remote);
    let remote_has = |key: &Bytes| remote.binary_search_by(|d| d.key.cmp(key)).is_ok();
    let local_contribution = |key: &Bytes| {
        let i = local.binary_search_by(|d| d.key.cmp(key)).ok()?;
        Some(local[i].contribution)
    };
    let mut pace = Pace::new(&ae.config);
    push(shard, peer, &diff.send, &remote_has, &mut pace, report).await?;
    pull(
        shard,
        peer,
        handle,
        &diff.fetch,
        &local_contribution,
        &mut pace,
        report,
    )
    .await
}

/// Ends a sync whose differences were repaired: END with `complete`, and the record
/// the proof needs.
async fn end(
    shard: &Rc<Shard>,
    peer: Replica,
    session: u64,
    range: TokenRange,
    began_us: u64,
    report: &mut RepairReport,
) -> Result<(), String> {
    step(shard, peer, session, Step::End { complete: true }, report).await?;
    if let Some(r) = shard.antientropy.trees.borrow_mut().by_range_mut(range) {
        r.synced.insert(peer.node_id, began_us);
    }
    Ok(())
}

/// Tells the peer a sync failed (END without `complete`); it drops the session.
async fn abandon(shard: &Rc<Shard>, peer: Replica, session: u64, report: &mut RepairReport) {
    let _ = step(shard, peer, session, Step::End { complete: false }, report).await;
}

/// Sends this shard's sets of `keys` to the peer as REPLICA_WRITEs, a window at a time.
async fn push(
    shard: &Rc<Shard>,
    peer: Replica,
    keys: &[Bytes],
    peer_has: &dyn Fn(&Bytes) -> bool,
    pace: &mut Pace,
    report: &mut RepairReport,
) -> Result<(), String> {
    let ae = &shard.antientropy;
    for window in keys.chunks(PUSH_WINDOW) {
        let mut requests = Vec::new();
        for key in window {
            let Some(versions) = shard.engine.get(key).await.map_err(|e| e.to_string())? else {
                continue; // purged since it was listed
            };
            if !peer_has(key) && ae.may_drop(key, &versions) {
                report.tombstones_withheld += 1;
                continue;
            }
            let encoded = Bytes::from(versions.encode());
            report.bytes_sent += (key.len() + encoded.len()) as u64;
            pace.spend(key.len() + encoded.len(), 1).await;
            requests.push(Request::ReplicaWrite {
                key: key.clone(),
                versions: encoded,
            });
        }
        let sends: Vec<_> = requests
            .into_iter()
            .map(|request| {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    super::coordinator::send(&shard, &peer, &request).await
                })
            })
            .collect();
        for send in sends {
            let response = send.await?;
            if response.status != Status::Ok {
                return Err(format!(
                    "push answered {:?}: {}",
                    response.status, response.message
                ));
            }
            report.keys_pushed += 1;
            ae.note_peer(peer.node_id, |p| p.keys_repaired += 1);
        }
    }
    Ok(())
}

/// Fetches the peer's sets of `keys` and merges them here.
async fn pull(
    shard: &Rc<Shard>,
    peer: Replica,
    session: u64,
    keys: &[Bytes],
    here: &dyn Fn(&Bytes) -> Option<u64>,
    pace: &mut Pace,
    report: &mut RepairReport,
) -> Result<(), String> {
    let ae = &shard.antientropy;
    let mut rest = keys;
    while !rest.is_empty() {
        let ask: Vec<(Option<u64>, Bytes)> = rest
            .iter()
            .take(FETCH_KEYS)
            .map(|k| (here(k), k.clone()))
            .collect();
        let Reply::Sets(sets) = step(shard, peer, session, Step::Fetch(ask), report).await? else {
            return Err("FETCH answered with another step".into());
        };
        if sets.is_empty() || sets.len() > rest.len().min(FETCH_KEYS) {
            return Err(format!("FETCH answered {} sets", sets.len()));
        }
        pace.spend(0, sets.len()).await;
        for (i, (key, set)) in sets.iter().enumerate() {
            if *key != rest[i] {
                return Err("FETCH answered other keys".into());
            }
            let Some(set) = set else { continue };
            pace.spend(key.len() + set.len(), 0).await;
            let versions = match VersionSet::decode(set) {
                Ok((versions, used)) if used == set.len() => versions,
                _ => return Err("a fetched version set does not decode whole".into()),
            };
            shard
                .engine
                .merge(key, &versions)
                .await
                .map_err(|e| e.to_string())?;
            report.keys_pulled += 1;
            ae.note_peer(peer.node_id, |p| p.keys_repaired += 1);
        }
        rest = &rest[sets.len()..];
    }
    Ok(())
}

/// The keys of `items` (nodes of a level of a range's tree), as digests in key order,
/// from one scan of the shard; and the rebuild of the tree leaves they cover.
async fn list(
    shard: &Rc<Shard>,
    generation: u64,
    items: &[&ListItem],
) -> Result<Vec<KeyDigest>, String> {
    let ae = &shard.antientropy;
    // Per item: the tree's shape, and a rebuild ticket per leaf it covers.
    let (shapes, mut tickets) = {
        let mut trees = ae.trees.borrow_mut();
        if trees.generation != generation {
            return Err("the trees were rebuilt".into());
        }
        let mut shapes = Vec::with_capacity(items.len());
        let mut tickets = Vec::with_capacity(items.len());
        for item in items {
            let Some(r) = trees.by_range_mut(item.range) else {
                return Err("the range is gone".into());
            };
            let shape = *r.tree.shape();
            if item.level > shape.depth {
                return Err(format!(
                    "level {} below the tree's depth {}",
                    item.level, shape.depth
                ));
            }
            let span = 1u32 << (shape.depth - item.level);
            let leaf_tickets: Vec<_> = item
                .leaves
                .iter()
                .flat_map(|&node| (node * span)..(node + 1) * span)
                .map(|leaf| (leaf, r.tree.begin_rebuild(leaf)))
                .collect();
            shapes.push(shape);
            tickets.push(leaf_tickets);
        }
        (shapes, tickets)
    };
    // The item whose range holds `token`, if its leaf is listed.
    let item_of = |token: Token| {
        let i = items.iter().position(|item| item.range.contains(token))?;
        let node = shapes[i].node_of(token, items[i].level)?;
        items[i].leaves.binary_search(&node).ok().map(|_| i)
    };
    let wanted = |key: &[u8]| item_of(crate::ring::token(key)).is_some();
    let mut digests = Vec::new();
    let mut by_leaf: AHashMap<(usize, u32), Vec<(Token, u64)>> = AHashMap::new();
    shard
        .engine
        .scan(&wanted, ae.config.scan_bytes_per_sec, |key, versions| {
            let token = crate::ring::token(key);
            let c = contribution(key, versions);
            digests.push(KeyDigest {
                key: key.clone(),
                contribution: c,
            });
            let i = item_of(token).expect("wanted keys are listed");
            let leaf = shapes[i]
                .leaf_of(token)
                .expect("listed keys are in the range");
            by_leaf.entry((i, leaf)).or_default().push((token, c));
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut trees = ae.trees.borrow_mut();
    if trees.generation == generation {
        for (i, item) in items.iter().enumerate() {
            if let Some(r) = trees.by_range_mut(item.range) {
                for (leaf, ticket) in std::mem::take(&mut tickets[i]) {
                    let keys = by_leaf.remove(&(i, leaf)).unwrap_or_default();
                    r.tree.finish_rebuild(ticket, keys);
                }
            }
        }
    }
    Ok(digests)
}

/// Answers one SYNC step from a peer.
pub async fn answer(shard: &Rc<Shard>, body: Bytes) -> Result<Vec<u8>, (Status, String)> {
    let ae = &shard.antientropy;
    let bad = |e: String| (Status::BadRequest, e);
    let request = wire::decode_step(body, ae.key_bytes_max).map_err(bad)?;
    let key = (request.from, request.session);
    let reply = match request.step {
        Step::Compare(bytes) => match compare_message(&bytes, &ae.limits).map_err(bad)? {
            Message::Open(open) => Reply::Compare(compare_bytes(&accept(shard, key, &open))),
            Message::Descend(descend) => {
                let mut sessions = ae.sessions.borrow_mut();
                let responder = sessions.get_mut(&key).ok_or_else(no_session)?;
                responder.last_step = Instant::now();
                let Phase::Comparing(session) = &mut responder.phase else {
                    return Err(bad("a Descend after the comparison ended".into()));
                };
                let answer = session
                    .on_descend(&descend)
                    .map_err(|e| bad(e.to_string()))?;
                Reply::Compare(compare_bytes(&Message::Answer(answer)))
            }
            other => return Err(bad(format!("a peer sent {other:?} as a step"))),
        },
        Step::Leaves { level, leaves } => {
            let mut sessions = ae.sessions.borrow_mut();
            let responder = sessions.get_mut(&key).ok_or_else(no_session)?;
            if !matches!(responder.phase, Phase::Comparing(_)) {
                return Err(bad("LEAVES twice".into()));
            }
            responder.last_step = Instant::now();
            responder.phase = Phase::Compared { level, leaves };
            Reply::Done
        }
        Step::List { sessions: listed } => {
            // Every named session hands over its leaves (and is listed from now on,
            // whatever the scan's outcome: a failed LIST fails the sync).
            let (generation, items) = {
                let mut sessions = ae.sessions.borrow_mut();
                let mut generation = None;
                let mut items = Vec::with_capacity(listed.len());
                for &id in &listed {
                    let responder = sessions
                        .get_mut(&(request.from, id))
                        .ok_or_else(no_session)?;
                    if *generation.get_or_insert(responder.generation) != responder.generation {
                        return Err((Status::Unavailable, "the trees were rebuilt".into()));
                    }
                    let Phase::Compared { level, leaves } =
                        std::mem::replace(&mut responder.phase, Phase::Listed)
                    else {
                        return Err(bad(format!("session {id:#018x} is not compared")));
                    };
                    responder.last_step = Instant::now();
                    items.push(ListItem {
                        range: responder.range,
                        level,
                        leaves,
                    });
                }
                (generation.expect("a LIST names a session"), items)
            };
            // The scan runs in the anti-entropy queue, not the request's.
            let scanning = shard.clone();
            let listing = glommio::spawn_local_into(
                async move {
                    let items: Vec<&ListItem> = items.iter().collect();
                    list(&scanning, generation, &items).await
                },
                ae.queue,
            )
            .expect("the queue belongs to this executor")
            .await
            .map_err(|e| (Status::Unavailable, e))?;
            let mut sessions = ae.sessions.borrow_mut();
            for &id in &listed {
                if let Some(responder) = sessions.get_mut(&(request.from, id)) {
                    responder.last_step = Instant::now();
                }
            }
            let responder = sessions.get_mut(&key).ok_or_else(no_session)?;
            responder.listing = Some((listing, 0));
            next_page(responder)
        }
        Step::ListNext => {
            let mut sessions = ae.sessions.borrow_mut();
            let responder = sessions.get_mut(&key).ok_or_else(no_session)?;
            responder.last_step = Instant::now();
            next_page(responder)
        }
        Step::Fetch(keys) => {
            let mut sets = Vec::new();
            let mut bytes = 0;
            for (have, k) in keys {
                if bytes >= PAGE_BYTES {
                    break;
                }
                let stored = shard
                    .engine
                    .get(&k)
                    .await
                    .map_err(|e| (Status::Unavailable, e.to_string()))?;
                // Not sent: what the asker holds already (a push of the same sync
                // made both sides equal), a tombstone it need not get back.
                let needed = |v: &VersionSet| match have {
                    Some(theirs) => contribution(&k, v) != theirs,
                    None => !ae.may_drop(&k, v),
                };
                let set = stored.filter(needed).map(|v| Bytes::from(v.encode()));
                bytes += k.len() + set.as_ref().map_or(0, |s| s.len());
                sets.push((k, set));
            }
            Reply::Sets(sets)
        }
        Step::End { complete } => {
            let responder = ae.sessions.borrow_mut().remove(&key);
            if let Some(responder) = responder.filter(|_| complete) {
                let mut trees = ae.trees.borrow_mut();
                if trees.generation == responder.generation {
                    if let Some(r) = trees.by_range_mut(responder.range) {
                        r.synced.insert(request.from, responder.began_us);
                    }
                }
                drop(trees);
                ae.note_peer(request.from, |p| p.last_sync_us = now_us());
                report_to_control(shard);
            }
            Reply::Done
        }
        Step::Trees => Reply::Trees(ae.tree_infos()),
    };
    Ok(wire::encode_reply(&reply))
}

fn no_session() -> (Status, String) {
    (
        Status::BadRequest,
        "no such sync session (it ended, or idled out)".into(),
    )
}

/// Opens a responder session for `open`, or says why not.
fn accept(shard: &Shard, key: (NodeId, u64), open: &crate::antientropy::Open) -> Message {
    let ae = &shard.antientropy;
    let refuse = |reason| Message::Refuse(Refuse { reason });
    let mut sessions = ae.sessions.borrow_mut();
    sessions.retain(|_, s| !s.idle());
    let trees = ae.trees.borrow();
    let comparing = sessions
        .values()
        .filter(|s| matches!(s.phase, Phase::Comparing(_)))
        .count();
    if !trees.ready || comparing >= COMPARING_MAX || sessions.len() >= SESSIONS_MAX {
        return refuse(RefuseReason::Busy);
    }
    let Some(r) = trees.by_range(open.range) else {
        return refuse(RefuseReason::UnknownRange);
    };
    let snapshot = r.tree.snapshot(rand::random());
    match Session::accept(snapshot, open, ae.limits) {
        Ok((session, accept)) => {
            sessions.insert(
                key,
                Responder {
                    range: open.range,
                    phase: Phase::Comparing(session),
                    generation: trees.generation,
                    began_us: now_us(),
                    last_step: Instant::now(),
                    listing: None,
                },
            );
            Message::Accept(accept)
        }
        Err(refused) => Message::Refuse(refused),
    }
}

fn next_page(responder: &mut Responder) -> Reply {
    let Some((listing, sent)) = &mut responder.listing else {
        return Reply::Keys {
            more: false,
            keys: Vec::new(),
        };
    };
    let mut bytes = 0;
    let mut end = *sent;
    while end < listing.len() && bytes < PAGE_BYTES {
        bytes += listing[end].key.len() + 10;
        end += 1;
    }
    let keys = listing[*sent..end].to_vec();
    *sent = end;
    Reply::Keys {
        more: end < listing.len(),
        keys,
    }
}

/// REPAIR on this node: a full round on `shard`, or on every shard.
pub async fn repair(shard: &Rc<Shard>, target: u16) -> RepairReport {
    if usize::from(target) == shard.id {
        return round_in_queue(shard).await;
    }
    let shards: Vec<usize> = if target == crate::protocol::REPAIR_ALL_SHARDS {
        (0..shard.peers.len()).collect()
    } else {
        vec![usize::from(target)]
    };
    let mut total = RepairReport::default();
    for s in shards {
        if s == shard.id {
            total.add(&round_in_queue(shard).await);
            continue;
        }
        let request = Request::Repair { shard: s as u16 };
        let opcode = request.opcode();
        let frame = super::dispatch::forward(shard, s, 0, opcode, request).await;
        let response = super::dispatch::decode_own_frame(frame, opcode);
        let decoded = match (response.status, response.body) {
            (Status::Ok, ResponseBody::Repair { report }) => RepairReport::decode(&report),
            (status, _) => Err(format!("{status:?}: {}", response.message)),
        };
        match decoded {
            Ok(report) => total.add(&report),
            Err(e) => {
                total.syncs_failed += 1;
                total.first_error.get_or_insert(format!("shard {s}: {e}"));
            }
        }
    }
    total
}

/// A `ringkv repair` round, run in the anti-entropy queue rather than the request's.
async fn round_in_queue(shard: &Rc<Shard>) -> RepairReport {
    let repairing = shard.clone();
    glommio::spawn_local_into(
        async move { round(&repairing, false).await },
        shard.antientropy.queue,
    )
    .expect("the queue belongs to this executor")
    .await
}

/// A peer's view of one shard's trees (the TREES step), for `ringkv admin trees`.
pub fn encode_trees_request(from: NodeId) -> Bytes {
    wire::encode_step(&StepRequest {
        from,
        session: 0,
        step: Step::Trees,
    })
    .into()
}
