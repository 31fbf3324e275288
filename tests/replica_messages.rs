//! The internal protocol on a real node: REPLICA_WRITE merges another node's version
//! set into the key (siblings with a local write, durable across kill -9), REPLICA_READ
//! returns the whole set, tombstones included; a set that does not decode is refused
//! with BadRequest and the connection keeps working; a clock entry of a node that is not
//! a replica, old and without values, is left out of what clients get.

mod common;

use bytes::Bytes;
use common::{test_dir, Server};
use ringkv::protocol::{Request, ResponseBody, Status};
use ringkv::version::{Context, VersionSet, Versioned};

fn remote_set(value: &'static [u8], node: u64) -> VersionSet {
    let versioned = Versioned {
        timestamp_us: 1,
        value: Some(Bytes::from_static(value)),
    };
    VersionSet::coordinate(&VersionSet::empty(), &Context::empty(), versioned, node, 0)
}

fn replica_read(
    client: &mut ringkv::client::blocking::BlockingClient,
    key: &str,
) -> Option<VersionSet> {
    let response = client
        .request(&Request::ReplicaRead {
            key: key.to_string().into(),
        })
        .unwrap();
    match (response.status, response.body) {
        (Status::Ok, ResponseBody::Versions { versions }) => {
            let (set, used) = VersionSet::decode(&versions).unwrap();
            assert_eq!(used, versions.len());
            Some(set)
        }
        (Status::NotFound, ResponseBody::Empty) => None,
        other => panic!("unexpected answer {other:?}"),
    }
}

#[test]
fn replica_writes_merge_and_replica_reads_return_the_whole_set() {
    let dir = test_dir("replica-messages");
    let mut server = Server::start(&dir.join("data"), 2, &["--sync", "batch"]);
    let mut client = server.client();
    assert_eq!(replica_read(&mut client, "k"), None);
    client.put(b"k", b"local", &[]).unwrap();
    // Node 1_000_001 (odd, as node ids are) wrote "remote" without seeing "local".
    let remote = remote_set(b"remote", 1_000_001);
    let response = client
        .request(&Request::ReplicaWrite {
            key: "k".into(),
            versions: remote.encode().into(),
        })
        .unwrap();
    assert_eq!(response.status, Status::Ok, "{}", response.message);
    let mut got: Vec<Vec<u8>> = client
        .get(b"k")
        .unwrap()
        .values
        .iter()
        .map(|v| v.value.to_vec())
        .collect();
    got.sort();
    assert_eq!(got, vec![b"local".to_vec(), b"remote".to_vec()]);
    let set = replica_read(&mut client, "k").unwrap();
    assert!(
        set.descends(&remote),
        "the replica's set holds the remote dot"
    );

    // A delete is a tombstone: GET says not found, REPLICA_READ still has the set.
    let context = client.get(b"k").unwrap().context;
    client.delete(b"k", &context).unwrap();
    assert!(client.get(b"k").unwrap().values.is_empty());
    let set = replica_read(&mut client, "k").unwrap();
    assert!(set.is_tombstone_only());

    // Garbage where the set should be.
    let response = client
        .request(&Request::ReplicaWrite {
            key: "bad".into(),
            versions: Bytes::from_static(&[0xff; 7]),
        })
        .unwrap();
    assert_eq!(response.status, Status::BadRequest);
    assert!(
        response.message.contains("version set"),
        "{}",
        response.message
    );
    client.ping().unwrap();

    // Durable: survives kill -9.
    client
        .request(&Request::ReplicaWrite {
            key: "kept".into(),
            versions: remote_set(b"v", 1_000_003).encode().into(),
        })
        .unwrap();
    server.kill9();
    server.restart();
    let mut client = server.client();
    assert_eq!(client.get(b"kept").unwrap().values[0].value.as_ref(), b"v");
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn old_entries_of_nodes_that_are_not_replicas_are_left_out_of_contexts() {
    let dir = test_dir("replica-pruning");
    let mut server = Server::start(&dir.join("data"), 1, &["--sync", "batch"]);
    let mut client = server.client();
    // Node 1_000_001 (no member of this cluster) wrote "old" long ago; node 1_000_003
    // (no member either) read it and wrote "new" over it: the first entry is old and
    // holds no values, the second holds a value and must stay.
    let old = remote_set(b"old", 1_000_001);
    let versioned = Versioned {
        timestamp_us: 2,
        value: Some(Bytes::from_static(b"new")),
    };
    let new = VersionSet::coordinate(&old, &old.context(), versioned, 1_000_003, 0);
    let response = client
        .request(&Request::ReplicaWrite {
            key: "k".into(),
            versions: new.encode().into(),
        })
        .unwrap();
    assert_eq!(response.status, Status::Ok, "{}", response.message);
    let got = client.get(b"k").unwrap();
    assert_eq!(got.values.len(), 1);
    assert_eq!(got.values[0].value.as_ref(), b"new");
    let context = Context::decode(&got.context).unwrap();
    let nodes: Vec<u64> = context.pairs().iter().map(|&(n, _)| n).collect();
    assert_eq!(nodes, [1_000_003], "the valueless outsider entry is pruned");
    // A write with that context still supersedes "new" (the kept entry covers it).
    let written = client.put(b"k", b"newest", &got.context).unwrap();
    let after = client.get(b"k").unwrap();
    assert_eq!(after.values.len(), 1);
    assert_eq!(after.values[0].value.as_ref(), b"newest");
    // The written context names this node and nobody else: 1_000_003's entry is
    // valueless now, and not a replica's.
    let written = Context::decode(&written).unwrap();
    assert_eq!(written.pairs().len(), 1, "{written:?}");
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
