//! The comparison of two replicas' trees, as a pair of state machines that exchange
//! plain messages, and the key-level diff of the leaves that differ.
//!
//! # Protocol
//!
//! The initiator `A` opens with its root; the responder `B` compares it with its own.
//! From then on the two take turns, one level per turn: each side answers the nodes
//! it found differing with the sums of their two children (a [`Pair`]), and the other
//! side compares those children with its own. Equal subtrees are never mentioned
//! again, so the messages carry about `20 bytes × levels` per differing leaf.
//!
//! ```text
//!  A                                              B
//!  Open { range, depth_a, root } ─────────────▶  compares level 0
//!        compares level 1  ◀─────────────────── Accept { depth_b, Answer(pairs of level 0) }
//!  Descend(pairs of level 1) ─────────────────▶  compares level 2
//!        compares level 3  ◀─────────────────── Answer(pairs of level 2, leaves found, more)
//!  …                                              …
//! ```
//!
//! - Both compare down to `leaf_level = min(depth_a, depth_b)`: node `(l, i)` covers the
//!   same tokens in trees of any depth (`merkle.rs`). A differing node at `leaf_level`
//!   is a differing leaf. The responder reports those it finds in its answers; the
//!   initiator ends with the whole list ([`Session::differing_leaves`]).
//! - Messages are bounded ([`Limits`]); what does not fit waits for the next turn, in
//!   breadth-first order. An [`Answer`] says whether `B` still owes pairs (`more`).
//! - It is a request/response exchange: `A` sends, `B` always answers once. `A` is
//!   done when an answer has `more == false` and it owes nothing itself; equal roots
//!   cost one round trip.
//! - Each side compares every node at most once: parents of one level must come in
//!   increasing order across the whole session (an honest peer's breadth-first queue
//!   does that by itself), so a session never compares more than the tree's
//!   `2^(leaf_level+1)` nodes, whatever a peer sends. A peer that breaks the order, or
//!   names a node that does not exist, gets an [`ExchangeError`].
//!
//! Then, for each differing leaf, `A` lists its keys with their contributions
//! ([`LeafKeys`]); `B` lists its own and [`diff_keys`] says which keys each side lacks
//! or holds in another version: `B` sends its sets of the first, fetches `A`'s sets of
//! the second, and every receiver merges (DVVSet sync). A key whose versions differ on
//! both sides moves both ways: the contributions say "different", not which side is
//! newer, and merging both ways is right whatever the causality.

use std::collections::VecDeque;

use bytes::Bytes;

use super::codec::{encode, Limits};
use super::merkle::{Snapshot, TokenRange};
use super::TREE_FORMAT;

/// The initiator's opening: which tree, its depth, its root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// [`TREE_FORMAT`] of the sender: trees of other formats cannot be compared.
    pub tree_format: u8,
    pub range: TokenRange,
    pub depth: u8,
    pub root: u64,
}

/// The responder's reply to [`Open`]: its depth and its first answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accept {
    pub depth: u8,
    pub answer: Answer,
}

/// Why a responder will not compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// It keeps no tree of that range (its ring snapshot differs, or it is no replica).
    UnknownRange = 1,
    /// Its trees hash keys another way ([`TREE_FORMAT`]).
    TreeFormat = 2,
    /// It runs as many syncs as it allows; try later.
    Busy = 3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refuse {
    pub reason: RefuseReason,
}

/// The sender's sums of the two children of its node `(level, index)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    pub index: u32,
    pub left: u64,
    pub right: u64,
}

/// The initiator's turn: children of nodes of `level` it found differing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Descend {
    /// Level of the parents; the children are at `level + 1`. 0 when `pairs` is empty.
    pub level: u8,
    /// Increasing by index.
    pub pairs: Vec<Pair>,
}

/// The responder's turn: like [`Descend`], plus the differing leaves it found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub level: u8,
    pub pairs: Vec<Pair>,
    /// Differing leaves (nodes of `leaf_level`) found since the last answer, increasing.
    pub leaves: Vec<u32>,
    /// The responder owes more pairs or leaves than fit: the initiator must go on.
    pub more: bool,
}

/// A key and what it contributes to its leaf (`merkle::contribution`), which names its
/// version set: equal sets, equal contributions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyDigest {
    pub key: Bytes,
    pub contribution: u64,
}

/// One differing leaf's keys, or a chunk of them (`last` on the final chunk).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafKeys {
    pub level: u8,
    pub index: u32,
    pub last: bool,
    /// Increasing by key.
    pub keys: Vec<KeyDigest>,
}

/// Every anti-entropy message (`codec.rs` draws their bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Accept(Accept),
    Refuse(Refuse),
    Descend(Descend),
    Answer(Answer),
    LeafKeys(LeafKeys),
}

/// What a peer did wrong in a comparison. The driver ends the session and logs it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    #[error("pair at level {level} for a comparison down to level {leaf_level}")]
    LevelOutOfRange { level: u8, leaf_level: u8 },
    #[error("pair at level {level}, whose nodes this side does not compare")]
    WrongTurn { level: u8 },
    #[error("node {index} does not exist at level {level}")]
    IndexOutOfRange { level: u8, index: u32 },
    #[error("node {index} of level {level} comes after node {after}: out of order or repeated")]
    OutOfOrder { level: u8, index: u32, after: u32 },
    #[error("depth {depth} above the maximum {max}")]
    DepthTooLarge { depth: u8, max: u8 },
}

/// Which end of the comparison a [`Session`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Initiator,
    Responder,
}

/// One side of one comparison. Owns the snapshot it compares.
#[derive(Debug)]
pub struct Session {
    snapshot: Snapshot,
    role: Role,
    limits: Limits,
    /// `min(own depth, peer's depth)`: differing nodes of this level are leaves.
    leaf_level: u8,
    /// Nodes this side found differing whose children it owes the peer; breadth first.
    owed: VecDeque<(u8, u32)>,
    /// Differing leaves found here and not yet reported (responder only).
    unreported: VecDeque<u32>,
    /// Every differing leaf this side knows of.
    differing: Vec<u32>,
    /// Per level, the parent index the next pair must exceed (`None`: no pair yet).
    last_parent: Vec<Option<u32>>,
    finished: bool,
}

impl Session {
    /// The initiator's side, and the message that opens the comparison.
    pub fn open(snapshot: Snapshot, limits: Limits) -> (Session, Open) {
        let shape = *snapshot.shape();
        let open = Open {
            tree_format: TREE_FORMAT,
            range: shape.range,
            depth: shape.depth,
            root: snapshot.root(),
        };
        let session = Session::new(snapshot, Role::Initiator, limits, shape.depth);
        (session, open)
    }

    /// The responder's side for `open`, and its reply; or the reason it refuses.
    pub fn accept(
        snapshot: Snapshot,
        open: &Open,
        limits: Limits,
    ) -> Result<(Session, Accept), Refuse> {
        let shape = *snapshot.shape();
        if open.tree_format != TREE_FORMAT {
            return Err(Refuse {
                reason: RefuseReason::TreeFormat,
            });
        }
        if open.range != shape.range {
            return Err(Refuse {
                reason: RefuseReason::UnknownRange,
            });
        }
        let leaf_level = shape.depth.min(open.depth);
        let mut session = Session::new(snapshot, Role::Responder, limits, leaf_level);
        session.compare(0, 0, open.root);
        let answer = session.next_answer();
        let accept = Accept {
            depth: shape.depth,
            answer,
        };
        Ok((session, accept))
    }

    fn new(snapshot: Snapshot, role: Role, limits: Limits, leaf_level: u8) -> Session {
        limits.assert_valid();
        Session {
            snapshot,
            role,
            limits,
            leaf_level,
            owed: VecDeque::new(),
            unreported: VecDeque::new(),
            differing: Vec::new(),
            last_parent: vec![None; leaf_level as usize + 1],
            finished: false,
        }
    }

    /// Initiator: the responder's [`Accept`]. Returns the next [`Descend`] to send, or
    /// `None` when the comparison is over.
    pub fn on_accept(&mut self, accept: &Accept) -> Result<Option<Descend>, ExchangeError> {
        assert_eq!(self.role, Role::Initiator);
        if accept.depth > super::merkle::DEPTH_MAX {
            return Err(ExchangeError::DepthTooLarge {
                depth: accept.depth,
                max: super::merkle::DEPTH_MAX,
            });
        }
        self.leaf_level = self.leaf_level.min(accept.depth);
        self.last_parent.truncate(self.leaf_level as usize + 1);
        self.on_answer(&accept.answer)
    }

    /// Initiator: one [`Answer`]. Returns the next [`Descend`], or `None` when done.
    pub fn on_answer(&mut self, answer: &Answer) -> Result<Option<Descend>, ExchangeError> {
        assert_eq!(self.role, Role::Initiator);
        assert!(!self.finished, "answer after the comparison ended");
        self.take_pairs(answer.level, &answer.pairs)?;
        for &leaf in &answer.leaves {
            self.check_node(self.leaf_level, leaf)?;
            self.differing.push(leaf);
        }
        if !answer.more && self.owed.is_empty() {
            self.finished = true;
            // A peer that reports a leaf twice (in two answers) gains nothing by it.
            self.differing.sort_unstable();
            self.differing.dedup();
            return Ok(None);
        }
        let (level, pairs) = self.next_pairs();
        Ok(Some(Descend { level, pairs }))
    }

    /// Responder: one [`Descend`]; the [`Answer`] to send back.
    pub fn on_descend(&mut self, descend: &Descend) -> Result<Answer, ExchangeError> {
        assert_eq!(self.role, Role::Responder);
        self.take_pairs(descend.level, &descend.pairs)?;
        Ok(self.next_answer())
    }

    /// The initiator has seen the last answer (the responder cannot tell: it keeps its
    /// session until the initiator moves on, or an idle timeout).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The level at which the sides compared leaves: `min` of the two depths.
    pub fn leaf_level(&self) -> u8 {
        self.leaf_level
    }

    /// The differing leaves (nodes of [`leaf_level`](Self::leaf_level)) this side knows
    /// of: all of them on the initiator once [`is_finished`](Self::is_finished).
    pub fn differing_leaves(&self) -> &[u32] {
        &self.differing
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Compares the children of the peer's pairs with this side's own.
    fn take_pairs(&mut self, level: u8, pairs: &[Pair]) -> Result<(), ExchangeError> {
        if pairs.is_empty() {
            return Ok(());
        }
        if level >= self.leaf_level {
            return Err(ExchangeError::LevelOutOfRange {
                level,
                leaf_level: self.leaf_level,
            });
        }
        // The responder compares even levels (the root first), the initiator odd ones:
        // children of level + 1 must be this side's to compare.
        let compares_even = self.role == Role::Responder;
        if ((level + 1) % 2 == 0) != compares_even {
            return Err(ExchangeError::WrongTurn { level });
        }
        for pair in pairs {
            self.check_node(level, pair.index)?;
            let last = &mut self.last_parent[level as usize];
            if let Some(after) = *last {
                if pair.index <= after {
                    return Err(ExchangeError::OutOfOrder {
                        level,
                        index: pair.index,
                        after,
                    });
                }
            }
            *last = Some(pair.index);
            self.compare(level + 1, 2 * pair.index, pair.left);
            self.compare(level + 1, 2 * pair.index + 1, pair.right);
        }
        Ok(())
    }

    fn check_node(&self, level: u8, index: u32) -> Result<(), ExchangeError> {
        if level > self.leaf_level {
            return Err(ExchangeError::LevelOutOfRange {
                level,
                leaf_level: self.leaf_level,
            });
        }
        if (index as u64) >= 1u64 << level {
            return Err(ExchangeError::IndexOutOfRange { level, index });
        }
        Ok(())
    }

    /// One node against the peer's sum of it.
    fn compare(&mut self, level: u8, index: u32, theirs: u64) {
        if self.snapshot.node(level, index) == theirs {
            return;
        }
        if level < self.leaf_level {
            self.owed.push_back((level, index));
        } else {
            self.differing.push(index);
            if self.role == Role::Responder {
                self.unreported.push_back(index);
            }
        }
    }

    /// The next pairs owed: the front of `owed`, one level, at most the limit.
    fn next_pairs(&mut self) -> (u8, Vec<Pair>) {
        let Some(&(level, _)) = self.owed.front() else {
            return (0, Vec::new());
        };
        let mut pairs = Vec::new();
        while let Some(&(l, index)) = self.owed.front() {
            if l != level || pairs.len() == self.limits.pairs_max as usize {
                break;
            }
            self.owed.pop_front();
            pairs.push(Pair {
                index,
                left: self.snapshot.node(level + 1, 2 * index),
                right: self.snapshot.node(level + 1, 2 * index + 1),
            });
        }
        (level, pairs)
    }

    fn next_answer(&mut self) -> Answer {
        let (level, pairs) = self.next_pairs();
        let count = self.unreported.len().min(self.limits.leaves_max as usize);
        let leaves: Vec<u32> = self.unreported.drain(..count).collect();
        Answer {
            level,
            pairs,
            leaves,
            more: !self.owed.is_empty() || !self.unreported.is_empty(),
        }
    }
}

/// Which keys of one leaf each side must send, from both sides' complete lists (each
/// increasing by key, as [`LeafKeys`] carries them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyDiff {
    /// Keys the other side lacks or holds in another version: send this side's sets.
    pub send: Vec<Bytes>,
    /// Keys this side lacks or holds in another version: fetch the other side's sets.
    pub fetch: Vec<Bytes>,
}

/// The diff of one leaf (a merge of two sorted lists). Panics on a list that is not
/// strictly increasing by key; the decoder refuses such a list from the network.
pub fn diff_keys(local: &[KeyDigest], remote: &[KeyDigest]) -> KeyDiff {
    for list in [local, remote] {
        assert!(
            list.windows(2).all(|w| w[0].key < w[1].key),
            "key list not strictly increasing"
        );
    }
    let mut diff = KeyDiff::default();
    let (mut l, mut r) = (0, 0);
    while l < local.len() || r < remote.len() {
        let order = match (local.get(l), remote.get(r)) {
            (Some(a), Some(b)) => a.key.cmp(&b.key),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, _) => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                diff.send.push(local[l].key.clone());
                l += 1;
            }
            std::cmp::Ordering::Greater => {
                diff.fetch.push(remote[r].key.clone());
                r += 1;
            }
            std::cmp::Ordering::Equal => {
                if local[l].contribution != remote[r].contribution {
                    diff.send.push(local[l].key.clone());
                    diff.fetch.push(remote[r].key.clone());
                }
                l += 1;
                r += 1;
            }
        }
    }
    diff
}

/// What one comparison costs on the wire ([`comparison_cost`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Request/response round trips, the opening included.
    pub round_trips: u32,
    /// Messages in both directions.
    pub messages: u32,
    /// Encoded message bytes in both directions, each with the internal protocol's
    /// 12-byte frame header.
    pub bytes: u64,
    /// The comparison's result: [`Session::leaf_level`] and the differing leaves.
    pub leaf_level: u8,
    pub differing_leaves: Vec<u32>,
}

/// Bytes of the internal protocol's frame header, which carries each message.
pub const FRAME_HEADER_BYTES: u64 = crate::protocol::HEADER_LEN as u64;

/// Runs a whole comparison of `a` (initiator) against `b` in memory and counts what it
/// sends; both sides run the real state machines and every message is encoded.
pub fn comparison_cost(a: Snapshot, b: Snapshot, limits: Limits) -> Cost {
    let mut cost = Cost::default();
    let mut count = |message: Message| {
        let mut buf = Vec::new();
        encode(&message, &mut buf);
        cost.messages += 1;
        cost.bytes += buf.len() as u64 + FRAME_HEADER_BYTES;
    };
    let (mut initiator, open) = Session::open(a, limits);
    count(Message::Open(open.clone()));
    let (mut responder, accept) = Session::accept(b, &open, limits).expect("same shape");
    count(Message::Accept(accept.clone()));
    let mut round_trips = 1;
    let mut next = initiator.on_accept(&accept).expect("honest peer");
    while let Some(descend) = next {
        count(Message::Descend(descend.clone()));
        let answer = responder.on_descend(&descend).expect("honest peer");
        count(Message::Answer(answer.clone()));
        round_trips += 1;
        next = initiator.on_answer(&answer).expect("honest peer");
    }
    cost.round_trips = round_trips;
    cost.leaf_level = initiator.leaf_level();
    cost.differing_leaves = initiator.differing_leaves().to_vec();
    cost
}
