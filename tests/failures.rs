//! Failure handling with real processes (issue 6): a node killed under load is marked
//! Down by the others within the detection time and QUORUM writes go on; after its
//! restart, hints bring it every write it missed; a partitioned minority refuses
//! strict-quorum writes and takes sloppy ones, whose hints reach the owners once the
//! partition heals; and over a run with kills, pauses (SIGSTOP) and partitions, the
//! history checker finds no acknowledged write lost.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::cluster::{unavailable, wait_all_up, wait_for, Cluster};
use ringkv::client::blocking::BlockingClient;
use ringkv::client::ClientError;
use ringkv::history::{History, Outcome};
use ringkv::membership::detector::Status as Health;
use ringkv::protocol::{Consistency, QuorumMode, Request, ResponseBody, Status};
use ringkv::version::{Context, VersionSet};

/// The detector's defaults give about 3.3 s from the last heartbeat to Down
/// (`membership::detector`); this bound leaves room for a loaded 2-core machine.
const DETECTION_BOUND: Duration = Duration::from_secs(8);

/// Whether node `node`'s own copy of `key` holds `value` (a REPLICA_READ of that node
/// alone: no other replica's answer, no read repair).
fn replica_holds(cluster: &Cluster, node: usize, key: &[u8], value: &[u8]) -> bool {
    let Ok(mut client) = BlockingClient::connect(
        "127.0.0.1",
        cluster.nodes[node].port,
        Duration::from_secs(5),
    ) else {
        return false;
    };
    let request = Request::ReplicaRead {
        key: Bytes::copy_from_slice(key),
    };
    match client.request(&request) {
        Ok(response) => match (response.status, response.body) {
            (Status::Ok, ResponseBody::Versions { versions }) => VersionSet::decode(&versions)
                .is_ok_and(|(set, _)| set.live_values().any(|v| v.value.as_deref() == Some(value))),
            _ => false,
        },
        Err(_) => false,
    }
}

/// Hints the nodes in `holders` keep for `node`, all together.
fn hints_for(cluster: &Cluster, holders: &[usize], node: u64) -> u64 {
    holders
        .iter()
        .filter_map(|&h| cluster.seen(h, node))
        .map(|(_, hints)| hints)
        .sum()
}

#[test]
fn a_killed_node_is_marked_down_quorum_writes_go_on_and_hints_fill_it_after_restart() {
    // The default gossip interval: detection takes the documented time.
    let mut cluster = Cluster::start_with(
        "failures-kill",
        3,
        &[
            "--membership-interval-ms",
            "1000",
            "--replica-timeout-ms",
            "500",
        ],
    );
    wait_all_up(&cluster, Duration::from_secs(60));
    let victim = cluster.node_id(2);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let port = cluster.nodes[w].port;
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut client =
                    BlockingClient::connect("127.0.0.1", port, Duration::from_secs(30)).unwrap();
                client.set_consistency(Consistency::Quorum);
                let (mut written, mut failed) = (Vec::new(), Vec::new());
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}-{i}");
                    match client.put(key.as_bytes(), key.as_bytes(), &[]) {
                        Ok(_) => written.push(key),
                        Err(e) => failed.push(format!("{key}: {e}")),
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                (written, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    cluster.nodes[2].kill9();
    let detection = wait_for(
        "both others see the killed node Down",
        DETECTION_BOUND,
        || {
            (0..2).all(|o| {
                cluster
                    .seen(o, victim)
                    .is_some_and(|(s, _)| s == Health::Down)
            })
        },
    );
    eprintln!("killed node Down on both others {detection:?} after the kill");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let mut written = Vec::new();
    for writer in writers {
        let (ok, failed) = writer.join().unwrap();
        assert!(
            failed.is_empty(),
            "QUORUM writes failed with 1 of 3 down: {failed:?}"
        );
        written.extend(ok);
    }
    assert!(written.len() > 100, "only {} writes", written.len());
    let pending = hints_for(&cluster, &[0, 1], victim);
    assert!(pending > 0, "no hints kept for the killed node");
    // `ringkv status` shows it too.
    let status = ringkv::status::status(
        "127.0.0.1",
        cluster.nodes[0].port,
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let row = status
        .lines()
        .find(|l| l.starts_with(&format!("{victim:016x}")))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(row.contains(" Down "), "{status}");
    cluster.nodes[2].restart();
    // docs/cluster.md states this bound.
    let replay = wait_for("the hints are delivered", Duration::from_secs(20), || {
        hints_for(&cluster, &[0, 1], victim) == 0
    });
    eprintln!(
        "{pending} hints for {} writes delivered {replay:?} after the restart",
        written.len()
    );
    let missing: Vec<&String> = written
        .iter()
        .filter(|key| !replica_holds(&cluster, 2, key.as_bytes(), key.as_bytes()))
        .collect();
    assert!(
        missing.is_empty(),
        "the restarted node lacks {} of {} writes, first {:?}",
        missing.len(),
        written.len(),
        missing.first()
    );
}

/// A key whose preference list (N = 3) holds `inside` but none of `outside`.
fn key_replicated_by(cluster: &Cluster, inside: u64, outside: &[u64]) -> (String, Vec<u64>) {
    let table = ringkv::runtime::join::fetch_table(
        "127.0.0.1",
        cluster.nodes[0].port,
        Duration::from_secs(5),
    )
    .unwrap();
    let ring = table.ring(3).unwrap();
    (0..10_000)
        .map(|i| format!("key-{i}"))
        .find_map(|key| {
            let replicas: Vec<u64> = ring
                .replicas_of_key(key.as_bytes())
                .iter()
                .map(|r| r.node_id)
                .collect();
            (replicas.contains(&inside) && !replicas.iter().any(|r| outside.contains(r)))
                .then_some((key, replicas))
        })
        .expect("some key has such a preference list")
}

#[test]
fn a_partitioned_minority_refuses_strict_writes_and_takes_sloppy_ones() {
    let cluster = Cluster::start_with(
        "failures-partition",
        5,
        &[
            "--membership-interval-ms",
            "200",
            "--replica-timeout-ms",
            "500",
        ],
    );
    wait_all_up(&cluster, Duration::from_secs(60));
    let ids: Vec<u64> = (0..5).map(|i| cluster.node_id(i)).collect();
    // A key node 0 replicates with two nodes of the majority side.
    let (key, replicas) = key_replicated_by(&cluster, ids[0], &[ids[1]]);
    cluster.partition(&[0, 1]);
    wait_for(
        "the minority sees the majority Down",
        Duration::from_secs(30),
        || {
            (0..2).all(|o| {
                ids[2..]
                    .iter()
                    .all(|&id| cluster.seen(o, id).is_some_and(|(s, _)| s == Health::Down))
            })
        },
    );
    let mut client = cluster.client(0, Consistency::Quorum);
    client.set_quorum(QuorumMode::Strict);
    let message = unavailable(client.put(key.as_bytes(), b"strict", &[]));
    assert!(message.contains("strict quorum"), "{message}");
    client.set_quorum(QuorumMode::Sloppy);
    client
        .put(key.as_bytes(), b"sloppy", &[])
        .expect("a sloppy write counts node 1 standing in");
    // Node 1 holds it as a hint for one of the key's majority-side owners (its shards
    // report their hints to `ringkv status` within a replay tick).
    let owners: Vec<u64> = replicas.iter().copied().filter(|&r| r != ids[0]).collect();
    wait_for(
        "the stand-in shows its hint",
        Duration::from_secs(10),
        || {
            owners
                .iter()
                .any(|&owner| hints_for(&cluster, &[1], owner) > 0)
        },
    );
    // The majority side, meanwhile, takes strict writes of its own keys.
    let (other, _) = key_replicated_by(&cluster, ids[2], &[ids[0], ids[1]]);
    let mut majority = cluster.client(2, Consistency::Quorum);
    majority.set_quorum(QuorumMode::Strict);
    majority.put(other.as_bytes(), b"majority", &[]).unwrap();
    cluster.heal();
    wait_all_up(&cluster, Duration::from_secs(60));
    let owner_nodes: Vec<usize> = (2..5).filter(|&n| owners.contains(&ids[n])).collect();
    wait_for(
        "the hint reaches its owner",
        Duration::from_secs(60),
        || hints_for(&cluster, &[0, 1], owners[0]) + hints_for(&cluster, &[0, 1], owners[1]) == 0,
    );
    // Node 0 holds the write; of the two owners, the one the hint was for got it from
    // node 1, the other (no stand-in left for it) from node 0's own hint.
    assert!(replica_holds(&cluster, 0, key.as_bytes(), b"sloppy"));
    for &n in &owner_nodes {
        assert!(
            replica_holds(&cluster, n, key.as_bytes(), b"sloppy"),
            "owner node {n} lacks the sloppy write"
        );
    }
}

/// One client of the history test: writes unique values (with the context of its last
/// read of the key) and reads, through node `node`, until told to stop.
fn history_client(
    id: u32,
    port: u16,
    keys: usize,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
) {
    let now = || ringkv::version::now_us();
    let mut contexts: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut client = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let key = format!("h{}", seq as usize * 7919 % keys);
        let c = match client.as_mut() {
            Some(c) => c,
            None => match BlockingClient::connect("127.0.0.1", port, Duration::from_secs(3)) {
                Ok(mut c) => {
                    c.set_consistency(Consistency::Quorum);
                    client.insert(c)
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        let key_bytes = Bytes::from(key.clone());
        if seq % 3 == 0 {
            let op = history.lock().unwrap().invoke_read(id, key_bytes, now());
            match c.get(key.as_bytes()) {
                Ok(read) => {
                    let values = read.values.iter().map(|v| v.value.clone()).collect();
                    let context =
                        Context::decode(&read.context).unwrap_or_else(|_| Context::empty());
                    history.lock().unwrap().read_ok(op, values, context, now());
                    contexts.insert(key, read.context.to_vec());
                }
                Err(e) => {
                    history.lock().unwrap().complete(op, outcome_of(&e), now());
                    client = None;
                }
            }
        } else {
            let value = format!("c{id}-{seq}");
            let op = history.lock().unwrap().invoke_write(
                id,
                key_bytes,
                Bytes::from(value.clone()),
                now(),
            );
            let context = contexts.get(&key).cloned().unwrap_or_default();
            match c.put(key.as_bytes(), value.as_bytes(), &context) {
                Ok(written) => {
                    let context = Context::decode(&written).unwrap_or_else(|_| Context::empty());
                    history.lock().unwrap().write_ok(op, context, now());
                }
                Err(e) => {
                    history.lock().unwrap().complete(op, outcome_of(&e), now());
                    client = None;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A definite refusal is a failure; anything else (a timeout, a broken connection)
/// leaves the write's fate unknown.
fn outcome_of(error: &ClientError) -> Outcome {
    match error {
        ClientError::Server { status, message } if *status != Status::Internal => {
            Outcome::Fail(format!("{status:?}: {message}"))
        }
        _ => Outcome::Timeout,
    }
}

#[test]
fn no_acknowledged_write_is_lost_through_kills_pauses_and_partitions() {
    let mut cluster = Cluster::start_with(
        "failures-history",
        4,
        &[
            "--membership-interval-ms",
            "200",
            "--replica-timeout-ms",
            "500",
        ],
    );
    wait_all_up(&cluster, Duration::from_secs(60));
    let history = Arc::new(Mutex::new(History::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4u32)
        .map(|id| {
            let port = cluster.nodes[id as usize].port;
            let (history, stop) = (history.clone(), stop.clone());
            std::thread::spawn(move || history_client(id, port, 20, history, stop))
        })
        .collect();
    let pause = |d: u64| std::thread::sleep(Duration::from_secs(d));
    pause(2);
    // Kill a node and bring it back.
    cluster.nodes[3].kill9();
    pause(4);
    cluster.nodes[3].restart();
    pause(3);
    // Pause one (SIGSTOP): it holds its connections and answers nothing.
    let pid = cluster.nodes[2].pid().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    pause(4);
    unsafe { libc::kill(pid, libc::SIGCONT) };
    pause(3);
    // Cut one off from the rest, both ways.
    cluster.partition(&[1]);
    pause(4);
    cluster.heal();
    pause(3);
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    // Settle: everyone Up, every hint delivered.
    wait_all_up(&cluster, Duration::from_secs(60));
    let ids: Vec<u64> = (0..4).map(|i| cluster.node_id(i)).collect();
    wait_for("every hint is delivered", Duration::from_secs(90), || {
        ids.iter()
            .all(|&id| hints_for(&cluster, &[0, 1, 2, 3], id) == 0)
    });
    let mut finals = BTreeMap::new();
    let mut reader = cluster.client(0, Consistency::All);
    for k in 0..20 {
        let key = format!("h{k}");
        let read = (0..50)
            .find_map(|_| {
                let read = reader.get(key.as_bytes()).ok();
                if read.is_none() {
                    std::thread::sleep(Duration::from_millis(200));
                }
                read
            })
            .unwrap_or_else(|| panic!("no final read of {key} at ALL"));
        let values = read.values.iter().map(|v| v.value.clone()).collect();
        let context = Context::decode(&read.context).unwrap_or_else(|_| Context::empty());
        finals.insert(Bytes::from(key), (values, context));
    }
    let history = history.lock().unwrap();
    let acknowledged = history.acknowledged_writes().count();
    let lost = history.lost_writes(&finals);
    eprintln!(
        "{} operations, {acknowledged} acknowledged writes, {} lost",
        history.ops().len(),
        lost.len()
    );
    assert!(
        acknowledged > 200,
        "only {acknowledged} acknowledged writes"
    );
    assert!(
        lost.is_empty(),
        "acknowledged writes lost: {:?}",
        lost.iter()
            .map(|&id| &history.ops()[id])
            .take(5)
            .collect::<Vec<_>>()
    );
}
