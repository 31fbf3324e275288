//! Scenario tests of the write and merge rules, golden bytes and decoder refusals.

use bytes::Bytes;

use super::dvvset::Entry;
use super::*;

const A: NodeId = 10;
const B: NodeId = 20;
const C: NodeId = 30;

fn val(timestamp_us: u64, s: &str) -> Versioned {
    Versioned {
        timestamp_us,
        value: Some(Bytes::copy_from_slice(s.as_bytes())),
    }
}

fn tomb(timestamp_us: u64) -> Versioned {
    Versioned {
        timestamp_us,
        value: None,
    }
}

/// The values as strings, sorted (sibling order is not part of the contract).
fn strings(set: &VersionSet) -> Vec<String> {
    let mut out: Vec<String> = set
        .values()
        .map(|v| match &v.value {
            Some(b) => String::from_utf8(b.to_vec()).unwrap(),
            None => format!("tombstone@{}", v.timestamp_us),
        })
        .collect();
    out.sort();
    out
}

fn write(stored: &VersionSet, ctx: &Context, v: Versioned, node: NodeId) -> VersionSet {
    VersionSet::coordinate(stored, ctx, v, node, 0)
}

#[test]
fn two_writes_without_context_are_siblings() {
    let s1 = write(&VersionSet::empty(), &Context::empty(), val(1, "x"), A);
    let s2 = write(&s1, &Context::empty(), val(2, "y"), A);
    assert_eq!(strings(&s2), ["x", "y"]);
    assert_eq!(s2.context().pairs(), [(A, 2)]);
    assert!(s2.dominates(&s1));
}

#[test]
fn write_with_the_context_of_a_read_that_saw_both_leaves_one_value() {
    let s1 = write(&VersionSet::empty(), &Context::empty(), val(1, "x"), A);
    let s2 = write(&s1, &Context::empty(), val(2, "y"), A);
    let s3 = write(&s2, &s2.context(), val(3, "z"), A);
    assert_eq!(strings(&s3), ["z"]);
    assert_eq!(s3.value_count(), 1);
    assert_eq!(s3.context().pairs(), [(A, 3)]);
}

#[test]
fn write_with_an_old_context_while_another_write_happened_keeps_siblings() {
    let s1 = write(&VersionSet::empty(), &Context::empty(), val(1, "x"), A);
    let read = s1.context();
    let s2 = write(&s1, &read, val(2, "y"), A); // first client overwrites x
    let s3 = write(&s2, &read, val(3, "z"), A); // second client also read only x
    assert_eq!(strings(&s3), ["y", "z"]);
    assert_eq!(s3.context().pairs(), [(A, 3)]);
}

#[test]
fn delete_with_context_supersedes_and_reads_as_deleted() {
    let s1 = write(&VersionSet::empty(), &Context::empty(), val(1, "x"), A);
    let s2 = write(&s1, &Context::empty(), val(2, "y"), B);
    let merged = s1.sync(&s2);
    let deleted = write(&merged, &merged.context(), tomb(3), A);
    assert_eq!(strings(&deleted), ["tombstone@3"]);
    assert!(deleted.is_tombstone_only());
    assert_eq!(deleted.live_values().count(), 0);
    // A replica that still has both values takes the delete on sync.
    assert_eq!(strings(&s2.sync(&deleted)), ["tombstone@3"]);
}

#[test]
fn tombstone_next_to_a_concurrent_value_is_not_tombstone_only() {
    let s1 = write(&VersionSet::empty(), &Context::empty(), val(1, "x"), A);
    let s2 = write(&s1, &Context::empty(), tomb(2), A);
    assert!(!s2.is_tombstone_only());
    assert_eq!(s2.live_values().count(), 1);
    assert!(!VersionSet::empty().is_tombstone_only());
}

#[test]
fn sync_of_diverged_replicas_keeps_concurrent_and_drops_dominated() {
    let base = write(&VersionSet::empty(), &Context::empty(), val(1, "base"), A);
    let on_b = base.clone(); // replicated to B
    let a2 = write(&base, &base.context(), val(2, "from-a"), A);
    let b2 = write(&on_b, &on_b.context(), val(3, "from-b"), B);
    assert_eq!(a2.compare(&b2), Causality::Concurrent);
    let merged = a2.sync(&b2);
    assert_eq!(strings(&merged), ["from-a", "from-b"]);
    assert_eq!(merged.context().pairs(), [(A, 2), (B, 1)]);
    // A replica that only has `base` gains nothing back from it.
    assert_eq!(merged.sync(&base), merged);
    assert_eq!(merged.compare(&base), Causality::After);
    assert_eq!(base.compare(&merged), Causality::Before);
}

#[test]
fn the_same_write_synced_twice_is_idempotent() {
    let s1 = write(&VersionSet::empty(), &Context::empty(), val(1, "x"), A);
    let replica = write(&VersionSet::empty(), &Context::empty(), val(2, "y"), B);
    let once = replica.sync(&s1);
    let twice = once.sync(&s1);
    assert_eq!(once, twice);
    assert_eq!(once.value_count(), 2);
    assert!(once.equal(&twice));
}

#[test]
fn context_naming_a_node_the_coordinator_has_not_seen_still_supersedes() {
    // B's write reached the reader's replica but not the coordinator A yet.
    let on_b = write(&VersionSet::empty(), &Context::empty(), val(1, "b"), B);
    let on_a = write(&VersionSet::empty(), &on_b.context(), val(2, "a"), A);
    assert_eq!(on_a.context().pairs(), [(A, 1), (B, 1)]);
    assert_eq!(strings(&on_a.sync(&on_b)), ["a"]);
    assert_eq!(strings(&on_b.sync(&on_a)), ["a"]);
}

#[test]
fn partial_context_drops_only_the_covered_dots() {
    let mut s = VersionSet::empty();
    for i in 1..=4 {
        s = write(&s, &Context::empty(), val(i, &format!("v{i}")), A);
    }
    let ctx = Context::decode(&[1, 1, 0, 10, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    let s = write(&s, &ctx, val(5, "v5"), A);
    assert_eq!(strings(&s), ["v3", "v4", "v5"]);
    assert_eq!(s.entries[0].values[0], val(5, "v5"), "newest first");
}

#[test]
fn compare_and_equal() {
    let empty = VersionSet::empty();
    let s1 = write(&empty, &Context::empty(), val(1, "x"), A);
    assert_eq!(empty.compare(&empty), Causality::Equal);
    assert_eq!(empty.compare(&s1), Causality::Before);
    assert!(s1.descends(&empty) && s1.descends(&s1) && !empty.descends(&s1));
    assert!(s1.dominates(&empty) && !s1.dominates(&s1));
    let other = write(&empty, &Context::empty(), val(1, "x"), C);
    assert_eq!(s1.compare(&other), Causality::Concurrent);
    assert!(!s1.equal(&other));
    let fewer = write(&empty, &s1.context(), val(2, "y"), B).sync(&s1);
    let more = write(&empty, &Context::empty(), val(2, "y"), B).sync(&s1);
    assert_eq!(fewer.compare(&more), Causality::Equal);
    assert!(!fewer.equal(&more), "same clock, different values kept");
}

#[test]
fn anonymous_values_follow_the_newer_clock_or_are_united() {
    let old = VersionSet {
        entries: smallvec::smallvec![entry(A, 1, vec![])],
        anonymous: vec![val(1, "old")],
    };
    let new = VersionSet {
        entries: smallvec::smallvec![entry(A, 2, vec![])],
        anonymous: vec![val(2, "new")],
    };
    assert_eq!(old.sync(&new).anonymous, [val(2, "new")]);
    assert_eq!(new.sync(&old).anonymous, [val(2, "new")]);
    let side = VersionSet {
        entries: smallvec::smallvec![entry(B, 1, vec![])],
        anonymous: vec![val(0, "side"), val(1, "old")],
    };
    let united = [val(0, "side"), val(1, "old")];
    assert_eq!(old.sync(&side).anonymous, united);
    assert_eq!(side.sync(&old).anonymous, united);
    // A write keeps the anonymous values its sync kept.
    let written = VersionSet::coordinate(&side, &Context::empty(), val(3, "w"), A, 0);
    assert_eq!(written.anonymous, [val(0, "side"), val(1, "old")]);
    assert_eq!(written.value_count(), 3);
}

fn entry(node: NodeId, counter: u64, values: Vec<Versioned>) -> Entry {
    Entry {
        node,
        counter,
        values: values.into(),
    }
}

#[test]
fn context_golden_bytes() {
    let set = write(&VersionSet::empty(), &Context::empty(), val(1, "x"), 0x0102);
    let set = write(&set, &Context::empty(), val(2, "y"), 0x0102);
    let set = write(&set, &Context::empty(), val(3, "z"), 0xff);
    let bytes = set.context().encode();
    #[rustfmt::skip]
    let golden = [
        1, 2, 0,                          // format 1, count 2
        0xff, 0, 0, 0, 0, 0, 0, 0,        // node 0xff
        1, 0, 0, 0, 0, 0, 0, 0,           // counter 1
        0x02, 0x01, 0, 0, 0, 0, 0, 0,     // node 0x0102
        2, 0, 0, 0, 0, 0, 0, 0,           // counter 2
    ];
    assert_eq!(bytes, golden);
    assert_eq!(set.context().encoded_len(), golden.len());
    assert_eq!(Context::decode(&golden).unwrap(), set.context());
    assert_eq!(Context::empty().encode(), [1, 0, 0]);
    assert_eq!(Context::decode(&[]).unwrap(), Context::empty());
    assert_eq!(Context::decode(&[1, 0, 0]).unwrap(), Context::empty());
}

/// A context of `pairs`, encoded by hand (no checks).
fn raw_context(pairs: &[(u64, u64)]) -> Vec<u8> {
    let mut b = vec![1];
    b.extend_from_slice(&(pairs.len() as u16).to_le_bytes());
    for &(n, c) in pairs {
        b.extend_from_slice(&n.to_le_bytes());
        b.extend_from_slice(&c.to_le_bytes());
    }
    b
}

#[test]
fn context_decode_refuses_malformed_input() {
    use VersionError::*;
    let err = |b: &[u8]| Context::decode(b).unwrap_err();
    assert_eq!(err(&[2, 0, 0]), UnknownContextFormat { found: 2 });
    assert!(matches!(
        err(&[1]),
        Truncated {
            what: "context count",
            ..
        }
    ));
    assert!(matches!(
        err(&[1, 0]),
        Truncated {
            what: "context count",
            ..
        }
    ));
    let overrun = [1, 0xff, 0xff, 0, 0, 0, 0];
    assert!(
        matches!(err(&overrun), Truncated { what: "context pairs", needed, .. } if needed == 0xffff * 16)
    );
    assert!(matches!(
        err(&raw_context(&[(5, 1), (5, 2)])),
        NodesOutOfOrder {
            prev: 5,
            next: 5,
            ..
        }
    ));
    assert!(matches!(
        err(&raw_context(&[(6, 1), (5, 2)])),
        NodesOutOfOrder {
            prev: 6,
            next: 5,
            ..
        }
    ));
    assert!(matches!(
        err(&raw_context(&[(5, 0)])),
        CounterOutOfRange { counter: 0, .. }
    ));
    let too_big = CONTEXT_COUNTER_MAX + 1;
    assert!(matches!(
        err(&raw_context(&[(5, too_big)])),
        CounterOutOfRange { .. }
    ));
    assert!(Context::decode(&raw_context(&[(5, CONTEXT_COUNTER_MAX)])).is_ok());
    let mut trailing = raw_context(&[(5, 1)]);
    trailing.push(0);
    assert_eq!(err(&trailing), TrailingBytes { extra: 1 });
    assert!(err(&[3]).to_string().contains("format 3"));
}

fn golden_set() -> VersionSet {
    let s = write(
        &VersionSet::empty(),
        &Context::empty(),
        val(0x0201, "hi"),
        7,
    );
    write(&s, &Context::empty(), tomb(5), 7)
}

#[rustfmt::skip]
const GOLDEN_SET: [u8; 53] = [
    1, 0,                         // entry_count 1
    7, 0, 0, 0, 0, 0, 0, 0,       //   node_id 7
    2, 0, 0, 0, 0, 0, 0, 0,       //   counter 2
    2, 0,                         //   value_count 2
    5, 0, 0, 0, 0, 0, 0, 0,       //     timestamp_us 5 (newest first)
    0,                            //     kind 0: tombstone
    0x01, 0x02, 0, 0, 0, 0, 0, 0, //     timestamp_us 0x0201
    1,                            //     kind 1: value
    2, 0, 0, 0,                   //     value_len 2
    b'h', b'i',                   //     bytes
    0, 0,                         // anon_count 0
    0, 0, 0, 0, 0, 0, 0,          // (not part of the set: trailing record bytes)
];

#[test]
fn version_set_golden_bytes() {
    let set = golden_set();
    let bytes = set.encode();
    assert_eq!(bytes, GOLDEN_SET[..46]);
    assert_eq!(set.encoded_len(), 46);
    let buf = Bytes::from_static(&GOLDEN_SET);
    let (decoded, used) = VersionSet::decode(&buf).unwrap();
    assert_eq!((decoded, used), (set, 46));
    let mut appended = vec![0xaa];
    golden_set().encode_into(&mut appended);
    assert_eq!(appended[1..], GOLDEN_SET[..46]);
}

#[test]
fn decoded_values_are_slices_of_the_input() {
    let buf = Bytes::copy_from_slice(&GOLDEN_SET);
    let (set, _) = VersionSet::decode(&buf).unwrap();
    let value = set.live_values().next().unwrap().value.clone().unwrap();
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    assert!(
        range.contains(&(value.as_ptr() as usize)),
        "value was copied"
    );
}

/// One entry header, encoded by hand.
fn raw_entry(b: &mut Vec<u8>, node: u64, counter: u64, value_count: u16) {
    b.extend_from_slice(&node.to_le_bytes());
    b.extend_from_slice(&counter.to_le_bytes());
    b.extend_from_slice(&value_count.to_le_bytes());
}

#[test]
fn version_set_decode_refuses_malformed_input() {
    use VersionError::*;
    let err = |b: Vec<u8>| VersionSet::decode(&Bytes::from(b)).unwrap_err();
    let mut b = vec![2, 0];
    raw_entry(&mut b, 9, 1, 0);
    raw_entry(&mut b, 9, 1, 0);
    b.extend_from_slice(&[0, 0]);
    assert!(matches!(
        err(b),
        NodesOutOfOrder {
            prev: 9,
            next: 9,
            ..
        }
    ));
    let mut b = vec![1, 0];
    raw_entry(&mut b, 9, 0, 0);
    assert!(matches!(err(b), CounterOutOfRange { counter: 0, .. }));
    let mut b = vec![1, 0];
    raw_entry(&mut b, 9, COUNTER_MAX + 1, 0);
    assert!(matches!(err(b), CounterOutOfRange { .. }));
    let mut b = vec![1, 0];
    raw_entry(&mut b, 9, 1, 2);
    assert_eq!(
        err(b),
        MoreValuesThanEvents {
            node: 9,
            counter: 1,
            value_count: 2
        }
    );
    let mut b = vec![1, 0];
    raw_entry(&mut b, 9, 1, 1);
    b.extend_from_slice(&[0; 8]);
    b.push(2);
    assert_eq!(
        err(b),
        UnknownValueKind {
            kind: 2,
            offset: 28
        }
    );
    let mut b = vec![0, 0, 1, 0];
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(
        err(b),
        Truncated {
            what: "value bytes",
            needed: 0xffff_ffff,
            ..
        }
    ));
    let mut b = vec![0, 0, 2, 0];
    b.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(err(b), AnonymousOutOfOrder { index: 1 });
    assert!(matches!(
        err(vec![0xff, 0xff]),
        Truncated {
            what: "entry node id",
            ..
        }
    ));
}

#[test]
fn decoded_anonymous_values_round_trip() {
    let set = VersionSet {
        entries: smallvec::smallvec![entry(A, 3, vec![val(3, "c")])],
        anonymous: vec![tomb(1), val(2, "")],
    };
    let (decoded, used) = VersionSet::decode(&Bytes::from(set.encode())).unwrap();
    assert_eq!(used, set.encoded_len());
    assert_eq!(decoded, set);
}

#[test]
fn too_many_siblings_fail_check_limits() {
    let values = (0..=COUNT_MAX as u64).map(tomb).collect::<Vec<_>>();
    let set = VersionSet {
        entries: smallvec::smallvec![entry(A, COUNT_MAX as u64 + 1, values)],
        anonymous: Vec::new(),
    };
    let e = set.check_limits().unwrap_err();
    assert_eq!(
        e,
        VersionError::TooLarge {
            what: "value count of one node",
            count: COUNT_MAX + 1,
            max: COUNT_MAX
        }
    );
    assert_eq!(golden_set().check_limits(), Ok(()));
}

#[test]
#[should_panic(expected = "check_limits() before encoding")]
fn encoding_a_set_past_the_limits_panics() {
    let set = VersionSet {
        entries: Default::default(),
        anonymous: (0..=COUNT_MAX as u64).map(tomb).collect(),
    };
    set.encode();
}

/// The last-write-wins example drawn in docs/storage.md ("Version set").
#[test]
fn last_write_golden_bytes() {
    let clock = 1_764_547_200_000_000;
    let set = VersionSet::last_write(clock, val(clock, "hi"));
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        0x01, 0x00,                                     // 1 entry
        0, 0, 0, 0, 0, 0, 0, 0,                         //   node 0 (last write wins)
        0x00, 0xa0, 0x0b, 0xa9, 0xd8, 0x44, 0x06, 0x00, //   counter = clock
        0x01, 0x00,                                     //   1 value
        0x00, 0xa0, 0x0b, 0xa9, 0xd8, 0x44, 0x06, 0x00, //     timestamp
        0x01, 0x02, 0x00, 0x00, 0x00, b'h', b'i',       //     kind 1, len 2, "hi"
        0x00, 0x00,                                     // 0 anonymous values
    ];
    assert_eq!(set.encode(), expected);
    assert_eq!(set.last_write_clock(), clock);
    assert_eq!(set.context(), Context::from_sorted(vec![(LWW_NODE, clock)]));
}

#[test]
fn last_write_ties_between_coordinators_merge_to_one_winner_either_way() {
    // Two coordinators gave two different writes the same clock.
    let a = VersionSet::last_write(1_000, val(1_000, "from-a"));
    let b = VersionSet::last_write(1_000, val(1_000, "from-b"));
    let ab = a.sync(&b);
    assert_eq!(ab, b.sync(&a), "the merge is commutative on a tie");
    assert_eq!(ab.value_count(), 1);
    let winner = ab.values().next().unwrap().value.clone().unwrap();
    assert_eq!(&winner[..], b"from-b", "the larger (timestamp, value) wins");
    // And a later clock still beats the tie's winner.
    let later = VersionSet::last_write(1_001, val(1_001, "later"));
    assert_eq!(ab.sync(&later), later.sync(&ab));
    assert_eq!(
        &ab.sync(&later)
            .values()
            .next()
            .unwrap()
            .value
            .clone()
            .unwrap()[..],
        b"later"
    );
}

/// A set with the given entries and no anonymous values.
fn set_of(entries: Vec<Entry>) -> VersionSet {
    let set = VersionSet {
        entries: entries.into(),
        anonymous: Vec::new(),
    };
    set.assert_invariants();
    set
}

#[test]
fn a_node_entry_without_values_jumps_to_the_fresh_counter() {
    // No entry: the first dot is the fresh counter.
    let first =
        VersionSet::coordinate(&VersionSet::empty(), &Context::empty(), val(1, "a"), A, 500);
    assert_eq!(first.counter_of(A), 500);
    // A's entry holds a value: the run must stay contiguous, so + 1 whatever `fresh`.
    let sibling = VersionSet::coordinate(&first, &Context::empty(), val(2, "b"), A, 900);
    assert_eq!(sibling.counter_of(A), 501);
    assert_eq!(strings(&sibling), ["a", "b"]);
    // B supersedes both: A's entry holds no values, so A's next dot may jump.
    let resolved = VersionSet::coordinate(&sibling, &sibling.context(), val(3, "c"), B, 7);
    assert_eq!(resolved.counter_of(B), 7);
    let jumped = VersionSet::coordinate(&resolved, &Context::empty(), val(4, "d"), A, 900);
    assert_eq!(jumped.counter_of(A), 900);
    assert_eq!(strings(&jumped), ["c", "d"]);
    // A fresh counter below the entry's is no jump at all.
    let low = VersionSet::coordinate(&resolved, &resolved.context(), val(5, "e"), A, 3);
    assert_eq!(low.counter_of(A), 502);
    assert_eq!(strings(&low), ["e"]);
}

#[test]
fn prune_drops_only_old_valueless_entries_of_nodes_that_are_not_replicas() {
    let mut set = set_of(vec![
        entry(LWW_NODE, 5, vec![]),
        entry(A, 5, vec![]),             // a replica: kept
        entry(B, 5, vec![]),             // not a replica, old, no values: dropped
        entry(C, 50, vec![]),            // not a replica, no values, but young: kept
        entry(40, 5, vec![val(1, "x")]), // not a replica, old, but holds a value: kept
    ]);
    let before = set.clone();
    assert_eq!(set.prune(&Pruning::NONE), 0);
    assert_eq!(set, before);
    let rule = Pruning::older_than(&[A], 100, 90);
    assert_eq!(rule.before, 10);
    assert_eq!(set.prune(&rule), 1);
    let nodes: Vec<NodeId> = set.entries.iter().map(|e| e.node).collect();
    assert_eq!(nodes, [LWW_NODE, A, C, 40]);
    assert_eq!(strings(&set), ["x"]);
    // Pruning again changes nothing.
    assert_eq!(set.prune(&rule), 0);
}

#[test]
fn a_pruned_entry_brings_back_a_stale_sibling_but_never_hides_a_new_write() {
    // A wrote "old"; B superseded it; A stopped being a replica and was pruned.
    let a = VersionSet::coordinate(
        &VersionSet::empty(),
        &Context::empty(),
        val(1, "old"),
        A,
        10,
    );
    let mut b = VersionSet::coordinate(&a, &a.context(), val(2, "new"), B, 20);
    b.prune(&Pruning::older_than(&[B, C], 1_000, 0));
    assert_eq!(b.counter_of(A), 0);
    // A stale copy that still holds "old": the documented loss of precision.
    assert_eq!(strings(&b.sync(&a)), ["new", "old"]);
    // A coordinates again from its own copy, which had pruned its entry too: the dot
    // jumps above anything A minted, so no copy's floor can cover it.
    let mut own = b.clone();
    own.prune(&Pruning::older_than(&[B, C], 1_000, 0));
    let again = VersionSet::coordinate(&own, &Context::empty(), val(3, "again"), A, 30);
    assert_eq!(again.counter_of(A), 30);
    let everywhere = again.sync(&b).sync(&b.sync(&a));
    assert!(strings(&everywhere).contains(&"again".to_string()));
}

#[test]
fn a_key_with_one_writer_and_no_siblings_allocates_no_set_of_its_own() {
    let first = VersionSet::coordinate(&VersionSet::empty(), &Context::empty(), val(1, "a"), A, 0);
    let second = VersionSet::coordinate(&first, &first.context(), val(2, "b"), A, 0);
    let decoded = VersionSet::decode(&Bytes::from(second.encode())).unwrap().0;
    for set in [&first, &second, &decoded] {
        assert_eq!(set.value_count(), 1);
        assert!(!set.entries.spilled(), "entries spilled: {set:?}");
        assert!(!set.entries[0].values.spilled(), "values spilled: {set:?}");
    }
    // Siblings spill, and stay correct.
    let sibling = VersionSet::coordinate(&second, &first.context(), val(3, "c"), A, 0);
    assert_eq!(sibling.value_count(), 2);
    assert!(sibling.entries[0].values.spilled());
}
