//! Anti-entropy with real processes (issue 7): replicas that diverged while a peer
//! dropped traffic (hints disabled) converge after `ringkv repair`: equal tree roots for
//! every range and equal sets for every key on every node; and a key deleted while a
//! replica was cut off does not come back when that replica returns after the grace
//! period: compaction keeps the tombstones until sync proved every replica holds them,
//! then drops them everywhere; and a node killed and wiped is replaced with
//! `--replace` by a new node that takes its tokens, fills from the other replicas before
//! it answers reads, and ends holding every acknowledged write.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::cluster::{wait_all_up, wait_for, Cluster};
use common::{free_ports, Server};
use ringkv::client::blocking::BlockingClient;
use ringkv::protocol::{Consistency, Request, ResponseBody, Status, REPAIR_ALL_SHARDS};
use ringkv::server::antientropy::wire::{decode_reply, Reply, TreeInfo};
use ringkv::server::antientropy::{encode_trees_request, RepairReport};
use ringkv::version::{VersionSet, CONTEXT_OVERWRITE};

/// The context of a write that supersedes whatever its coordinator stores.
const OVERWRITE: &[u8] = &[CONTEXT_OVERWRITE];

/// Hints off (every hint is refused for room), no periodic rounds: only `repair`
/// moves data between replicas once the coordinators gave up on a peer.
const NO_HINTS: &[&str] = &["--hint-bytes-max", "0", "--sync-interval", "0"];

fn client(cluster: &Cluster, node: usize) -> BlockingClient {
    BlockingClient::connect(
        "127.0.0.1",
        cluster.nodes[node].port,
        Duration::from_secs(120),
    )
    .expect("the node answers")
}

/// Node `node`'s own set for `key` (REPLICA_READ: no other replica, no read repair).
fn replica_set(cluster: &Cluster, node: usize, key: &[u8]) -> Option<VersionSet> {
    let request = Request::ReplicaRead {
        key: Bytes::copy_from_slice(key),
    };
    let response = client(cluster, node).request(&request).expect("answers");
    match (response.status, response.body) {
        (Status::Ok, ResponseBody::Versions { versions }) => {
            Some(VersionSet::decode(&versions).expect("decodes").0)
        }
        (Status::NotFound, _) => None,
        (status, _) => panic!("REPLICA_READ: {status:?}: {}", response.message),
    }
}

fn repair(cluster: &Cluster, node: usize) -> RepairReport {
    let response = client(cluster, node)
        .request(&Request::Repair {
            shard: REPAIR_ALL_SHARDS,
        })
        .expect("answers");
    match (response.status, response.body) {
        (Status::Ok, ResponseBody::Repair { report }) => {
            RepairReport::decode(&report).expect("decodes")
        }
        (status, _) => panic!("REPAIR: {status:?}: {}", response.message),
    }
}

fn compact(cluster: &Cluster, node: usize) {
    let response = client(cluster, node)
        .request(&Request::Compact {
            shard: REPAIR_ALL_SHARDS,
        })
        .expect("answers");
    assert_eq!(response.status, Status::Ok, "{}", response.message);
}

/// Every tree of every shard of node `node`, by range.
fn trees(cluster: &Cluster, node: usize) -> BTreeMap<(u64, u64), TreeInfo> {
    let mut all = BTreeMap::new();
    for shard in 0..2 {
        let response = client(cluster, node)
            .request(&Request::Sync {
                shard,
                body: encode_trees_request(0),
            })
            .expect("answers");
        let (Status::Ok, ResponseBody::Sync { body }) = (response.status, response.body) else {
            panic!("TREES: {}", response.message);
        };
        let Ok(Reply::Trees(list)) = decode_reply(body, 1024) else {
            panic!("TREES answered with something else");
        };
        for tree in list {
            all.insert((tree.start, tree.end), tree);
        }
    }
    all
}

/// Whether every node's trees are built and show the same root for every range.
fn roots_equal(cluster: &Cluster) -> Result<(), String> {
    let per_node: Vec<_> = (0..cluster.nodes.len())
        .map(|n| trees(cluster, n))
        .collect();
    for (range, tree) in &per_node[0] {
        for (n, other) in per_node.iter().enumerate().skip(1) {
            let Some(theirs) = other.get(range) else {
                return Err(format!("node {n} has no tree of {range:x?}"));
            };
            if !tree.ready || !theirs.ready || tree.root != theirs.root || theirs.dirty > 0 {
                return Err(format!(
                    "range {range:x?}: node 0 root {:016x}, node {n} root {:016x} (dirty {})",
                    tree.root, theirs.root, theirs.dirty
                ));
            }
        }
    }
    Ok(())
}

/// Repairs on every node, in turn, until a whole pass finds no difference (at most
/// `passes`); returns the passes' reports.
fn repair_until_quiet(cluster: &Cluster, passes: usize) -> Vec<RepairReport> {
    let mut reports = Vec::new();
    for _ in 0..passes {
        let mut pass = RepairReport::default();
        for node in 0..cluster.nodes.len() {
            let report = repair(cluster, node);
            assert_eq!(report.syncs_failed, 0, "{report:?}");
            // One scan lists every differing range shared with a peer (per batch of
            // 64), not one scan per differing range. A shard's peers here are the
            // other 2 nodes' shards.
            let peers_per_shard = 2 * u64::from(report.shards);
            let batches_per_peer = report.ranges / 64 + u64::from(report.shards);
            assert!(
                report.listings <= peers_per_shard * batches_per_peer,
                "{report:?}"
            );
            pass.add(&report);
        }
        let quiet = pass.differing_leaves == 0;
        reports.push(pass);
        if quiet {
            break;
        }
    }
    reports
}

#[test]
fn replicas_that_diverged_without_hints_converge_after_repair() {
    let cluster = Cluster::start_with("ae-diverge", 3, NO_HINTS);
    wait_all_up(&cluster, Duration::from_secs(60));
    // Before anything: every replica built the trees of the whole ring, and they agree
    // (empty trees).
    wait_for(
        "trees of the whole ring built",
        Duration::from_secs(60),
        || roots_equal(&cluster).is_ok(),
    );

    let mut all = cluster.client(0, Consistency::All);
    for i in 0..100 {
        all.put(format!("both-{i}").as_bytes(), b"v0", OVERWRITE)
            .expect("ALL write");
    }
    cluster.partition(&[2]);
    // Node 0 coordinates at ONE: node 1 gets these too unless the write outran its
    // timeout; node 2 never does.
    let mut one = cluster.client(0, Consistency::One);
    for i in 0..300 {
        one.put(
            format!("missed-{i}").as_bytes(),
            format!("v{i}").as_bytes(),
            OVERWRITE,
        )
        .expect("ONE write on the majority side");
    }
    for i in 0..50 {
        one.put(format!("both-{i}").as_bytes(), b"majority", OVERWRITE)
            .expect("overwrite");
    }
    // Node 2, cut off, takes writes of its own at ONE: these only it holds, and the
    // overwrites of `both-50..` conflict with nothing, those of `both-0..` with the
    // majority's (siblings after the merge).
    let mut lonely = cluster.client(2, Consistency::One);
    for i in 0..40 {
        lonely
            .put(format!("lonely-{i}").as_bytes(), b"from node 2", OVERWRITE)
            .expect("ONE write on node 2");
    }
    for i in 25..75 {
        lonely
            .put(format!("both-{i}").as_bytes(), b"minority", OVERWRITE)
            .expect("overwrite");
    }
    cluster.heal();
    wait_all_up(&cluster, Duration::from_secs(60));
    assert!(
        replica_set(&cluster, 2, b"missed-7").is_none(),
        "node 2 missed it"
    );
    assert!(
        replica_set(&cluster, 0, b"lonely-7").is_none(),
        "node 0 missed it"
    );
    assert!(roots_equal(&cluster).is_err(), "the replicas diverged");

    // Node 0 first, alone. It pushes what node 2 lacks or holds otherwise, then fetches
    // node 2's differing sets: `lonely-*` (40), `both-25..50` (siblings) and
    // `both-50..75` (newer there), but not `both-0..25`, which its own push made equal
    // (FETCH carries the asker's contribution). Node 1 only ever got node 0's writes.
    let first = repair(&cluster, 0);
    eprintln!("node 0's repair: {first:#?}");
    assert_eq!(first.syncs_failed, 0, "{first:?}");
    assert_eq!(first.keys_pulled, 40 + 50, "{first:?}");
    let mut reports = vec![first];
    reports.extend(repair_until_quiet(&cluster, 3));
    let repaired: u64 = reports.iter().map(|r| r.keys_pushed + r.keys_pulled).sum();
    eprintln!("repair passes: {reports:#?}");
    assert!(repaired >= 300 + 40, "{repaired} keys repaired");
    assert!(
        reports[0].ranges_differing > reports[0].listings,
        "the differing ranges were listed together: {:?}",
        reports[0]
    );
    assert_eq!(
        reports.last().map(|r| r.differing_leaves),
        Some(0),
        "the last pass found nothing left: {reports:?}"
    );
    roots_equal(&cluster).expect("equal roots after repair");
    let keys = (0..100)
        .map(|i| format!("both-{i}"))
        .chain((0..300).map(|i| format!("missed-{i}")))
        .chain((0..40).map(|i| format!("lonely-{i}")));
    for key in keys {
        let sets: Vec<_> = (0..3)
            .map(|n| replica_set(&cluster, n, key.as_bytes()).expect("every replica holds it"))
            .collect();
        assert!(sets.iter().all(|s| *s == sets[0]), "{key}: {sets:?}");
        let mut values: Vec<Vec<u8>> = sets[0]
            .live_values()
            .map(|v| v.value.as_ref().expect("live").to_vec())
            .collect();
        values.sort();
        let expected: Vec<&[u8]> = match key.strip_prefix("both-").map(|i| i.parse::<u32>()) {
            Some(Ok(i)) if (25..50).contains(&i) => vec![b"majority", b"minority"],
            Some(Ok(i)) if i < 25 => vec![b"majority"],
            Some(Ok(i)) if i < 75 => vec![b"minority"],
            Some(Ok(_)) => vec![b"v0"],
            _ if key.starts_with("lonely") => vec![b"from node 2"],
            _ => {
                let i = &key["missed-".len()..];
                assert_eq!(values, vec![format!("v{i}").into_bytes()], "{key}");
                continue;
            }
        };
        assert_eq!(values, expected, "{key}");
    }
    // Each node saw the others in sync, and says so.
    let view = cluster.view(0).expect("answers");
    for member in view.members.iter().filter(|m| m.node_id != view.observer) {
        assert!(member.last_sync_us > 0, "{member:?}");
    }
    assert!(view.members.iter().map(|m| m.keys_repaired).sum::<u64>() > 0);
}

#[test]
fn a_deleted_key_does_not_come_back_from_a_replica_that_missed_the_delete() {
    let mut flags = NO_HINTS.to_vec();
    flags.extend(["--gc-grace", "1s"]);
    let cluster = Cluster::start_with("ae-tombstones", 3, &flags);
    wait_all_up(&cluster, Duration::from_secs(60));
    let keys: Vec<String> = (0..60).map(|i| format!("doomed-{i}")).collect();
    let mut all = cluster.client(0, Consistency::All);
    for key in &keys {
        all.put(key.as_bytes(), b"old value", OVERWRITE)
            .expect("ALL write");
    }
    cluster.partition(&[2]);
    let mut quorum = cluster.client(0, Consistency::Quorum);
    for key in &keys {
        quorum
            .delete(key.as_bytes(), OVERWRITE)
            .expect("QUORUM delete on the majority side");
    }
    // Past the grace period, a major compaction on the majority: node 2 never got the
    // delete and nothing proved it did, so the tombstones stay.
    std::thread::sleep(Duration::from_millis(2500));
    compact(&cluster, 0);
    compact(&cluster, 1);
    for key in &keys {
        for node in [0, 1] {
            let set = replica_set(&cluster, node, key.as_bytes());
            assert!(
                set.as_ref().is_some_and(VersionSet::is_tombstone_only),
                "node {node} dropped the tombstone of {key} on time alone: {set:?}"
            );
        }
        let stale = replica_set(&cluster, 2, key.as_bytes()).expect("node 2 holds the value");
        assert!(!stale.is_tombstone_only(), "node 2 missed the delete");
    }

    // Node 2 comes back, long after the grace period.
    cluster.heal();
    wait_all_up(&cluster, Duration::from_secs(60));
    let reports = repair_until_quiet(&cluster, 3);
    eprintln!("repair passes: {reports:#?}");
    for key in &keys {
        let stale = replica_set(&cluster, 2, key.as_bytes()).expect("a tombstone now");
        assert!(stale.is_tombstone_only(), "{key} on node 2: {stale:?}");
    }
    // Every replica holds the delete, and every sync since proved it: compaction may
    // drop the tombstones now, everywhere.
    std::thread::sleep(Duration::from_millis(1100));
    repair_until_quiet(&cluster, 1);
    for node in 0..3 {
        compact(&cluster, node);
    }
    for key in &keys {
        for node in 0..3 {
            assert_eq!(
                replica_set(&cluster, node, key.as_bytes()),
                None,
                "node {node} still holds {key} after proof and compaction"
            );
        }
    }
    // And nothing brings them back: another round finds every replica equal.
    let reports = repair_until_quiet(&cluster, 2);
    assert_eq!(
        reports[0].keys_pushed + reports[0].keys_pulled,
        0,
        "{reports:?}"
    );
    let mut read = cluster.client(2, Consistency::All);
    for key in &keys {
        assert!(
            read.get(key.as_bytes())
                .expect("ALL read")
                .values
                .is_empty(),
            "{key} came back"
        );
    }
}

/// Node `node`'s answer to REPLICA_READ of `key`: its set, `Ok(None)` if absent, or
/// the error status (a filling node answers Unavailable).
fn try_replica_set(
    cluster: &Cluster,
    node: usize,
    key: &[u8],
) -> Result<Option<VersionSet>, Status> {
    let request = Request::ReplicaRead {
        key: Bytes::copy_from_slice(key),
    };
    let response = client(cluster, node).request(&request).expect("answers");
    match (response.status, response.body) {
        (Status::Ok, ResponseBody::Versions { versions }) => {
            Ok(Some(VersionSet::decode(&versions).expect("decodes").0))
        }
        (Status::NotFound, _) => Ok(None),
        (status, _) => Err(status),
    }
}

fn holds(set: &Option<VersionSet>, value: &[u8]) -> bool {
    set.as_ref()
        .is_some_and(|s| s.live_values().any(|v| v.value.as_deref() == Some(value)))
}

#[test]
fn a_wiped_node_replaced_with_replace_ends_with_every_acknowledged_write() {
    let cluster = Cluster::start_with("ae-replace", 3, &["--sync-interval", "0"]);
    let mut cluster = cluster;
    wait_all_up(&cluster, Duration::from_secs(60));
    let old_id = cluster.node_id(2);
    let old_tokens = cluster
        .view(0)
        .expect("answers")
        .members
        .iter()
        .find(|m| m.node_id == old_id)
        .expect("a member")
        .tokens;
    let mut all = cluster.client(0, Consistency::All);
    for i in 0..400 {
        all.put(
            format!("before-{i}").as_bytes(),
            format!("b{i}").as_bytes(),
            OVERWRITE,
        )
        .expect("ALL write");
    }
    // The disk of node 2 dies: the process goes, and its data with it.
    cluster.nodes[2].kill9();
    std::fs::remove_dir_all(&cluster.nodes[2].data_dir).expect("wipe");
    let mut quorum = cluster.client(0, Consistency::Quorum);
    for i in 0..200 {
        quorum
            .put(
                format!("during-{i}").as_bytes(),
                format!("d{i}").as_bytes(),
                OVERWRITE,
            )
            .expect("QUORUM write with one replica dead");
    }
    // A new node on an empty disk takes over node 2's tokens.
    let dir = cluster.dir.join("node2-replacement");
    let seeds = format!("127.0.0.1:{}", cluster.nodes[0].port);
    let replace = format!("{old_id:016x}");
    let args = [
        "--sync",
        "batch",
        "--membership-interval-ms",
        "100",
        "--replica-timeout-ms",
        "3000",
        "--sync-interval",
        "0",
        "--seeds",
        &seeds,
        "--replace",
        &replace,
    ];
    let replacement = (0..5)
        .find_map(|_| Server::start_on(&dir, free_ports(3), 2, &args).ok())
        .expect("the replacement starts");
    cluster.nodes[2] = replacement;
    let new_id = cluster.node_id(2);
    assert_ne!(new_id, old_id, "a new id");
    // It serves reads only once filled (every shard): until then its replica reads are
    // refused, never answered with "not found" for what it has not got yet.
    let expected: Vec<(String, String)> = (0..400)
        .map(|i| (format!("before-{i}"), format!("b{i}")))
        .chain((0..200).map(|i| (format!("during-{i}"), format!("d{i}"))))
        .collect();
    wait_for(
        "the replacement is filled",
        Duration::from_secs(120),
        || {
            expected.iter().all(
                |(key, value)| match try_replica_set(&cluster, 2, key.as_bytes()) {
                    Ok(set) => {
                        assert!(
                            holds(&set, value.as_bytes()),
                            "a read of {key} answered before the fill: {set:?}"
                        );
                        true
                    }
                    Err(status) => {
                        assert_eq!(status, Status::Unavailable);
                        false
                    }
                },
            )
        },
    );
    // Every node's ring: the old node gone, the new one with its tokens.
    wait_for(
        "every node knows the replacement",
        Duration::from_secs(60),
        || {
            (0..3).all(|n| {
                cluster.view(n).is_ok_and(|view| {
                    !view.members.iter().any(|m| m.node_id == old_id)
                        && view
                            .members
                            .iter()
                            .any(|m| m.node_id == new_id && m.tokens == old_tokens)
                })
            })
        },
    );
    for (prefix, value, count) in [("before", "b", 400), ("during", "d", 200)] {
        for i in 0..count {
            let key = format!("{prefix}-{i}");
            for node in 0..3 {
                let set = try_replica_set(&cluster, node, key.as_bytes()).expect("answers");
                assert!(
                    holds(&set, format!("{value}{i}").as_bytes()),
                    "node {node} lacks {key}: {set:?}"
                );
            }
        }
    }
    // And the replacement serves: a write and a read through it at ALL.
    let mut through = cluster.client(2, Consistency::All);
    through
        .put(b"after", b"a", OVERWRITE)
        .expect("ALL write via the replacement");
    let got = through.get(b"after").expect("ALL read");
    assert_eq!(got.values.len(), 1);
}
