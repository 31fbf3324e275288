//! Three real nodes on loopback, N = 3: quorum writes read back through every node,
//! QUORUM keeps working with a node killed while ALL says Unavailable, blind concurrent
//! writes become siblings that one write with the merged context resolves, and read
//! repair brings a stale replica up to date; every `ringkv bench` workload runs on it.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{members_known, unavailable, values, wait_until, Cluster};
use common::free_ports;
use ringkv::protocol::{Consistency, Request, Status};

#[test]
fn quorum_writes_and_reads_survive_a_killed_node_and_all_does_not() {
    let mut cluster = Cluster::start("cluster-quorum", 3);
    let two = Consistency::Count(2);
    for i in 0..30 {
        let mut writer = cluster.client(i % 3, two);
        writer
            .put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes(), &[])
            .unwrap();
    }
    for node in 0..3 {
        let mut reader = cluster.client(node, two);
        for i in 0..30 {
            assert_eq!(
                values(&mut reader, &format!("k{i}")),
                vec![format!("v{i}").into_bytes()],
                "node {node}"
            );
        }
    }
    cluster.nodes[2].kill9();
    for node in 0..2 {
        let mut client = cluster.client(node, Consistency::Quorum);
        client
            .put(format!("after{node}").as_bytes(), b"x", &[])
            .unwrap();
        for i in 0..30 {
            assert_eq!(
                values(&mut client, &format!("k{i}")),
                vec![format!("v{i}").into_bytes()]
            );
        }
        let mut all = cluster.client(node, Consistency::All);
        let message = unavailable(all.get(b"k1"));
        // It fails as soon as the dead replica does: 3 can no longer answer.
        assert!(
            message.contains("needed 3 of 3 replicas") && message.contains("1 failed"),
            "{message}"
        );
        // A failed write may still be stored where it got to (Dynamo's contract: the
        // client learns it did not reach W, not that it reached nobody).
        // Refused before it is sent once the detector holds the replica Down.
        let message = unavailable(all.put(format!("all{node}").as_bytes(), b"y", &[]));
        assert!(
            message.contains("not the 3 asked for")
                || message.contains("only 2 of the key's replicas are Up"),
            "{message}"
        );
    }
    // More than N can never be met.
    let mut four = cluster.client(0, Consistency::Count(4));
    let message = unavailable(four.get(b"k1"));
    assert!(
        message.contains("4 replicas requested but the key has 3"),
        "{message}"
    );
}

#[test]
fn blind_concurrent_writes_become_siblings_and_one_write_resolves_them() {
    let cluster = Cluster::start("cluster-siblings", 3);
    let mut a = cluster.client(0, Consistency::Quorum);
    let mut b = cluster.client(1, Consistency::Quorum);
    a.put(b"cart", b"apple", &[]).unwrap();
    b.put(b"cart", b"pear", &[]).unwrap();
    let mut c = cluster.client(2, Consistency::Quorum);
    let got = c.get(b"cart").unwrap();
    let mut siblings: Vec<&[u8]> = got.values.iter().map(|v| v.value.as_ref()).collect();
    siblings.sort();
    assert_eq!(siblings, vec![&b"apple"[..], &b"pear"[..]]);
    c.put(b"cart", b"apple+pear", &got.context).unwrap();
    for node in 0..3 {
        let mut reader = cluster.client(node, Consistency::Quorum);
        assert_eq!(
            values(&mut reader, "cart"),
            vec![b"apple+pear".to_vec()],
            "node {node}"
        );
    }
}

#[test]
fn read_repair_brings_a_stale_replica_up_to_date() {
    let mut cluster = Cluster::start("cluster-repair", 3);
    cluster.nodes[2].kill9();
    let mut client = cluster.client(0, Consistency::Quorum);
    client.put(b"missed", b"while down", &[]).unwrap();
    cluster.nodes[2].restart();
    wait_until("the restarted node knows the others", || {
        members_known(&cluster.nodes[2]) == 3
    });
    // Node 2's own copy is empty. A read at ALL sees the difference and repairs it,
    // after answering: wait until node 2's replica (REPLICA_READ on its own shards)
    // holds the write.
    let mut all = cluster.client(0, Consistency::All);
    assert_eq!(values(&mut all, "missed"), vec![b"while down".to_vec()]);
    let stale = &cluster.nodes[2];
    wait_until("read repair reached the stale replica", || {
        // Sent to the node's client port, the request goes to the key's owning shard.
        let request = Request::ReplicaRead {
            key: "missed".into(),
        };
        matches!(
            stale.client().request(&request).map(|r| r.status),
            Ok(Status::Ok)
        )
    });
    // With the other two down, node 2 answers at ONE from its own, repaired, copy.
    cluster.nodes[0].kill9();
    cluster.nodes[1].kill9();
    let mut alone = cluster.client(2, Consistency::One);
    assert_eq!(values(&mut alone, "missed"), vec![b"while down".to_vec()]);
}

#[test]
fn every_bench_workload_runs_against_the_cluster_without_errors() {
    let cluster = Cluster::start("cluster-bench", 3);
    let target = format!("ringkv://127.0.0.1:{}", cluster.nodes[1].port);
    let cases = [
        ("a", "token", "quorum"),
        ("a", "direct", "all"),
        ("a", "aware", "one"),
        ("b", "token", "quorum"),
        ("c", "token", "quorum"),
        ("d", "token", "quorum"),
        ("f", "token", "quorum"),
        ("write-only", "direct", "quorum"),
    ];
    for (workload, routing, consistency) in cases {
        let out = std::process::Command::new(common::BIN)
            .args(["bench", "--target", &target, "--workload", workload])
            .args(["--records", "200", "--value-size", "100"])
            .args(["--connections", "4", "--ops", "400", "--prefill"])
            .args(["--routing", routing, "--consistency", consistency])
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let case = format!("{workload} {routing} {consistency}");
        assert!(out.status.success(), "{case}: {printed}");
        assert!(printed.contains("400 ops in "), "{case}: {printed}");
        assert!(
            printed.contains("(0 errors, 0 not found)"),
            "{case}: {printed}"
        );
    }
}

#[test]
fn a_node_with_another_replication_factor_or_conflict_mode_is_refused() {
    let cluster = Cluster::start("cluster-rf", 1);
    let seed = format!("127.0.0.1:{}", cluster.nodes[0].port);
    // What a node joining through `seed` with `flags` says as it refuses to start.
    let refusal = |name: &str, flags: &[&str]| {
        let port = free_ports(3).to_string();
        let out = std::process::Command::new(common::BIN)
            .args([
                "server",
                "--port",
                &port,
                "--shards",
                "2",
                "--no-pin",
                "--data-dir",
            ])
            .arg(cluster.dir.join(name))
            .args(["--seeds", &seed])
            .args(flags)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flags:?}: the node started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let message = refusal("rf", &["--replication-factor", "2"]);
    assert!(
        message.contains("--replication-factor 3, this node with 2"),
        "{message}"
    );
    let message = refusal("lww", &["--conflicts", "lww"]);
    assert!(
        message.contains("--conflicts dvv, this node with lww"),
        "{message}"
    );
}

#[test]
fn a_token_aware_client_routes_to_a_node_that_joined_after_it_connected() {
    let mut cluster = Cluster::start("cluster-refresh", 2);
    let port = cluster.nodes[0].port;
    let (connected, joined) = (flume::bounded(1), flume::bounded::<()>(1));
    let (connected_tx, connected_rx) = connected;
    let (joined_tx, joined_rx) = joined;
    let client_thread = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let options = ringkv::client::ClientOptions {
                routing: ringkv::client::Routing::TokenAware,
                consistency: Consistency::Quorum,
                ..Default::default()
            };
            let client = ringkv::client::Client::connect("127.0.0.1", port, options)
                .await
                .unwrap();
            let before = client.shard_count();
            connected_tx.send(before).unwrap();
            joined_rx.recv_async().await.unwrap();
            // Past the refresh interval, a request re-reads the member table first.
            let deadline = Instant::now() + Duration::from_secs(30);
            while client.shard_count() == before && Instant::now() < deadline {
                glommio::timer::sleep(Duration::from_millis(200)).await;
                client.put(b"k", b"v", &[]).await.unwrap();
            }
            (before, client.shard_count())
        })
        .unwrap();
    assert_eq!(connected_rx.recv().unwrap(), 4, "2 nodes x 2 shards");
    cluster.add_node();
    joined_tx.send(()).unwrap();
    let (before, after) = client_thread.join().unwrap();
    assert_eq!(
        (before, after),
        (4, 6),
        "the client connected to the new node's 2 shards"
    );
}

#[test]
fn under_lww_blind_writes_from_every_node_leave_one_value_everywhere() {
    let cluster = Cluster::start_with("cluster-lww", 3, &["--conflicts", "lww"]);
    for round in 0..10u32 {
        for node in 0..3 {
            let mut writer = cluster.client(node, Consistency::Quorum);
            writer
                .put(b"shared", format!("{round}-{node}").as_bytes(), &[])
                .unwrap();
        }
    }
    // Every node reads the same single value: the last write made, node 2's in round 9.
    for node in 0..3 {
        let mut reader = cluster.client(node, Consistency::All);
        assert_eq!(
            values(&mut reader, "shared"),
            vec![b"9-2".to_vec()],
            "node {node}"
        );
    }
}

#[test]
fn a_restarted_node_remembers_the_members_it_knew() {
    let mut cluster = Cluster::start("cluster-members", 3);
    // The table is kept in DATA/members in the background once it changes.
    let dir = cluster.nodes[0].data_dir.clone();
    wait_until("node 0 keeps the table of 3", || {
        ringkv::storage::node_members::load(&dir).len() == 3
    });
    for node in &mut cluster.nodes {
        node.kill9();
    }
    // Node 0 has no seeds and nobody to ask: what it knows comes from DATA/members.
    cluster.nodes[0].restart();
    assert_eq!(members_known(&cluster.nodes[0]), 3);
}
