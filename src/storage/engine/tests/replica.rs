//! Replica writes ([`Engine::merge`]): another node's set merges into what the shard
//! stores, as siblings or as a newer version; a merge that adds nothing writes nothing;
//! merges and local writes to one key interleave without losing a version; under `lww`
//! a merged clock moves the shard's clock past it.

use super::*;

/// A set made by node `node` coordinating `value` over `stored` with `stored`'s context
/// (`blind`: with no context).
fn coordinated(stored: &VersionSet, value: &[u8], node: NodeId, blind: bool) -> VersionSet {
    let context = if blind {
        Context::empty()
    } else {
        stored.context()
    };
    let versioned = Versioned {
        timestamp_us: 5,
        value: Some(Bytes::copy_from_slice(value)),
    };
    VersionSet::coordinate(stored, &context, versioned, node, 0)
}

#[test]
fn a_concurrent_remote_set_becomes_siblings_and_survives_restart() {
    run(|| async {
        let dir = test_dir();
        let engine = open(dir.path(), SyncPolicy::Batch).await;
        engine
            .write(b"k", &Context::empty(), Some(b"local"), 1)
            .await
            .unwrap();
        let remote = coordinated(&VersionSet::empty(), b"remote", 9, true);
        let merged = engine.merge(b"k", &remote).await.unwrap();
        assert!(merged.descends(&remote));
        assert_eq!(
            live(&engine, b"k").await,
            vec![b"local".to_vec(), b"remote".to_vec()]
        );
        engine.close().await.unwrap();
        let engine = open(dir.path(), SyncPolicy::Batch).await;
        assert_eq!(
            live(&engine, b"k").await,
            vec![b"local".to_vec(), b"remote".to_vec()]
        );
        // A write with the context of both resolves them, as a local write would.
        let context = context_of(&engine, b"k").await;
        engine.write(b"k", &context, Some(b"one"), 2).await.unwrap();
        assert_eq!(live(&engine, b"k").await, vec![b"one".to_vec()]);
        engine.close().await.unwrap();
    });
}

#[test]
fn a_newer_remote_set_supersedes_and_an_older_one_changes_nothing() {
    run(|| async {
        let dir = test_dir();
        let engine = open(dir.path(), SyncPolicy::Batch).await;
        let first = engine
            .write(b"k", &Context::empty(), Some(b"v1"), 1)
            .await
            .unwrap();
        // Node 9 read v1 and overwrote it: its set descends ours.
        let newer = coordinated(&first, b"v2", 9, false);
        engine.merge(b"k", &newer).await.unwrap();
        assert_eq!(live(&engine, b"k").await, vec![b"v2".to_vec()]);
        // Read repair sends the old set again: nothing changes, nothing is logged.
        let bytes = engine.memtable_bytes();
        let kept = engine.merge(b"k", &first).await.unwrap();
        assert_eq!(kept, newer.sync(&first));
        assert_eq!(
            engine.memtable_bytes(),
            bytes,
            "an idempotent merge writes nothing"
        );
        assert_eq!(live(&engine, b"k").await, vec![b"v2".to_vec()]);
        engine.close().await.unwrap();
    });
}

#[test]
fn merges_and_writes_to_one_key_interleave_without_loss() {
    run(|| async {
        let dir = test_dir();
        let engine = Rc::new(open(dir.path(), SyncPolicy::Batch).await);
        let tasks: Vec<_> = (0..30u32)
            .map(|i| {
                let engine = engine.clone();
                glommio::spawn_local(async move {
                    let value = i.to_le_bytes();
                    if i % 2 == 0 {
                        engine
                            .write(b"hot", &Context::empty(), Some(&value), 1)
                            .await
                            .unwrap();
                    } else {
                        // Each from its own remote node: all concurrent.
                        let remote =
                            coordinated(&VersionSet::empty(), &value, 9 + 2 * u64::from(i), true);
                        engine.merge(b"hot", &remote).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        let mut want: Vec<Vec<u8>> = (0..30u32).map(|i| i.to_le_bytes().to_vec()).collect();
        want.sort();
        assert_eq!(live(&engine, b"hot").await, want);
    });
}

#[test]
fn under_lww_a_merged_clock_moves_the_shards_clock_past_it() {
    run(|| async {
        let dir = test_dir();
        let config = EngineConfig {
            conflicts: ConflictMode::Lww,
            ..config(dir.path(), SyncPolicy::Batch)
        };
        let engine = open_with(config).await;
        // Another coordinator whose clock runs far ahead of ours.
        let ahead = VersionSet::last_write(
            1 << 60,
            Versioned {
                timestamp_us: 1 << 60,
                value: Some(Bytes::from_static(b"remote")),
            },
        );
        engine.merge(b"k", &ahead).await.unwrap();
        assert_eq!(live(&engine, b"k").await, vec![b"remote".to_vec()]);
        // A later local write, with our wall clock, still wins.
        engine
            .write(b"k", &Context::empty(), Some(b"later"), 10)
            .await
            .unwrap();
        assert_eq!(live(&engine, b"k").await, vec![b"later".to_vec()]);
        // And a remote set older than what is stored loses.
        let old = VersionSet::last_write(
            5,
            Versioned {
                timestamp_us: 5,
                value: Some(Bytes::from_static(b"old")),
            },
        );
        engine.merge(b"k", &old).await.unwrap();
        assert_eq!(live(&engine, b"k").await, vec![b"later".to_vec()]);
        engine.close().await.unwrap();
    });
}
