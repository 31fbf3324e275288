//! The bytes of one anti-entropy step (the body of a SYNC frame) and of its answer.
//!
//! Internal frames carry no checksum, so each body ends with its own CRC32C. The tree
//! comparison itself travels as `antientropy` messages (their codec has its own CRC
//! and limits); this layer adds who asks, which session, and the steps after the
//! comparison: naming the differing leaves, listing their keys (for many sessions at
//! once, so that one scan serves every range a round compares with the peer), fetching
//! sets, ending.
//!
//! ```text
//! step    from u64 | session u64 | op u8 | body | crc32c u32
//!   op 1 COMPARE    antientropy message (Open or Descend)
//!   op 2 LEAVES     level u8 | leaf_count u32 | leaf u32 × leaf_count   (increasing)
//!   op 3 LIST_NEXT  (empty)
//!   op 7 LIST       session_count u16 | session u64 × session_count    (increasing)
//!   op 4 FETCH      key_count u32 | (held u8 | [contribution u64] | key_len u16
//!                                    | key) × key_count     (contribution if held)
//!   op 5 END        complete u8
//!   op 6 TREES      (empty)
//!
//! reply   op u8 | body | crc32c u32
//!   op 1 COMPARE    antientropy message (Accept, Refuse or Answer)
//!   op 2 KEYS       more u8 | key_count u32 | (key_len u16 | key | contribution u64) × n
//!   op 4 SETS       key_count u32 | (key_len u16 | key | present u8
//!                                    | [set_len u32 | version set]) × key_count
//!   op 5 DONE       (empty)
//!   op 6 TREES      tree_count u32 | (start u64 | end u64 | root u64 | dirty u32
//!                                      | ready u8) × tree_count
//! ```
//!
//! The decoder checks the CRC first, every count against the bytes left before it
//! allocates, keys against the key limit, leaves and keys strictly increasing, flags
//! 0 or 1, and no trailing bytes; it never panics.

use bytes::Bytes;

use crate::antientropy::KeyDigest;
use crate::protocol::codec::Reader;
use crate::ring::cluster::NodeId;

const OP_COMPARE: u8 = 1;
const OP_LEAVES: u8 = 2;
const OP_LIST_NEXT: u8 = 3;
const OP_FETCH: u8 = 4;
const OP_END: u8 = 5;
const OP_TREES: u8 = 6;
const OP_LIST: u8 = 7;
const REPLY_KEYS: u8 = 2;
const REPLY_SETS: u8 = 4;
const REPLY_DONE: u8 = 5;

const CRC_BYTES: usize = 4;
/// Most sessions one LIST names.
pub const LIST_SESSIONS_MAX: usize = 1024;

/// What the initiator asks of the peer in one SYNC frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A tree comparison message (`antientropy::encode`d Open or Descend).
    Compare(Bytes),
    /// The comparison is over; these nodes of `level` differ (its leaves). The peer
    /// keeps them for a LIST and drops its snapshot of the tree.
    Leaves { level: u8, leaves: Vec<u32> },
    /// List, in one scan, the keys of the leaves these sessions named (the step's own
    /// session must be one of them: the pages are continued on it).
    List { sessions: Vec<u64> },
    /// The next page of the listing.
    ListNext,
    /// The peer's sets of these keys, each with the contribution of the asker's own
    /// set (`None`: it holds no copy at all).
    Fetch(Vec<(Option<u64>, Bytes)>),
    /// The session is over; `complete`: every difference was repaired both ways.
    End { complete: bool },
    /// The shard's trees and their roots (`ringkv admin trees`, tests).
    Trees,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepRequest {
    pub from: NodeId,
    pub session: u64,
    pub step: Step,
}

/// One tree as TREES lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeInfo {
    pub start: u64,
    pub end: u64,
    pub root: u64,
    pub dirty: u32,
    pub ready: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Compare(Bytes),
    Keys {
        more: bool,
        keys: Vec<KeyDigest>,
    },
    /// A prefix of the keys asked for (the rest did not fit), each with its set or
    /// `None` (absent, equal to the asker's, or a tombstone it need not get back).
    Sets(Vec<(Bytes, Option<Bytes>)>),
    Done,
    Trees(Vec<TreeInfo>),
}

pub fn encode_step(request: &StepRequest) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&request.from.to_le_bytes());
    out.extend_from_slice(&request.session.to_le_bytes());
    match &request.step {
        Step::Compare(message) => {
            out.push(OP_COMPARE);
            out.extend_from_slice(message);
        }
        Step::Leaves { level, leaves } => {
            out.push(OP_LEAVES);
            out.push(*level);
            out.extend_from_slice(&(leaves.len() as u32).to_le_bytes());
            for leaf in leaves {
                out.extend_from_slice(&leaf.to_le_bytes());
            }
        }
        Step::List { sessions } => {
            out.push(OP_LIST);
            out.extend_from_slice(&(sessions.len() as u16).to_le_bytes());
            for session in sessions {
                out.extend_from_slice(&session.to_le_bytes());
            }
        }
        Step::ListNext => out.push(OP_LIST_NEXT),
        Step::Fetch(keys) => {
            out.push(OP_FETCH);
            out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
            for (have, key) in keys {
                match have {
                    Some(contribution) => {
                        out.push(1);
                        out.extend_from_slice(&contribution.to_le_bytes());
                    }
                    None => out.push(0),
                }
                put_key(&mut out, key);
            }
        }
        Step::End { complete } => {
            out.push(OP_END);
            out.push(u8::from(*complete));
        }
        Step::Trees => out.push(OP_TREES),
    }
    seal(out)
}

pub fn decode_step(body: Bytes, key_bytes_max: usize) -> Result<StepRequest, String> {
    let mut r = open(body)?;
    let from = r.u64("from").map_err(text)?;
    let session = r.u64("session").map_err(text)?;
    let step = match r.u8("op").map_err(text)? {
        OP_COMPARE => {
            let rest = r.remaining();
            Step::Compare(r.bytes(rest, "message").map_err(text)?)
        }
        OP_LEAVES => {
            let level = r.u8("level").map_err(text)?;
            if level > crate::antientropy::DEPTH_MAX {
                return Err(format!("level {level} is deeper than any tree"));
            }
            let count = r.u32("leaf_count").map_err(text)? as usize;
            r.ensure_room(count, 4, "leaf_count").map_err(text)?;
            let mut leaves = Vec::with_capacity(count);
            for _ in 0..count {
                let leaf = r.u32("leaf").map_err(text)?;
                if u64::from(leaf) >= 1u64 << level {
                    return Err(format!("leaf {leaf} does not exist at level {level}"));
                }
                if leaves.last().is_some_and(|&last| last >= leaf) {
                    return Err(format!("leaf {leaf} out of order"));
                }
                leaves.push(leaf);
            }
            Step::Leaves { level, leaves }
        }
        OP_LIST => {
            let count = usize::from(r.u16("session_count").map_err(text)?);
            if count == 0 || count > LIST_SESSIONS_MAX {
                return Err(format!(
                    "LIST of {count} sessions (1 to {LIST_SESSIONS_MAX})"
                ));
            }
            r.ensure_room(count, 8, "session_count").map_err(text)?;
            let mut sessions: Vec<u64> = Vec::with_capacity(count);
            for _ in 0..count {
                let listed = r.u64("session").map_err(text)?;
                if sessions.last().is_some_and(|&last| last >= listed) {
                    return Err(format!("session {listed:#018x} out of order"));
                }
                sessions.push(listed);
            }
            if sessions.binary_search(&session).is_err() {
                return Err("a LIST must name its own session".into());
            }
            Step::List { sessions }
        }
        OP_LIST_NEXT => Step::ListNext,
        OP_FETCH => {
            let count = r.u32("key_count").map_err(text)? as usize;
            r.ensure_room(count, 3, "key_count").map_err(text)?;
            let mut keys = Vec::with_capacity(count);
            for _ in 0..count {
                let have = match flag(&mut r, "held")? {
                    true => Some(r.u64("contribution").map_err(text)?),
                    false => None,
                };
                keys.push((have, key(&mut r, key_bytes_max)?));
            }
            Step::Fetch(keys)
        }
        OP_END => Step::End {
            complete: flag(&mut r, "complete")?,
        },
        OP_TREES => Step::Trees,
        other => return Err(format!("unknown sync op {other}")),
    };
    r.finish().map_err(text)?;
    Ok(StepRequest {
        from,
        session,
        step,
    })
}

pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    match reply {
        Reply::Compare(message) => {
            out.push(OP_COMPARE);
            out.extend_from_slice(message);
        }
        Reply::Keys { more, keys } => {
            out.push(REPLY_KEYS);
            out.push(u8::from(*more));
            out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
            for digest in keys {
                put_key(&mut out, &digest.key);
                out.extend_from_slice(&digest.contribution.to_le_bytes());
            }
        }
        Reply::Sets(sets) => {
            out.push(REPLY_SETS);
            out.extend_from_slice(&(sets.len() as u32).to_le_bytes());
            for (key, set) in sets {
                put_key(&mut out, key);
                match set {
                    Some(set) => {
                        out.push(1);
                        out.extend_from_slice(&(set.len() as u32).to_le_bytes());
                        out.extend_from_slice(set);
                    }
                    None => out.push(0),
                }
            }
        }
        Reply::Done => out.push(REPLY_DONE),
        Reply::Trees(trees) => {
            out.push(OP_TREES);
            out.extend_from_slice(&(trees.len() as u32).to_le_bytes());
            for tree in trees {
                out.extend_from_slice(&tree.start.to_le_bytes());
                out.extend_from_slice(&tree.end.to_le_bytes());
                out.extend_from_slice(&tree.root.to_le_bytes());
                out.extend_from_slice(&tree.dirty.to_le_bytes());
                out.push(u8::from(tree.ready));
            }
        }
    }
    seal(out)
}

pub fn decode_reply(body: Bytes, key_bytes_max: usize) -> Result<Reply, String> {
    let mut r = open(body)?;
    let reply = match r.u8("op").map_err(text)? {
        OP_COMPARE => {
            let rest = r.remaining();
            Reply::Compare(r.bytes(rest, "message").map_err(text)?)
        }
        REPLY_KEYS => {
            let more = flag(&mut r, "more")?;
            let count = r.u32("key_count").map_err(text)? as usize;
            r.ensure_room(count, 2 + 8, "key_count").map_err(text)?;
            let mut keys: Vec<KeyDigest> = Vec::with_capacity(count);
            for _ in 0..count {
                let key = key(&mut r, key_bytes_max)?;
                let contribution = r.u64("contribution").map_err(text)?;
                if keys.last().is_some_and(|last| last.key >= key) {
                    return Err("listed keys out of order".into());
                }
                keys.push(KeyDigest { key, contribution });
            }
            Reply::Keys { more, keys }
        }
        REPLY_SETS => {
            let count = r.u32("key_count").map_err(text)? as usize;
            r.ensure_room(count, 3, "key_count").map_err(text)?;
            let mut sets = Vec::with_capacity(count);
            for _ in 0..count {
                let key = key(&mut r, key_bytes_max)?;
                let set = if flag(&mut r, "present")? {
                    let len = r.u32("set_len").map_err(text)? as usize;
                    Some(r.bytes(len, "version set").map_err(text)?)
                } else {
                    None
                };
                sets.push((key, set));
            }
            Reply::Sets(sets)
        }
        REPLY_DONE => Reply::Done,
        OP_TREES => {
            let count = r.u32("tree_count").map_err(text)? as usize;
            r.ensure_room(count, 8 * 3 + 4 + 1, "tree_count")
                .map_err(text)?;
            let mut trees = Vec::with_capacity(count);
            for _ in 0..count {
                trees.push(TreeInfo {
                    start: r.u64("start").map_err(text)?,
                    end: r.u64("end").map_err(text)?,
                    root: r.u64("root").map_err(text)?,
                    dirty: r.u32("dirty").map_err(text)?,
                    ready: flag(&mut r, "ready")?,
                });
            }
            Reply::Trees(trees)
        }
        other => return Err(format!("unknown sync reply op {other}")),
    };
    r.finish().map_err(text)?;
    Ok(reply)
}

fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks the trailing CRC and returns a reader over what it covers.
fn open(body: Bytes) -> Result<Reader, String> {
    if body.len() < CRC_BYTES {
        return Err(format!("sync body of {} bytes has no CRC", body.len()));
    }
    let (covered, crc) = body.split_at(body.len() - CRC_BYTES);
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(covered);
    if stored != computed {
        return Err(format!(
            "sync body CRC32C mismatch: says {stored:#010x}, computed {computed:#010x}"
        ));
    }
    Ok(Reader::new(body.slice(..body.len() - CRC_BYTES)))
}

fn put_key(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
}

fn key(r: &mut Reader, key_bytes_max: usize) -> Result<Bytes, String> {
    let len = usize::from(r.u16("key_len").map_err(text)?);
    if len > key_bytes_max {
        return Err(format!("key of {len} bytes, limit {key_bytes_max}"));
    }
    r.bytes(len, "key").map_err(text)
}

fn flag(r: &mut Reader, field: &str) -> Result<bool, String> {
    match r.u8(field).map_err(text)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(format!("{field} is {other}, not 0 or 1")),
    }
}

fn text(e: crate::protocol::RequestError) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn steps() -> Vec<StepRequest> {
        let step = |step| StepRequest {
            from: 7,
            session: 9,
            step,
        };
        vec![
            step(Step::Compare(Bytes::from_static(b"abc"))),
            step(Step::Leaves {
                level: 14,
                leaves: vec![1, 5, 16000],
            }),
            step(Step::List {
                sessions: vec![3, 9, u64::MAX],
            }),
            step(Step::ListNext),
            step(Step::Fetch(vec![
                (None, Bytes::from_static(b"k1")),
                (Some(u64::MAX), Bytes::from_static(b"")),
            ])),
            step(Step::End { complete: true }),
            step(Step::Trees),
        ]
    }

    fn replies() -> Vec<Reply> {
        vec![
            Reply::Compare(Bytes::from_static(b"xyz")),
            Reply::Keys {
                more: true,
                keys: vec![
                    KeyDigest {
                        key: Bytes::from_static(b"a"),
                        contribution: 1,
                    },
                    KeyDigest {
                        key: Bytes::from_static(b"b"),
                        contribution: u64::MAX,
                    },
                ],
            },
            Reply::Sets(vec![
                (Bytes::from_static(b"a"), Some(Bytes::from_static(b"set"))),
                (Bytes::from_static(b"b"), None),
            ]),
            Reply::Done,
            Reply::Trees(vec![TreeInfo {
                start: 1,
                end: 2,
                root: 3,
                dirty: 4,
                ready: true,
            }]),
        ]
    }

    #[test]
    fn steps_and_replies_round_trip_and_every_bit_flip_is_refused() {
        for step in steps() {
            let bytes = encode_step(&step);
            assert_eq!(decode_step(Bytes::from(bytes.clone()), 1024), Ok(step));
            for bit in 0..bytes.len() * 8 {
                let mut bad = bytes.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(decode_step(Bytes::from(bad), 1024).is_err());
            }
            for cut in 0..bytes.len() {
                assert!(decode_step(Bytes::copy_from_slice(&bytes[..cut]), 1024).is_err());
            }
        }
        for reply in replies() {
            let bytes = encode_reply(&reply);
            assert_eq!(decode_reply(Bytes::from(bytes.clone()), 1024), Ok(reply));
            for bit in 0..bytes.len() * 8 {
                let mut bad = bytes.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(decode_reply(Bytes::from(bad), 1024).is_err());
            }
        }
    }

    #[test]
    fn lying_counts_and_disorder_are_refused_behind_a_good_crc() {
        let sealed = |body: Vec<u8>| Bytes::from(seal(body));
        let mut list = vec![0u8; 16];
        list.extend_from_slice(&[OP_LEAVES, 3]);
        list.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            decode_step(sealed(list), 1024).is_err(),
            "count past the bytes"
        );
        let mut disorder = vec![0u8; 16];
        disorder.extend_from_slice(&[OP_LEAVES, 3]);
        disorder.extend_from_slice(&2u32.to_le_bytes());
        disorder.extend_from_slice(&5u32.to_le_bytes());
        disorder.extend_from_slice(&4u32.to_le_bytes());
        assert!(
            decode_step(sealed(disorder), 1024).is_err(),
            "leaves out of order"
        );
        let mut deep = vec![0u8; 16];
        deep.extend_from_slice(&[OP_LEAVES, 3]);
        deep.extend_from_slice(&1u32.to_le_bytes());
        deep.extend_from_slice(&8u32.to_le_bytes());
        assert!(
            decode_step(sealed(deep), 1024).is_err(),
            "no leaf 8 at level 3"
        );
        let list = |session: u64, sessions: &[u64]| {
            let mut body = vec![0u8; 8];
            body.extend_from_slice(&session.to_le_bytes());
            body.push(OP_LIST);
            body.extend_from_slice(&(sessions.len() as u16).to_le_bytes());
            for s in sessions {
                body.extend_from_slice(&s.to_le_bytes());
            }
            sealed(body)
        };
        assert!(decode_step(list(2, &[1, 2]), 1024).is_ok());
        assert!(decode_step(list(3, &[1, 2]), 1024).is_err(), "not its own");
        assert!(decode_step(list(2, &[2, 2]), 1024).is_err(), "twice");
        assert!(decode_step(list(2, &[2, 1]), 1024).is_err(), "out of order");
        assert!(decode_step(list(2, &[]), 1024).is_err(), "none");
        let many: Vec<u64> = (0..=LIST_SESSIONS_MAX as u64).collect();
        assert!(decode_step(list(2, &many), 1024).is_err(), "too many");
        let long_key = Reply::Sets(vec![(Bytes::from(vec![b'k'; 40]), None)]);
        let bytes = Bytes::from(encode_reply(&long_key));
        assert!(decode_reply(bytes, 32).is_err(), "key over the limit");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_step(Bytes::from(bytes.clone()), 1024);
            let _ = decode_reply(Bytes::from(seal(bytes.clone())), 1024);
            let _ = decode_step(Bytes::from(seal(bytes)), 1024);
        }
    }
}
