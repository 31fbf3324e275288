//! Engine tests: a model check with restarts, and concurrency on one key.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use glommio::Shares;
use proptest::prelude::*;

use super::*;
use crate::test_support::{run, temp_dir as test_dir};

fn config(dir: &Path, sync: SyncPolicy) -> EngineConfig {
    EngineConfig {
        dir: dir.to_path_buf(),
        node_id: 7,
        sync,
        segment_bytes: 64 << 10,
        buffer_bytes_max: 1 << 20,
        record_bytes_max: 32 << 10,
        siblings_max: 100,
    }
}

async fn open(dir: &Path, sync: SyncPolicy) -> Engine {
    let queue = glommio::executor().create_task_queue(
        Shares::default(),
        glommio::Latency::NotImportant,
        "log",
    );
    Engine::open(config(dir, sync), queue).await.unwrap()
}

/// Live values of `key`, sorted (sibling order is not part of the contract).
fn live(engine: &Engine, key: &[u8]) -> Vec<Vec<u8>> {
    let mut values: Vec<Vec<u8>> = engine.read(key, |v| {
        v.map(|v| {
            v.live_values()
                .map(|x| x.value.as_ref().unwrap().to_vec())
                .collect()
        })
        .unwrap_or_default()
    });
    values.sort();
    values
}

fn context_of(engine: &Engine, key: &[u8]) -> Context {
    engine.read(key, |v| {
        v.map(|v| v.context()).unwrap_or_else(Context::empty)
    })
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
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..8, any::<u16>(), any::<bool>()).prop_map(|(key, value, with_context)| Op::Put { key, value, with_context }),
        2 => (0u8..8, any::<bool>()).prop_map(|(key, with_context)| Op::Delete { key, with_context }),
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
                        context_of(&engine, &key)
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
                        context_of(&engine, &key)
                    } else {
                        Context::empty()
                    };
                    engine.write(&key, &context, None, 1).await.unwrap();
                    if with_context {
                        model.entry(key).or_default().clear();
                    }
                    // A blind delete is concurrent with the values: they stay.
                }
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
                assert_eq!(live(&engine, &key), expected, "key {k}");
            }
        }
        engine.close().await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model_across_restarts(ops in proptest::collection::vec(op(), 1..60)) {
        check_against_model(ops, SyncPolicy::None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

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
        assert_eq!(live(&engine, b"hot").len(), 40);
        // One write with the context of what is there resolves them all.
        let context = context_of(&engine, b"hot");
        engine
            .write(b"hot", &context, Some(b"merged"), 2)
            .await
            .unwrap();
        assert_eq!(live(&engine, b"hot"), vec![b"merged".to_vec()]);
        engine.close().await.unwrap();
        let engine = open(dir.path(), SyncPolicy::Batch).await;
        assert_eq!(live(&engine, b"hot"), vec![b"merged".to_vec()]);
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
        let context = context_of(&engine, b"k");
        engine
            .write(b"k", &context, Some(b"resolved"), 2)
            .await
            .unwrap();
        assert_eq!(live(&engine, b"k"), vec![b"resolved".to_vec()]);
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
            if engine.pending.borrow().contains_key(b"k".as_ref()) {
                break;
            }
            futures_lite::future::yield_now().await;
        }
        assert!(
            engine.pending.borrow().contains_key(b"k".as_ref()),
            "write never queued"
        );
        // Not acknowledged yet: a read must not see it (a crash now could take it back).
        assert!(live(&engine, b"k").is_empty());
        writer.await;
        assert_eq!(live(&engine, b"k"), vec![b"v".to_vec()]);
        engine.close().await.unwrap();
    });
}
