use super::*;
use crate::version::{Context, Versioned};
use bytes::Bytes;
use proptest::prelude::*;

const A: NodeId = 1;
const B: NodeId = 3;
const C: NodeId = 5;

fn put(stored: &VersionSet, context: &Context, value: &'static str, node: NodeId) -> VersionSet {
    let v = Versioned {
        timestamp_us: 1,
        value: Some(Bytes::from_static(value.as_bytes())),
    };
    VersionSet::coordinate(stored, context, v, node, 0)
}

fn values(set: &VersionSet) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = set
        .live_values()
        .filter_map(|v| v.value.as_deref())
        .collect();
    v.sort();
    v
}

#[test]
fn a_write_succeeds_at_w_acknowledgements() {
    let mut q = WriteQuorum::new(&[A, B, C], 2);
    assert_eq!(q.progress(), Progress::Waiting);
    assert_eq!(q.record(A, Ok(())), Progress::Waiting);
    assert_eq!(q.record(B, Ok(())), Progress::Succeeded);
    assert!(!q.all_answered());
    assert_eq!(q.record(C, Err("disk full".into())), Progress::Succeeded);
    assert!(q.all_answered());
}

#[test]
fn a_write_fails_once_the_rest_cannot_make_w() {
    let mut q = WriteQuorum::new(&[A, B, C], 2);
    assert_eq!(q.record(A, Err("refused".into())), Progress::Waiting);
    assert_eq!(q.record(C, Err("timed out".into())), Progress::Failed);
    let why = q.unavailable();
    assert_eq!(
        (why.needed, why.replicas, why.succeeded, why.pending),
        (2, 3, 0, 1)
    );
    assert_eq!(
        why.to_string(),
        "needed 2 of 3 replicas, 0 succeeded, 2 failed, 1 did not answer in time; \
         node 0000000000000001: refused; node 0000000000000005: timed out"
    );
}

#[test]
fn duplicates_and_strangers_do_not_count() {
    let mut q = WriteQuorum::new(&[A, B, C], 2);
    q.record(A, Ok(()));
    assert_eq!(
        q.record(A, Ok(())),
        Progress::Waiting,
        "a second ack from A"
    );
    assert_eq!(q.record(7, Ok(())), Progress::Waiting, "7 is not a replica");
    // A failure after a success does not take the success back.
    assert_eq!(q.record(A, Err("late".into())), Progress::Waiting);
    assert_eq!(q.record(B, Ok(())), Progress::Succeeded);
}

#[test]
fn more_needed_than_replicas_fails_at_once() {
    let q = WriteQuorum::new(&[A, B], 3);
    assert_eq!(q.progress(), Progress::Failed);
    assert_eq!(
        q.unavailable().to_string(),
        "needed 3 of 2 replicas, 0 succeeded, 0 failed, 2 did not answer in time"
    );
}

#[test]
fn a_read_merges_siblings_and_drops_dominated_versions() {
    let old = put(&VersionSet::empty(), &Context::empty(), "old", A);
    // B overwrote "old" with the context it read; C wrote blind: concurrent with both.
    let newer = put(&old, &old.context(), "new", A);
    let blind = put(&VersionSet::empty(), &Context::empty(), "blind", C);
    let mut q = ReadQuorum::new(&[A, B, C], 2);
    assert_eq!(q.record(A, Ok(old.clone())), Progress::Waiting);
    assert_eq!(q.record(B, Ok(newer.clone())), Progress::Succeeded);
    assert_eq!(values(&q.merged()), vec![&b"new"[..]], "old is dominated");
    assert_eq!(q.stale(&q.merged()), vec![A]);
    q.record(C, Ok(blind));
    let merged = q.merged();
    assert_eq!(
        values(&merged),
        vec![&b"blind"[..], &b"new"[..]],
        "siblings kept"
    );
    assert_eq!(q.stale(&merged), vec![A, B, C]);
}

#[test]
fn a_replica_without_the_key_is_stale_and_none_means_not_found() {
    let mut q = ReadQuorum::new(&[A, B, C], 2);
    q.record(A, Ok(VersionSet::empty()));
    q.record(B, Ok(VersionSet::empty()));
    assert_eq!(q.progress(), Progress::Succeeded);
    assert!(q.merged().is_empty());
    assert!(q.stale(&q.merged()).is_empty());
    let set = put(&VersionSet::empty(), &Context::empty(), "v", C);
    q.record(C, Ok(set));
    assert_eq!(q.stale(&q.merged()), vec![A, B]);
}

#[test]
fn failed_reads_are_not_repaired() {
    let mut q = ReadQuorum::new(&[A, B, C], 2);
    let set = put(&VersionSet::empty(), &Context::empty(), "v", A);
    q.record(A, Ok(set));
    q.record(B, Err("timed out".into()));
    assert_eq!(q.progress(), Progress::Waiting);
    assert!(q.stale(&q.merged()).is_empty());
    assert_eq!(q.record(C, Err("refused".into())), Progress::Failed);
}

proptest! {
    /// Whatever the order and mix of answers, the tracker succeeds exactly when `needed`
    /// distinct replicas succeeded, fails exactly when that can no longer happen, and
    /// never changes its mind once it succeeded.
    #[test]
    fn progress_matches_the_count(
        n in 1usize..6,
        needed in 1usize..7,
        answers in proptest::collection::vec((0usize..8, any::<bool>()), 0..20),
    ) {
        let replicas: Vec<NodeId> = (0..n as u64).map(|i| 1 + 2 * i).collect();
        let mut q = WriteQuorum::new(&replicas, needed);
        let mut first: Vec<Option<bool>> = vec![None; n];
        let mut succeeded_once = false;
        for (who, ok) in answers {
            let node = 1 + 2 * who as u64;
            let p = q.record(node, if ok { Ok(()) } else { Err("no".into()) });
            if who < n && first[who].is_none() {
                first[who] = Some(ok);
            }
            let oks = first.iter().filter(|f| **f == Some(true)).count();
            let pending = first.iter().filter(|f| f.is_none()).count();
            let want = if oks >= needed {
                Progress::Succeeded
            } else if oks + pending < needed {
                Progress::Failed
            } else {
                Progress::Waiting
            };
            prop_assert_eq!(p, want);
            if succeeded_once {
                prop_assert_eq!(p, Progress::Succeeded);
            }
            succeeded_once |= p == Progress::Succeeded;
        }
    }
}
