//! Clock pruning in the engine ([`Engine::set_clock_pruning`]): flushes and compactions
//! drop the entries the rule allows, the drop survives restarts and compactions with
//! tables that still hold the entry, and the shard's clock keeps this node's counters
//! above every one it minted, so a pruned entry of its own is never counted again.
//! Also overwrites (`Engine::write_over`), which supersede whatever the shard stores.

use super::*;
use crate::version::{Pruning, Supersedes};

/// Node 9, another replica, read `stored` and wrote `value` over it.
fn overwritten_by_nine(stored: &VersionSet, value: &[u8]) -> VersionSet {
    let versioned = Versioned {
        timestamp_us: 2_000,
        value: Some(Bytes::copy_from_slice(value)),
    };
    VersionSet::coordinate(stored, &stored.context(), versioned, 9, 2_000)
}

/// Keeps only node 9's entry (every other valueless entry is old enough).
fn only_nine_is_a_replica(engine: &Engine) {
    engine.set_clock_pruning(Box::new(|_key, versions| {
        versions.prune(&Pruning {
            replicas: &[9],
            before: u64::MAX,
        })
    }));
}

fn nodes(versions: &VersionSet) -> Vec<NodeId> {
    versions.context().pairs().iter().map(|&(n, _)| n).collect()
}

#[test]
fn flush_and_compaction_drop_entries_and_the_drop_survives_restart() {
    run(|| async {
        let dir = test_dir();
        let engine = open(dir.path(), SyncPolicy::Batch).await;
        let mine = engine
            .write(b"k", &Context::empty(), Some(b"a"), 1_000)
            .await
            .unwrap();
        engine
            .merge(b"k", &overwritten_by_nine(&mine, b"b"))
            .await
            .unwrap();
        // Without a rule the flushed table keeps node 7's (valueless) entry.
        engine.flush().await.unwrap();
        assert_eq!(nodes(&engine.get(b"k").await.unwrap().unwrap()), [7, 9]);
        only_nine_is_a_replica(&engine);
        // A read joins every table: the entry is back until one table holds the key.
        engine
            .write(b"other", &Context::empty(), Some(b"x"), 3_000)
            .await
            .unwrap();
        engine.flush().await.unwrap();
        engine.compact_all().await.unwrap();
        let stored = engine.get(b"k").await.unwrap().unwrap();
        assert_eq!(nodes(&stored), [9]);
        assert_eq!(live(&engine, b"k").await, [b"b".to_vec()]);
        assert!(engine.stats().clock_entries_pruned >= 1);
        engine.close().await.unwrap();
        let engine = open(dir.path(), SyncPolicy::Batch).await;
        assert_eq!(nodes(&engine.get(b"k").await.unwrap().unwrap()), [9]);
        engine.close().await.unwrap();
    });
}

#[test]
fn a_pruned_own_entry_is_never_counted_again_even_after_a_restart() {
    run(|| async {
        let dir = test_dir();
        let engine = open(dir.path(), SyncPolicy::Batch).await;
        only_nine_is_a_replica(&engine);
        let mine = engine
            .write(b"k", &Context::empty(), Some(b"a"), 1_000)
            .await
            .unwrap();
        assert_eq!(mine.counter_of(7), 1_000, "the first dot takes the clock");
        // Node 9 supersedes "a"; a stale copy elsewhere still holds (7, 1000, []).
        let superseded = overwritten_by_nine(&mine, b"b");
        engine.merge(b"k", &superseded).await.unwrap();
        engine.flush().await.unwrap();
        engine.compact_all().await.unwrap();
        assert_eq!(engine.get(b"k").await.unwrap().unwrap().counter_of(7), 0);
        engine.close().await.unwrap();
        // A restart whose wall clock is far behind: the clock still starts above 1000.
        let engine = open(dir.path(), SyncPolicy::Batch).await;
        let again = engine
            .write(b"k", &Context::empty(), Some(b"c"), 5)
            .await
            .unwrap();
        assert!(again.counter_of(7) > 1_000, "{again:?}");
        // The copy that still knows (7, 1000) superseded does not hide the new write.
        let everywhere = again.sync(&superseded);
        let mut values: Vec<&[u8]> = everywhere
            .live_values()
            .map(|v| v.value.as_deref().unwrap())
            .collect();
        values.sort();
        assert_eq!(values, [b"b".as_slice(), b"c"]);
        engine.close().await.unwrap();
    });
}

#[test]
fn the_clock_restarts_above_counters_only_the_log_holds() {
    run(|| async {
        let dir = test_dir();
        let engine = open(dir.path(), SyncPolicy::Batch).await;
        engine
            .write(b"k", &Context::empty(), Some(b"a"), 50_000)
            .await
            .unwrap();
        engine.close().await.unwrap();
        // Nothing was flushed: the floor comes from the replayed log.
        let engine = open(dir.path(), SyncPolicy::Batch).await;
        let other = engine
            .write(b"j", &Context::empty(), Some(b"b"), 5)
            .await
            .unwrap();
        assert!(other.counter_of(7) > 50_000, "{other:?}");
        engine.close().await.unwrap();
    });
}

#[test]
fn overwrites_supersede_whatever_the_shard_stores_even_when_they_race() {
    run(|| async {
        let dir = test_dir();
        let engine = Rc::new(open(dir.path(), SyncPolicy::Batch).await);
        // Siblings first: two writes without context.
        for v in [&b"x"[..], b"y"] {
            engine
                .write(b"k", &Context::empty(), Some(v), 1)
                .await
                .unwrap();
        }
        assert_eq!(live(&engine, b"k").await.len(), 2);
        // Twenty overwrites at once, on one shard: each supersedes what it finds.
        let writes: Vec<_> = (0..20u8)
            .map(|i| {
                let engine = engine.clone();
                glommio::spawn_local(async move {
                    engine
                        .write_over(b"k", &Supersedes::Stored, Some(&[i]), 2)
                        .await
                        .unwrap();
                })
            })
            .collect();
        for w in writes {
            w.await;
        }
        assert_eq!(live(&engine, b"k").await.len(), 1, "no siblings left");
        assert_eq!(
            Supersedes::decode(&[crate::version::CONTEXT_OVERWRITE]).unwrap(),
            Supersedes::Stored
        );
        assert_eq!(
            Supersedes::decode(&[]).unwrap(),
            Supersedes::Seen(Context::empty())
        );
        engine.close().await.unwrap();
    });
}
