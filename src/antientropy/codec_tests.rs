//! The message codec: golden bytes, round trips, and "never panics" on arbitrary,
//! mutated and truncated input (with the CRC fixed up, so the parsers are reached).

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

use super::codec::*;
use super::exchange::*;
use super::merkle::{TokenRange, DEPTH_MAX};

fn encoded(message: &Message) -> Vec<u8> {
    let mut buf = Vec::new();
    encode(message, &mut buf);
    buf
}

/// Replaces the last four bytes with the CRC32C of the rest.
fn fix_crc(bytes: &mut [u8]) {
    if bytes.len() >= 4 {
        let at = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..at]);
        bytes[at..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Small limits, so that random counts hit them too.
fn small_limits() -> Limits {
    Limits {
        pairs_max: 8,
        leaves_max: 8,
        keys_max: 8,
        key_bytes_max: 6,
    }
}

/// Decodes; on success the message must re-encode to the same bytes (canonical).
fn check(bytes: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
    if let Ok(message) = decode(Bytes::copy_from_slice(bytes), limits) {
        prop_assert_eq!(encoded(&message), bytes);
    }
    Ok(())
}

#[test]
fn open_golden_bytes() {
    let open = Message::Open(Open {
        tree_format: 1,
        range: TokenRange::new(0x10, 0x20),
        depth: 14,
        root: 0x0102_0304_0506_0708,
    });
    let bytes = encoded(&open);
    let expected_body = [
        0x01, // format
        0x01, // kind: Open
        0x01, // tree format
        0x10, 0, 0, 0, 0, 0, 0, 0, // range start
        0x20, 0, 0, 0, 0, 0, 0, 0,    // range end
        0x0e, // depth 14
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // root
    ];
    assert_eq!(&bytes[..28], &expected_body);
    assert_eq!(&bytes[28..], &crc32c::crc32c(&expected_body).to_le_bytes());
    assert_eq!(bytes.len(), 32);
    let back = decode(Bytes::from(bytes), &Limits::default()).unwrap();
    assert_eq!(back, open);
}

#[test]
fn answer_golden_bytes() {
    let answer = Message::Answer(Answer {
        level: 2,
        pairs: vec![Pair {
            index: 3,
            left: 1,
            right: 2,
        }],
        leaves: vec![9],
        more: true,
    });
    let bytes = encoded(&answer);
    let mut expected = vec![0x01, 0x05, 0x01, 0x02, 1, 0, 0, 0, 3, 0, 0, 0];
    expected.extend_from_slice(&1u64.to_le_bytes());
    expected.extend_from_slice(&2u64.to_le_bytes());
    expected.extend_from_slice(&[1, 0, 0, 0, 9, 0, 0, 0]);
    expected.extend_from_slice(&crc32c::crc32c(&expected).to_le_bytes());
    assert_eq!(bytes, expected);
}

#[test]
fn lies_are_refused_before_allocation() {
    // A Descend claiming u32::MAX pairs in a few bytes.
    let mut bytes = vec![0x01, 0x04, 0x03, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    fix_crc(&mut bytes);
    let limits = Limits {
        pairs_max: u32::MAX,
        ..Limits::default()
    };
    assert!(matches!(
        decode(Bytes::from(bytes), &limits),
        Err(DecodeError::Truncated { .. })
    ));
    // Over the limit, whatever the bytes left.
    let mut bytes = vec![0x01, 0x04, 0x03, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0];
    fix_crc(&mut bytes);
    assert!(matches!(
        decode(Bytes::from(bytes), &Limits::default()),
        Err(DecodeError::OverLimit { .. })
    ));
    // A flipped bit anywhere fails the CRC.
    let mut bytes = encoded(&Message::Refuse(Refuse {
        reason: RefuseReason::Busy,
    }));
    bytes[2] ^= 0x40;
    assert!(matches!(
        decode(Bytes::from(bytes), &Limits::default()),
        Err(DecodeError::Crc { .. })
    ));
}

fn arb_pairs(level: u8) -> impl Strategy<Value = Vec<Pair>> {
    let nodes = 1u64 << level;
    proptest::collection::btree_set(0..nodes, 0..6).prop_flat_map(|indices| {
        let n = indices.len();
        (Just(indices), vec((any::<u64>(), any::<u64>()), n)).prop_map(|(indices, sums)| {
            indices
                .into_iter()
                .zip(sums)
                .map(|(index, (left, right))| Pair {
                    index: index as u32,
                    left,
                    right,
                })
                .collect()
        })
    })
}

/// Answers in canonical form: level 0 when there are no pairs.
fn arb_answer() -> impl Strategy<Value = Answer> {
    (
        (0..DEPTH_MAX).prop_flat_map(|level| (Just(level), arb_pairs(level))),
        proptest::collection::btree_set(0..1u32 << DEPTH_MAX, 0..6),
        any::<bool>(),
    )
        .prop_map(|((level, pairs), leaves, more)| Answer {
            level: if pairs.is_empty() { 0 } else { level },
            pairs,
            leaves: leaves.into_iter().collect(),
            more,
        })
}

fn arb_message() -> impl Strategy<Value = Message> {
    let open = (
        any::<u8>(),
        any::<u64>(),
        any::<u64>(),
        0..=DEPTH_MAX,
        any::<u64>(),
    )
        .prop_map(|(tree_format, start, end, depth, root)| {
            Message::Open(Open {
                tree_format,
                range: TokenRange::new(start, end),
                depth,
                root,
            })
        });
    let accept = (0..=DEPTH_MAX, arb_answer())
        .prop_map(|(depth, answer)| Message::Accept(Accept { depth, answer }));
    let refuse = prop_oneof![
        Just(RefuseReason::UnknownRange),
        Just(RefuseReason::TreeFormat),
        Just(RefuseReason::Busy)
    ]
    .prop_map(|reason| Message::Refuse(Refuse { reason }));
    let descend = (0..DEPTH_MAX)
        .prop_flat_map(|level| (Just(level), arb_pairs(level)))
        .prop_map(|(level, pairs)| {
            Message::Descend(Descend {
                level: if pairs.is_empty() { 0 } else { level },
                pairs,
            })
        });
    let leaf_keys = (0..=DEPTH_MAX)
        .prop_flat_map(|level| (Just(level), 0..1u32 << level))
        .prop_flat_map(|(level, index)| {
            (
                Just(level),
                Just(index),
                any::<bool>(),
                proptest::collection::btree_map(vec(any::<u8>(), 0..6), any::<u64>(), 0..6),
            )
        })
        .prop_map(|(level, index, last, keys)| {
            let keys = keys
                .into_iter()
                .map(|(k, contribution)| KeyDigest {
                    key: Bytes::from(k),
                    contribution,
                })
                .collect();
            Message::LeafKeys(LeafKeys {
                level,
                index,
                last,
                keys,
            })
        });
    prop_oneof![
        open,
        accept,
        refuse,
        descend,
        arb_answer().prop_map(Message::Answer),
        leaf_keys
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn messages_round_trip(message in arb_message()) {
        let bytes = encoded(&message);
        let back = decode(Bytes::from(bytes), &small_limits()).unwrap();
        prop_assert_eq!(back, message);
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in vec(any::<u8>(), 0..200), crc in any::<bool>()) {
        if crc {
            fix_crc(&mut bytes);
        }
        check(&bytes, &small_limits())?;
        check(&bytes, &Limits::default())?;
    }

    #[test]
    fn mutated_messages_never_panic(
        message in arb_message(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encoded(&message);
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        fix_crc(&mut bytes);
        check(&bytes, &small_limits())?;
    }

    #[test]
    fn truncated_messages_never_panic(message in arb_message()) {
        let bytes = encoded(&message);
        for len in 0..bytes.len() {
            let mut cut = bytes[..len].to_vec();
            fix_crc(&mut cut);
            check(&cut, &small_limits())?;
        }
    }
}
