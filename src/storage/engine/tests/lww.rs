//! `lww` mode: blind writes against a last-write-wins model (flushes, compactions,
//! restarts, a wall clock that steps back), the clock floor across restarts, and proof
//! that a write reads nothing.

use super::*;

fn lww(config: EngineConfig) -> EngineConfig {
    EngineConfig {
        conflicts: ConflictMode::Lww,
        ..config
    }
}

#[derive(Clone, Debug)]
enum LwwOp {
    /// Write `value` (`None`: delete) to key `key`, the wall clock reading `timestamp_us`.
    Write {
        key: u8,
        value: Option<u16>,
        timestamp_us: u64,
    },
    Flush,
    Compact,
    Restart,
}

fn lww_op() -> impl Strategy<Value = LwwOp> {
    // Small timestamps in any order: the wall clock jumps back all the time, and often
    // repeats, which the shard's clock must absorb.
    let write = (
        0u8..8,
        proptest::option::weighted(0.8, any::<u16>()),
        1u64..50,
    );
    prop_oneof![
        8 => write.prop_map(|(key, value, timestamp_us)| LwwOp::Write { key, value, timestamp_us }),
        1 => Just(LwwOp::Flush),
        1 => Just(LwwOp::Compact),
        1 => Just(LwwOp::Restart),
    ]
}

/// Runs `ops` against the engine and a map of each key's last write, comparing every
/// key after every step: the write made last always wins, whatever the timestamps.
fn check_lww_against_model(ops: Vec<LwwOp>, sync: SyncPolicy) {
    run(move || async move {
        let dir = test_dir();
        let config = lww(config(dir.path(), sync));
        let mut engine = open_with(config.clone()).await;
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for op in ops {
            match op {
                LwwOp::Write {
                    key,
                    value,
                    timestamp_us,
                } => {
                    let key = vec![b'k', key];
                    let value = value.map(|v| v.to_le_bytes().to_vec());
                    let written = engine
                        .write(&key, &Context::empty(), value.as_deref(), timestamp_us)
                        .await
                        .unwrap();
                    assert_eq!(written.value_count(), 1, "one version, never siblings");
                    match value {
                        Some(value) => model.insert(key, value),
                        None => model.remove(&key),
                    };
                }
                LwwOp::Flush => engine.flush().await.unwrap(),
                LwwOp::Compact => engine.compact_all().await.unwrap(),
                LwwOp::Restart => {
                    engine.close().await.unwrap();
                    drop(engine);
                    engine = open_with(config.clone()).await;
                }
            }
            for k in 0..8u8 {
                let key = vec![b'k', k];
                let expected: Vec<Vec<u8>> = model.get(&key).cloned().into_iter().collect();
                assert_eq!(live(&engine, &key).await, expected, "key {k}");
            }
        }
        engine.close().await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn lww_engine_matches_model_across_flushes_compactions_and_restarts(
        ops in proptest::collection::vec(lww_op(), 1..60)
    ) {
        check_lww_against_model(ops, SyncPolicy::None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn lww_engine_matches_model_with_batch_sync(ops in proptest::collection::vec(lww_op(), 1..30)) {
        check_lww_against_model(ops, SyncPolicy::Batch);
    }
}

/// The clock floor in the manifest is what keeps a later write winning when the log
/// that held the earlier one is gone and the wall clock stepped back.
#[test]
fn a_write_after_restart_beats_flushed_data_even_with_an_earlier_wall_clock() {
    run(|| async {
        let dir = test_dir();
        let config = EngineConfig {
            compaction: manual_compaction_only(),
            ..lww(config(dir.path(), SyncPolicy::Batch))
        };
        let engine = open_with(config.clone()).await;
        let late = 5_000_000_000;
        engine
            .write(b"k", &Context::empty(), Some(b"first"), late)
            .await
            .unwrap();
        // Enough other keys that the flush recycles the segment holding "first".
        write_keys(&engine, 0..200, 1).await;
        engine.flush().await.unwrap();
        assert!(engine.stats().segments_recycled > 0);
        engine.close().await.unwrap();
        drop(engine);
        let manifest = crate::storage::manifest::Manifest::load(dir.path()).unwrap();
        assert!(manifest.clock_floor >= late, "{manifest:?}");

        let engine = open_with(config.clone()).await;
        let written = engine
            .write(b"k", &Context::empty(), Some(b"second"), 7)
            .await
            .unwrap();
        assert!(written.last_write_clock() > late);
        assert_eq!(live(&engine, b"k").await, vec![b"second".to_vec()]);
        engine.flush().await.unwrap();
        engine.compact_all().await.unwrap();
        assert_eq!(engine.table_count(), 1);
        assert_eq!(live(&engine, b"k").await, vec![b"second".to_vec()]);
        engine.close().await.unwrap();
    });
}

/// An `lww` write reads nothing: it succeeds on a key whose only stored block is
/// damaged (a `dvv` write there fails, see `a_damaged_block_is_an_error_for_its_keys_only`),
/// and the new version then answers reads from memory.
#[test]
fn an_lww_write_never_reads_the_stored_versions() {
    run(|| async {
        let dir = test_dir();
        let (engine, _) =
            open_with_damaged_first_block(lww(config(dir.path(), SyncPolicy::None))).await;
        assert!(engine.get(b"key-00000").await.is_err());
        engine
            .write(b"key-00000", &Context::empty(), Some(b"new"), 1)
            .await
            .unwrap();
        assert_eq!(live(&engine, b"key-00000").await, vec![b"new".to_vec()]);
        engine.close().await.unwrap();
    });
}

/// The context of an `lww` write is ignored: a stale one does not keep a sibling.
#[test]
fn an_lww_write_supersedes_everything_whatever_its_context() {
    run(|| async {
        let dir = test_dir();
        let engine = open_with(lww(config(dir.path(), SyncPolicy::None))).await;
        engine
            .write(b"k", &Context::empty(), Some(b"a"), 10)
            .await
            .unwrap();
        let stale = context_of(&engine, b"k").await;
        engine
            .write(b"k", &Context::empty(), Some(b"b"), 10)
            .await
            .unwrap();
        engine.write(b"k", &stale, Some(b"c"), 3).await.unwrap();
        assert_eq!(live(&engine, b"k").await, vec![b"c".to_vec()]);
        engine
            .write(b"k", &Context::empty(), None, 1)
            .await
            .unwrap();
        assert!(live(&engine, b"k").await.is_empty());
        engine.close().await.unwrap();
    });
}

/// Many writers of mixed sizes through a log queue of 4 KiB: appends wait for room, a
/// small record may overtake a large one, and memtables seal every few writes. The
/// write with the largest clock must win in memory, after the flush and after a
/// compaction: clocks follow the log's order, not the order writes were called.
#[test]
fn concurrent_lww_writes_keep_the_largest_clock_across_seals() {
    run(|| async {
        let dir = test_dir();
        let config = EngineConfig {
            buffer_bytes_max: 4096,
            record_bytes_max: 4096,
            compaction: manual_compaction_only(),
            ..lww(config(dir.path(), SyncPolicy::Batch))
        };
        let engine = Rc::new(open_with(config).await);
        let mut newest: BTreeMap<Vec<u8>, (u64, Vec<u8>)> = BTreeMap::new();
        for round in 0..8u32 {
            let writes: Vec<_> = (0..48u32)
                .map(|w| {
                    let engine = engine.clone();
                    glommio::spawn_local(async move {
                        let key = vec![b'k', (w % 3) as u8];
                        let len = if w % 4 == 0 { 1800 } else { 20 };
                        let value = vec![(round * 48 + w) as u8; len];
                        let written = engine
                            .write(&key, &Context::empty(), Some(&value), 1)
                            .await
                            .unwrap();
                        (key, written.last_write_clock(), value)
                    })
                })
                .collect();
            for write in writes {
                let (key, clock, value) = write.await;
                let best = newest.entry(key).or_default();
                if clock > best.0 {
                    *best = (clock, value);
                }
            }
            for (key, (_, value)) in &newest {
                assert_eq!(
                    live(&engine, key).await,
                    vec![value.clone()],
                    "round {round}"
                );
            }
        }
        engine.flush().await.unwrap();
        engine.compact_all().await.unwrap();
        for (key, (_, value)) in &newest {
            assert_eq!(
                live(&engine, key).await,
                vec![value.clone()],
                "after compaction"
            );
        }
        engine.close().await.unwrap();
    });
}
