//! Engine tests: a state-machine check against a model (writes, deletes, flushes,
//! compactions, restarts), concurrency on one key, flush and compaction mechanics,
//! faults (full disk, damaged tables, missing manifest).

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use glommio::Shares;
use proptest::prelude::*;

use super::*;
use crate::test_support::{run, temp_dir as test_dir};

mod lww;
mod pruning;
mod replica;

/// Small memtables and eager compaction, so that a few dozen writes exercise flushes
/// and compactions; tombstones may be dropped at once.
fn config(dir: &Path, sync: SyncPolicy) -> EngineConfig {
    EngineConfig {
        sync,
        segment_bytes: 64 << 10,
        buffer_bytes_max: 1 << 20,
        record_bytes_max: 32 << 10,
        memtable_bytes: 2 << 10,
        cache_bytes: 64 << 10,
        gc_grace_us: 0,
        compaction: SizeTieredOptions {
            min_threshold: 2,
            max_threshold: 4,
            ..SizeTieredOptions::default()
        },
        compaction_bytes_per_sec: 0,
        ..EngineConfig::new(dir, 7)
    }
}

fn queue() -> glommio::TaskQueueHandle {
    glommio::executor().create_task_queue(Shares::default(), glommio::Latency::NotImportant, "log")
}

async fn open(dir: &Path, sync: SyncPolicy) -> Engine {
    open_with(config(dir, sync)).await
}

async fn open_with(config: EngineConfig) -> Engine {
    Engine::open(config, queue()).await.unwrap()
}

/// Live values of `key`, sorted (sibling order is not part of the contract).
async fn live(engine: &Engine, key: &[u8]) -> Vec<Vec<u8>> {
    let versions = engine.get(key).await.unwrap();
    let mut values: Vec<Vec<u8>> = versions
        .map(|v| {
            v.live_values()
                .map(|x| x.value.as_ref().unwrap().to_vec())
                .collect()
        })
        .unwrap_or_default();
    values.sort();
    values
}

async fn context_of(engine: &Engine, key: &[u8]) -> Context {
    let versions = engine.get(key).await.unwrap();
    versions.map(|v| v.context()).unwrap_or_else(Context::empty)
}

#[derive(Clone, Debug)]
enum Op {
    /// Write `value` to key `key`; with the context of a read of it, or blind.
    Put {
        key: u8,
        value: u16,
        with_context: bool,
    },
    Delete {
        key: u8,
        with_context: bool,
    },
    /// Seal the memtable and wait for its table.
    Flush,
    /// Merge every table into one.
    Compact,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..8, any::<u16>(), any::<bool>()).prop_map(|(key, value, with_context)| Op::Put { key, value, with_context }),
        2 => (0u8..8, any::<bool>()).prop_map(|(key, with_context)| Op::Delete { key, with_context }),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Restart),
    ]
}

/// Runs `ops` against the engine and against a map of live siblings per key, comparing
/// every key after every step.
fn check_against_model(ops: Vec<Op>, sync: SyncPolicy) {
    run(move || async move {
        let dir = test_dir();
        let mut engine = open(dir.path(), sync).await;
        let mut model: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Put {
                    key,
                    value,
                    with_context,
                } => {
                    let key = vec![b'k', key];
                    let value = value.to_le_bytes().to_vec();
                    let context = if with_context {
                        context_of(&engine, &key).await
                    } else {
                        Context::empty()
                    };
                    engine.write(&key, &context, Some(&value), 1).await.unwrap();
                    let siblings = model.entry(key).or_default();
                    if with_context {
                        siblings.clear();
                    }
                    siblings.push(value);
                }
                Op::Delete { key, with_context } => {
                    let key = vec![b'k', key];
                    let context = if with_context {
                        context_of(&engine, &key).await
                    } else {
                        Context::empty()
                    };
                    engine.write(&key, &context, None, 1).await.unwrap();
                    if with_context {
                        model.entry(key).or_default().clear();
                    }
                    // A blind delete is concurrent with the values: they stay.
                }
                Op::Flush => engine.flush().await.unwrap(),
                Op::Compact => engine.compact_all().await.unwrap(),
                Op::Restart => {
                    engine.close().await.unwrap();
                    drop(engine);
                    engine = open(dir.path(), sync).await;
                }
            }
            for k in 0..8u8 {
                let key = vec![b'k', k];
                let mut expected = model.get(&key).cloned().unwrap_or_default();
                expected.sort();
                assert_eq!(live(&engine, &key).await, expected, "key {k}");
            }
        }
        engine.close().await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model_across_flushes_compactions_and_restarts(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        check_against_model(ops, SyncPolicy::None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model_with_batch_sync(ops in proptest::collection::vec(op(), 1..30)) {
        check_against_model(ops, SyncPolicy::Batch);
    }
}

#[test]
fn concurrent_blind_writes_to_one_key_all_become_siblings_and_survive_restart() {
    run(|| async {
        let dir = test_dir();
        let engine = Rc::new(open(dir.path(), SyncPolicy::Batch).await);
        let tasks: Vec<_> = (0..40u32)
            .map(|i| {
                let engine = engine.clone();
                glommio::spawn_local(async move {
                    engine
                        .write(b"hot", &Context::empty(), Some(&i.to_le_bytes()), 1)
                        .await
                        .unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        assert_eq!(live(&engine, b"hot").await.len(), 40);
        // One write with the context of what is there resolves them all.
        let context = context_of(&engine, b"hot").await;
        engine
            .write(b"hot", &context, Some(b"merged"), 2)
            .await
            .unwrap();
        assert_eq!(live(&engine, b"hot").await, vec![b"merged".to_vec()]);
        engine.close().await.unwrap();
        let engine = open(dir.path(), SyncPolicy::Batch).await;
        assert_eq!(live(&engine, b"hot").await, vec![b"merged".to_vec()]);
        engine.close().await.unwrap();
    });
}

#[test]
fn too_many_siblings_are_refused_until_resolved() {
    run(|| async {
        let dir = test_dir();
        let engine = open(dir.path(), SyncPolicy::None).await;
        for i in 0..100u32 {
            engine
                .write(b"k", &Context::empty(), Some(&i.to_le_bytes()), 1)
                .await
                .unwrap();
        }
        let err = engine
            .write(b"k", &Context::empty(), Some(b"x"), 1)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::TooManySiblings {
                    count: 101,
                    max: 100
                }
            ),
            "{err}"
        );
        assert_eq!(err.status(), crate::protocol::Status::TooLarge);
        let context = context_of(&engine, b"k").await;
        engine
            .write(b"k", &context, Some(b"resolved"), 2)
            .await
            .unwrap();
        assert_eq!(live(&engine, b"k").await, vec![b"resolved".to_vec()]);
        engine.close().await.unwrap();
    });
}

#[test]
fn a_batch_write_is_visible_only_once_durable_and_then_at_once() {
    run(|| async {
        let dir = test_dir();
        let engine = Rc::new(open(dir.path(), SyncPolicy::Batch).await);
        let writer = {
            let engine = engine.clone();
            glommio::spawn_local(async move {
                engine
                    .write(b"k", &Context::empty(), Some(b"v"), 1)
                    .await
                    .unwrap();
            })
        };
        // Wait until the write is queued in the log but its fdatasync has not completed.
        for _ in 0..10_000 {
            if engine.core.pending.borrow().contains_key(b"k".as_ref()) {
                break;
            }
            futures_lite::future::yield_now().await;
        }
        assert!(
            engine.core.pending.borrow().contains_key(b"k".as_ref()),
            "write never queued"
        );
        // Not acknowledged yet: a read must not see it (a crash now could take it back).
        assert!(live(&engine, b"k").await.is_empty());
        writer.await;
        assert_eq!(live(&engine, b"k").await, vec![b"v".to_vec()]);
        engine.close().await.unwrap();
    });
}

/// Writes `count` keys `key-NNNNN` with 100-byte values, blind.
async fn write_keys(engine: &Engine, range: std::ops::Range<u32>, tag: u8) {
    for i in range {
        let key = format!("key-{i:05}");
        engine
            .write(key.as_bytes(), &Context::empty(), Some(&[tag; 100]), 1)
            .await
            .unwrap();
    }
}

/// Table files in a shard directory.
fn table_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("sst".as_ref()))
        .count()
}

/// Writes `key-00000`..`key-00999` into one uncompressed table under `config`, flips a
/// byte in the table's first data block (the file starts with it) and opens the engine
/// again. Returns it and the damaged table's path.
async fn open_with_damaged_first_block(config: EngineConfig) -> (Engine, std::path::PathBuf) {
    let config = EngineConfig {
        table: crate::storage::sstable::TableOptions {
            compression: crate::storage::sstable::Compression::None,
            ..Default::default()
        },
        ..config
    };
    let engine = open_with(EngineConfig {
        memtable_bytes: 1 << 20,
        ..config.clone()
    })
    .await;
    write_keys(&engine, 0..1000, 4).await;
    engine.flush().await.unwrap();
    assert_eq!(engine.table_count(), 1);
    engine.close().await.unwrap();
    drop(engine);
    let table = std::fs::read_dir(&config.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension() == Some("sst".as_ref()))
        .unwrap();
    let mut bytes = std::fs::read(&table).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&table, bytes).unwrap();
    (open_with(config).await, table)
}

/// Compaction options under which the job never finds work: only tests' calls compact.
fn manual_compaction_only() -> SizeTieredOptions {
    SizeTieredOptions {
        min_threshold: 1000,
        max_threshold: 1000,
        ..SizeTieredOptions::default()
    }
}

fn segment_count(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("commitlog")).unwrap().count()
}

#[test]
fn flushes_move_data_to_tables_and_recycle_the_log() {
    run(|| async {
        let dir = test_dir();
        let config = EngineConfig {
            // No compaction: count what the flushes made.
            compaction: manual_compaction_only(),
            ..config(dir.path(), SyncPolicy::Batch)
        };
        let engine = open_with(config.clone()).await;
        write_keys(&engine, 0..2000, 1).await;
        engine.flush().await.unwrap();
        let stats = engine.stats();
        assert!(stats.flushes >= 10, "{stats:?}");
        assert_eq!(engine.table_count() as u64, stats.flushes, "{stats:?}");
        assert!(stats.segments_recycled > 0, "{stats:?}");
        assert_eq!(engine.memory_key_count(), 0);
        // Every segment the tables cover is gone: the active one, maybe one more.
        assert!(
            segment_count(dir.path()) <= 2,
            "{}",
            segment_count(dir.path())
        );
        for i in (0..2000).step_by(97) {
            let key = format!("key-{i:05}");
            assert!(
                engine.read_now(key.as_bytes(), |_| ()).is_none(),
                "in memory"
            );
            assert_eq!(live(&engine, key.as_bytes()).await, vec![vec![1; 100]]);
        }
        engine.close().await.unwrap();
        let engine = open_with(config).await;
        assert_eq!(
            engine.memory_key_count(),
            0,
            "the log replayed covered records"
        );
        for i in 0..2000 {
            let key = format!("key-{i:05}");
            assert_eq!(
                live(&engine, key.as_bytes()).await,
                vec![vec![1; 100]],
                "{key}"
            );
        }
        // An absent key that no filter admits is answered from memory.
        assert_eq!(engine.read_now(b"absent", |v| v.is_none()), Some(true));
        engine.close().await.unwrap();
    });
}

#[test]
fn compaction_merges_tables_keeps_the_newest_versions_and_purges_old_tombstones() {
    run(|| async {
        let dir = test_dir();
        let engine = open(dir.path(), SyncPolicy::None).await;
        write_keys(&engine, 0..1000, 1).await;
        engine.flush().await.unwrap();
        // Overwrite half with context (one value each), delete a tenth.
        for i in 0..500u32 {
            let key = format!("key-{i:05}");
            let context = context_of(&engine, key.as_bytes()).await;
            let value = if i % 5 == 0 {
                None
            } else {
                Some(&[2u8; 100][..])
            };
            engine
                .write(key.as_bytes(), &context, value, 1)
                .await
                .unwrap();
        }
        engine.flush().await.unwrap();
        engine.compactions_idle().await.unwrap();
        engine.compact_all().await.unwrap();
        assert_eq!(engine.table_count(), 1);
        let stats = engine.stats();
        assert!(stats.compactions >= 1, "{stats:?}");
        assert_eq!(stats.keys_purged, 100, "{stats:?}");
        for i in 0..1000u32 {
            let key = format!("key-{i:05}");
            let expected: Vec<Vec<u8>> = match i {
                i if i < 500 && i % 5 == 0 => vec![],
                i if i < 500 => vec![vec![2; 100]],
                _ => vec![vec![1; 100]],
            };
            assert_eq!(live(&engine, key.as_bytes()).await, expected, "{key}");
        }
        // Only the live table's file is left.
        let tables = table_files(dir.path());
        assert_eq!(tables, 1);
        engine.close().await.unwrap();
    });
}

#[test]
fn tombstones_younger_than_gc_grace_survive_compaction() {
    run(|| async {
        let dir = test_dir();
        let config = EngineConfig {
            gc_grace_us: 3600 * 1_000_000,
            ..config(dir.path(), SyncPolicy::None)
        };
        let engine = open_with(config).await;
        write_keys(&engine, 0..100, 1).await;
        for i in 0..100u32 {
            let key = format!("key-{i:05}");
            let context = context_of(&engine, key.as_bytes()).await;
            engine
                .write(key.as_bytes(), &context, None, crate::version::now_us())
                .await
                .unwrap();
        }
        engine.flush().await.unwrap();
        engine.compact_all().await.unwrap();
        assert_eq!(engine.stats().keys_purged, 0);
        let kept = engine
            .get(b"key-00042")
            .await
            .unwrap()
            .expect("tombstone kept");
        assert!(kept.is_tombstone_only());
        engine.close().await.unwrap();
    });
}

#[test]
fn a_full_disk_fails_the_flush_loses_nothing_and_recovers() {
    run(|| async {
        let dir = test_dir();
        let full = EngineConfig {
            // Every table of a 64 KiB memtable is larger than this.
            memtable_bytes: 64 << 10,
            table: crate::storage::sstable::TableOptions {
                compression: crate::storage::sstable::Compression::None,
                ..Default::default()
            },
            table_file_bytes_max: 4096,
            ..config(dir.path(), SyncPolicy::Batch)
        };
        let engine = open_with(full.clone()).await;
        // Writes go on until both memtables are full, then fail with the flush's error.
        let mut acknowledged = 0u32;
        let error = loop {
            let key = format!("key-{acknowledged:05}");
            match engine
                .write(key.as_bytes(), &Context::empty(), Some(&[3; 100]), 1)
                .await
            {
                Ok(_) => acknowledged += 1,
                Err(e) => break e,
            }
            assert!(acknowledged < 100_000, "writes never stopped");
        };
        assert!(error.to_string().contains("No space left"), "{error}");
        assert!(engine.stats().flush_failures >= 1);
        assert_eq!(engine.table_count(), 0);
        for i in 0..acknowledged {
            let key = format!("key-{i:05}");
            assert_eq!(live(&engine, key.as_bytes()).await, vec![vec![3; 100]]);
        }
        engine.close().await.unwrap();
        // No half-written table is left behind, and with room the data flushes.
        let leftovers = table_files(dir.path());
        assert_eq!(leftovers, 0);
        let engine = open(dir.path(), SyncPolicy::Batch).await;
        engine.flush().await.unwrap();
        assert!(engine.table_count() >= 1);
        for i in 0..acknowledged {
            let key = format!("key-{i:05}");
            assert_eq!(live(&engine, key.as_bytes()).await, vec![vec![3; 100]]);
        }
        engine.close().await.unwrap();
    });
}

#[test]
fn a_damaged_block_is_an_error_for_its_keys_only() {
    run(|| async {
        let dir = test_dir();
        let (engine, table) =
            open_with_damaged_first_block(config(dir.path(), SyncPolicy::None)).await;
        let err = engine.get(b"key-00000").await.unwrap_err();
        assert!(
            err.to_string().contains(&table.display().to_string()),
            "{err}"
        );
        assert_eq!(err.status(), crate::protocol::Status::Internal);
        // Keys in other blocks are served.
        assert_eq!(live(&engine, b"key-00999").await, vec![vec![4; 100]]);
        // A write to a damaged key fails too, rather than dropping the stored versions.
        assert!(engine
            .write(b"key-00000", &Context::empty(), Some(b"x"), 1)
            .await
            .is_err());
        engine.close().await.unwrap();
    });
}

#[test]
fn a_lost_or_damaged_manifest_refuses_the_start_and_orphans_are_removed() {
    run(|| async {
        let dir = test_dir();
        let engine = open(dir.path(), SyncPolicy::None).await;
        write_keys(&engine, 0..200, 5).await;
        engine.flush().await.unwrap();
        engine.close().await.unwrap();
        drop(engine);
        // An orphan (a crashed flush's table) goes away at start.
        let orphan = dir
            .path()
            .join(crate::storage::manifest::table_file_name(999_999));
        std::fs::write(&orphan, b"half a table").unwrap();
        let engine = open(dir.path(), SyncPolicy::None).await;
        assert!(!orphan.exists());
        assert_eq!(live(&engine, b"key-00007").await, vec![vec![5; 100]]);
        engine.close().await.unwrap();
        drop(engine);

        let manifest = dir.path().join(crate::storage::manifest::MANIFEST_FILE);
        let mut bytes = std::fs::read(&manifest).unwrap();
        bytes[30] ^= 1;
        std::fs::write(&manifest, &bytes).unwrap();
        let err = Engine::open(config(dir.path(), SyncPolicy::None), queue())
            .await
            .err()
            .expect("damaged manifest refused");
        assert!(err.to_string().contains("MANIFEST"), "{err}");
        std::fs::remove_file(&manifest).unwrap();
        let err = Engine::open(config(dir.path(), SyncPolicy::None), queue())
            .await
            .err()
            .expect("missing manifest refused");
        assert!(err.to_string().contains("no MANIFEST"), "{err}");
    });
}

#[test]
fn closing_during_a_compaction_abandons_it_and_keeps_the_inputs() {
    run(|| async {
        let dir = test_dir();
        let config = EngineConfig {
            compaction: manual_compaction_only(),
            memtable_bytes: 256 << 10,
            ..config(dir.path(), SyncPolicy::None)
        };
        let engine = Rc::new(open_with(config.clone()).await);
        for round in 0..4 {
            write_keys(&engine, round * 2000..(round + 1) * 2000, 6).await;
            engine.flush().await.unwrap();
        }
        let tables = engine.table_count();
        assert!(tables >= 4, "{tables}");
        let compaction = {
            let engine = engine.clone();
            glommio::spawn_local(async move { engine.compact_all().await })
        };
        futures_lite::future::yield_now().await;
        engine.close().await.unwrap();
        // Either it finished before the close, or it gave up; never half of it.
        let finished = compaction.await.is_ok();
        drop(engine);
        let engine = open_with(config).await;
        assert_eq!(engine.table_count(), if finished { 1 } else { tables });
        for i in (0..8000).step_by(31) {
            let key = format!("key-{i:05}");
            assert_eq!(
                live(&engine, key.as_bytes()).await,
                vec![vec![6; 100]],
                "{key}"
            );
        }
        engine.close().await.unwrap();
    });
}

#[test]
fn a_full_disk_fails_compactions_but_keeps_their_inputs_serving() {
    run(|| async {
        let dir = test_dir();
        let config = EngineConfig {
            memtable_bytes: 64 << 10,
            table: crate::storage::sstable::TableOptions {
                compression: crate::storage::sstable::Compression::None,
                ..Default::default()
            },
            // A flush's table fits; two of them merged do not.
            table_file_bytes_max: 96 << 10,
            // Only the compaction asked for below.
            compaction: manual_compaction_only(),
            ..config(dir.path(), SyncPolicy::None)
        };
        let engine = open_with(config).await;
        for round in 0..3 {
            write_keys(&engine, round * 250..(round + 1) * 250, 7).await;
            engine.flush().await.unwrap();
        }
        let tables = engine.table_count();
        assert!(tables >= 3, "{tables}");
        assert!(engine.compact_all().await.is_err());
        assert!(engine.stats().flush_failures == 0, "{:?}", engine.stats());
        assert_eq!(engine.table_count(), tables);
        for i in 0..750 {
            let key = format!("key-{i:05}");
            assert_eq!(
                live(&engine, key.as_bytes()).await,
                vec![vec![7; 100]],
                "{key}"
            );
        }
        engine.close().await.unwrap();
        let partial = table_files(dir.path());
        assert_eq!(
            partial, tables,
            "a failed compaction left its output behind"
        );
    });
}

/// A whole-ring tree kept by the change hook, as the server keeps its trees.
fn hooked_tree(engine: &Engine) -> Rc<RefCell<crate::antientropy::MerkleTree>> {
    use crate::antientropy::{MerkleTree, Shape, TokenRange};
    let tree = Rc::new(RefCell::new(MerkleTree::new(Shape::new(
        TokenRange::new(0, 0),
        10,
    ))));
    let hooked = tree.clone();
    engine.set_change_hook(Box::new(move |key, change| {
        let token = crate::ring::token(key);
        let mut tree = hooked.borrow_mut();
        match change {
            KeyChange::Written {
                old: Some(old),
                contribution,
                ..
            } => tree.update(token, old, Some(contribution)),
            KeyChange::Written { old: None, .. } | KeyChange::Rewritten => tree.mark_dirty(token),
        }
    }));
    tree
}

/// The same tree built from a scan of what the engine stores.
async fn scanned_tree(engine: &Engine) -> crate::antientropy::MerkleTree {
    use crate::antientropy::{contribution, MerkleTree, Shape, TokenRange};
    let mut keys = Vec::new();
    engine
        .scan(&|_| true, 0, |key, versions| {
            keys.push((crate::ring::token(key), contribution(key, versions)));
        })
        .await
        .unwrap();
    MerkleTree::build(Shape::new(TokenRange::new(0, 0), 10), keys)
}

#[test]
fn the_change_hook_keeps_a_tree_equal_to_one_built_from_storage() {
    run(|| async {
        let dir = test_dir();
        let engine = open(dir.path(), SyncPolicy::Batch).await;
        let tree = hooked_tree(&engine);
        // Writes over empty and stored keys, overwrites with and without context,
        // deletes, merges of other replicas' sets, across flushes and compactions (which
        // purge tombstones at once here: gc_grace 0, no purge rule).
        write_keys(&engine, 0..300, 1).await;
        engine.flush().await.unwrap();
        for i in (0..300u32).step_by(3) {
            let key = format!("key-{i:05}");
            let context = context_of(&engine, key.as_bytes()).await;
            let value = (i % 2 == 0).then_some(&b"second"[..]);
            engine
                .write(key.as_bytes(), &context, value, 2)
                .await
                .unwrap();
        }
        for i in 250..400u32 {
            let key = format!("key-{i:05}");
            let other = VersionSet::empty().sync(&VersionSet::coordinate(
                &VersionSet::empty(),
                &Context::empty(),
                Versioned {
                    timestamp_us: 3,
                    value: Some(Bytes::from_static(b"from a peer")),
                },
                99,
                1,
            ));
            engine.merge(key.as_bytes(), &other).await.unwrap();
        }
        engine.flush().await.unwrap();
        engine.compact_all().await.unwrap();
        for i in (1..300u32).step_by(7) {
            let key = format!("key-{i:05}");
            engine
                .write_over(key.as_bytes(), &Supersedes::Stored, Some(b"third"), 4)
                .await
                .unwrap();
        }
        let scanned = scanned_tree(&engine).await;
        {
            let tree = tree.borrow();
            let leaves = tree.shape().leaf_count();
            let mut compared = 0;
            for leaf in 0..leaves {
                if tree.is_dirty(leaf) {
                    continue; // a rebuild from storage settles these
                }
                compared += 1;
                assert_eq!(tree.leaf(leaf), scanned.leaf(leaf), "leaf {leaf}");
            }
            // Only the compaction's purges and prunings dirtied leaves.
            assert!(compared > leaves / 2, "{compared} of {leaves} leaves clean");
        }
        assert!(engine.stats().keys_purged > 0);
        engine.close().await.unwrap();
    });
}

#[test]
fn a_scan_sees_each_wanted_key_once_with_its_newest_set() {
    run(|| async {
        let dir = test_dir();
        let engine = open(dir.path(), SyncPolicy::None).await;
        write_keys(&engine, 0..200, 1).await;
        engine.flush().await.unwrap();
        write_keys(&engine, 100..150, 2).await;
        let mut seen = Vec::new();
        let wanted = |key: &[u8]| key.ends_with(b"0");
        engine
            .scan(&wanted, 0, |key, versions| {
                seen.push((key.clone(), live_of(versions)));
            })
            .await
            .unwrap();
        assert_eq!(seen.len(), 20, "keys ending in 0");
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "in key order");
        for (key, values) in seen {
            let i: u32 = std::str::from_utf8(&key[4..]).unwrap().parse().unwrap();
            let tag = if (100..150).contains(&i) { 2 } else { 1 };
            assert_eq!(values, live(&engine, &key).await, "{key:?}");
            assert!(values.iter().all(|v| v[0] == tag) || tag == 2, "{key:?}");
        }
        engine.close().await.unwrap();
    });
}

fn live_of(versions: &VersionSet) -> Vec<Vec<u8>> {
    let mut values: Vec<Vec<u8>> = versions
        .live_values()
        .map(|v| v.value.as_ref().unwrap().to_vec())
        .collect();
    values.sort();
    values
}
