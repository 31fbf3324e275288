//! Keys reach their owning shard either way: forwarded across cores by the shard that
//! received them, or sent straight to the owner's port by the shard-aware client.

mod common;

use common::{test_dir, Server};
use glommio::{LocalExecutorBuilder, Placement};
use ringkv::client::{Client, ClientOptions, Routing};
use ringkv::ring::{token, ShardMap};

#[test]
fn the_shard_map_describes_the_node() {
    let dir = test_dir("shardmap");
    let server = Server::start(&dir.join("data"), 2, &["--sync", "none"]);
    let map = server.client().shard_map().unwrap();
    assert_eq!(map.ports, vec![server.port + 1, server.port + 2]);
    assert_eq!(map.vnodes.len(), 2 * 16);
    let ring = ShardMap::new(map.vnodes.clone());
    let owners: Vec<u16> = (0..1000)
        .map(|i| *ring.owner(token(format!("k{i}").as_bytes())))
        .collect();
    assert!(owners.contains(&0) && owners.contains(&1));
    // Every shard answers SHARD_MAP the same way.
    assert_eq!(server.shard_client(1).shard_map().unwrap(), map);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn requests_on_a_non_owning_shard_are_forwarded() {
    let dir = test_dir("forward");
    let server = Server::start(&dir.join("data"), 2, &["--sync", "none"]);
    let map = server.client().shard_map().unwrap();
    let ring = ShardMap::new(map.vnodes);
    let owned_by = |shard: u16| {
        (0..)
            .map(|i| format!("key{i}"))
            .filter(move |k| *ring.owner(token(k.as_bytes())) == shard)
    };
    let keys_of_1: Vec<String> = owned_by(1).take(50).collect();
    // Written through shard 0's own port: every one crosses to shard 1.
    let mut shard0 = server.shard_client(0);
    for key in &keys_of_1 {
        shard0.put(key.as_bytes(), key.as_bytes(), &[]).unwrap();
    }
    // Read back on the owner's port (no hop) and on the wrong one (a hop).
    let mut shard1 = server.shard_client(1);
    for key in &keys_of_1 {
        assert_eq!(
            shard1.get(key.as_bytes()).unwrap().values[0].value.as_ref(),
            key.as_bytes()
        );
        assert_eq!(
            shard0.get(key.as_bytes()).unwrap().values[0].value.as_ref(),
            key.as_bytes()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_async_client_routes_by_shard_and_pipelines() {
    let dir = test_dir("aware");
    let server = Server::start(&dir.join("data"), 2, &["--sync", "batch"]);
    let port = server.port;
    for routing in [Routing::ShardAware, Routing::ForceForward, Routing::Direct] {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let options = ClientOptions {
                    routing,
                    ..ClientOptions::default()
                };
                let client =
                    std::rc::Rc::new(Client::connect("127.0.0.1", port, options).await.unwrap());
                let expected_connections = if routing == Routing::Direct { 1 } else { 2 };
                assert_eq!(client.shard_count(), expected_connections);
                // 200 writes in flight at once on the same connections.
                let tasks: Vec<_> = (0..200)
                    .map(|i| {
                        let client = client.clone();
                        glommio::spawn_local(async move {
                            let key = format!("{routing:?}-{i}");
                            client
                                .put(key.as_bytes(), key.as_bytes(), &[])
                                .await
                                .unwrap();
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await;
                }
                for i in 0..200 {
                    let key = format!("{routing:?}-{i}");
                    let result = client.get(key.as_bytes()).await.unwrap();
                    assert_eq!(result.values.len(), 1);
                    assert_eq!(result.values[0].value.as_ref(), key.as_bytes());
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn siblings_and_contexts_through_the_server() {
    let dir = test_dir("siblings");
    let server = Server::start(&dir.join("data"), 2, &["--sync", "batch"]);
    let mut a = server.client();
    let mut b = server.shard_client(0);
    a.put(b"doc", b"from-a", &[]).unwrap();
    b.put(b"doc", b"from-b", &[]).unwrap();
    let read = a.get(b"doc").unwrap();
    let mut values: Vec<&[u8]> = read.values.iter().map(|v| v.value.as_ref()).collect();
    values.sort();
    assert_eq!(values, vec![b"from-a".as_ref(), b"from-b".as_ref()]);
    // One write with the context of that read resolves the conflict.
    a.put(b"doc", b"merged", &read.context).unwrap();
    let read = b.get(b"doc").unwrap();
    assert_eq!(read.values.len(), 1);
    assert_eq!(read.values[0].value.as_ref(), b"merged");
    // A delete with the context removes it; the context survives for later writes.
    b.delete(b"doc", &read.context).unwrap();
    let gone = a.get(b"doc").unwrap();
    assert!(gone.values.is_empty());
    assert!(!gone.context.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
