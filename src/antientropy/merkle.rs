//! The Merkle tree of one token range: its shape, the hash a key contributes, the
//! incremental update on every write, and the per-sync [`Snapshot`] a comparison reads.
//!
//! # Shape
//!
//! A tree covers one [`TokenRange`] `(start, end]` (the ring's vnode ranges, see
//! `ring::cluster`) and has `2^depth` leaves that split the range's tokens evenly:
//! a token at offset `o = token - start - 1` in a range of `n` tokens is in leaf
//! `⌊o · 2^depth / n⌋`. Node `(level, index)` (level 0 is the root) covers leaves
//! `index·2^(depth-level) ..` of the next `2^(depth-level)`, which are the tokens with
//! `⌊o · 2^level / n⌋ = index`, *whatever the depth*: a node means the same tokens in a
//! tree of any depth `>= level` (see [`Shape::node_of`]).
//!
//! # Values: sums, not hashes of children
//!
//! A key contributes `c = xxh3_64(key_len u16 | key | encoded version set)` with a
//! fixed seed ([`contribution`]); a leaf holds the wrapping sum of its keys'
//! contributions, and every inner node the wrapping sum of its children — so every node
//! is the sum of the contributions of the keys it covers (a multiset hash). Hence:
//!
//! - a write moves one leaf by `new - old`: O(1), no hashing beyond the key's own
//!   contribution, no read of the leaf's other keys ([`MerkleTree::update`]); inner
//!   nodes are not stored at all but summed when a sync takes a [`Snapshot`]
//!   (`2^depth` additions: 10 µs at the default depth);
//! - a node of a deeper tree *is* the node of a shallower one, so two replicas with
//!   different depths compare at the smaller one, and the default can change without a
//!   flag day (`exchange.rs`);
//! - a difference hides only if the sums of two different multisets of 64-bit hashes
//!   are equal: about `2^-64` per compared node. Sums are linear, so someone who chose
//!   contributions freely could craft equal sums; contributions hash key, dots and
//!   values together, and making two replicas diverge on purpose *and* collide is not a
//!   threat this store defends against (a hash of the children would not help either
//!   without a secret key). Wrapping sums rather than XOR: a contribution counted twice
//!   by mistake (an insert without removing the old value) shows up as a difference
//!   instead of cancelling out.
//!
//! # Dirty leaves
//!
//! A caller that cannot name a key's old contribution (a blind `lww` write whose key is
//! only in the tables) marks the leaf dirty instead. A dirty leaf's sum is not trusted:
//! a snapshot *poisons* it with a random value (the caller's `salt`), so the comparison
//! always descends into it and the two sides exchange its keys — which the driver lists
//! from storage anyway, and can hand back to [`MerkleTree::finish_rebuild`]. A write to
//! a leaf while its rebuild's scan runs makes that rebuild void (the scan may have
//! missed the write), so the leaf stays dirty until a later rebuild.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::ring::Token;
use crate::version::VersionSet;

/// Seed of every contribution. Fixed forever: contributions are summed into the roots
/// that replicas compare (DESIGN.md §8.5). Changing the contribution means a new
/// [`TREE_FORMAT`](super::TREE_FORMAT).
pub const CONTRIBUTION_SEED: u64 = 0x5249_4e47_4b56_4145; // "RINGKVAE"

/// Deepest tree: 2^20 leaves, 8 MiB. Also bounds levels on the wire.
pub const DEPTH_MAX: u8 = 20;

/// The hash a key adds to its leaf: `xxh3_64` (seeded) of `key_len u16 | key | encoded
/// version set`. That is byte for byte the payload of the commit log's PUT record, so
/// the engine may hash the payload it just encoded ([`contribution_of_payload`]).
///
/// The set's encoding is canonical (docs/storage.md "Version set"), so two replicas
/// holding equal sets make equal contributions; the dots, timestamps and values all
/// count, so a set that differs in anything makes another one. Tombstones are versions
/// like any other; only a purged key contributes nothing.
pub fn contribution(key: &[u8], versions: &VersionSet) -> u64 {
    assert!(key.len() <= u16::MAX as usize, "key of {} bytes", key.len());
    let mut payload = Vec::with_capacity(2 + key.len() + versions.encoded_len());
    payload.extend_from_slice(&(key.len() as u16).to_le_bytes());
    payload.extend_from_slice(key);
    versions.encode_into(&mut payload);
    contribution_of_payload(&payload)
}

/// [`contribution`] of an already encoded `key_len u16 | key | version set`.
pub fn contribution_of_payload(payload: &[u8]) -> u64 {
    xxh3_64_with_seed(payload, CONTRIBUTION_SEED)
}

/// Tokens `(start, end]`, clockwise, wrapping past `u64::MAX`; `start == end` is the
/// whole ring (the range of a ring with one vnode), so a range is never empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenRange {
    /// Exclusive: the previous vnode's token.
    pub start: Token,
    /// Inclusive: the vnode's own token.
    pub end: Token,
}

impl TokenRange {
    pub fn new(start: Token, end: Token) -> TokenRange {
        TokenRange { start, end }
    }

    /// How many tokens it holds: 1 ..= 2^64.
    pub fn token_count(&self) -> u128 {
        if self.start == self.end {
            1 << 64
        } else {
            self.end.wrapping_sub(self.start) as u128
        }
    }

    /// `token`'s offset from the first token of the range, if it is in the range.
    fn offset(&self, token: Token) -> Option<u64> {
        let offset = token.wrapping_sub(self.start).wrapping_sub(1);
        ((offset as u128) < self.token_count()).then_some(offset)
    }

    pub fn contains(&self, token: Token) -> bool {
        self.offset(token).is_some()
    }
}

/// A tree's range and depth: everything two replicas must agree on to compare (the
/// depth only up to the smaller one), and the map from tokens to nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub range: TokenRange,
    /// Leaves are the nodes of level `depth`; at most [`DEPTH_MAX`].
    pub depth: u8,
}

impl Shape {
    pub fn new(range: TokenRange, depth: u8) -> Shape {
        assert!(depth <= DEPTH_MAX, "depth {depth} > {DEPTH_MAX}");
        Shape { range, depth }
    }

    pub fn leaf_count(&self) -> u32 {
        1 << self.depth
    }

    /// The node of `level` (`<= depth`) that covers `token`, if the range holds it.
    pub fn node_of(&self, token: Token, level: u8) -> Option<u32> {
        assert!(
            level <= self.depth,
            "level {level} below depth {}",
            self.depth
        );
        let offset = self.range.offset(token)? as u128;
        Some(((offset << level) / self.range.token_count()) as u32)
    }

    pub fn leaf_of(&self, token: Token) -> Option<u32> {
        self.node_of(token, self.depth)
    }

    /// The tokens node `(level, index)` covers; `None` when it covers none (a range with
    /// fewer tokens than the level has nodes).
    pub fn node_range(&self, level: u8, index: u32) -> Option<TokenRange> {
        assert!(level <= self.depth && (index as u64) < 1u64 << level);
        let n = self.range.token_count();
        // Offsets o with ⌊o·2^level/n⌋ = index: o in [⌈index·n/2^level⌉, ⌈(index+1)·n/2^level⌉).
        let first = |i: u128| (i * n).div_ceil(1u128 << level);
        let (low, high) = (first(index as u128), first(index as u128 + 1));
        if low == high {
            return None;
        }
        // Offset o is token start + 1 + o, so the tokens are (start + low, start + high].
        // Only the root of a whole-ring tree spans 2^64 tokens, and then start == end.
        Some(TokenRange {
            start: self.range.start.wrapping_add(low as u64),
            end: self.range.start.wrapping_add(high as u64),
        })
    }
}

/// One token range's tree: leaf sums, kept up to date on every write.
///
/// Memory: 8 bytes and 2 bits per leaf (128 KiB + 4 KiB at the default depth 14).
#[derive(Clone, Debug)]
pub struct MerkleTree {
    shape: Shape,
    /// Wrapping sum of the contributions of each leaf's keys (stale where dirty).
    leaves: Vec<u64>,
    /// Running wrapping sum of `leaves`, so that the root costs nothing to read.
    root: u64,
    /// Leaves whose sum is not trusted (module doc, "Dirty leaves").
    dirty: Bitmap,
    /// Leaves written since their rebuild began: such a rebuild is void.
    touched: Bitmap,
}

/// What [`MerkleTree::begin_rebuild`] hands out and [`MerkleTree::finish_rebuild`]
/// takes back: which leaf, so that a scan that raced a write is not applied.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub struct RebuildTicket {
    pub leaf: u32,
}

impl MerkleTree {
    /// A tree of an empty range of data.
    pub fn new(shape: Shape) -> MerkleTree {
        let leaves = shape.leaf_count() as usize;
        MerkleTree {
            shape,
            leaves: vec![0; leaves],
            root: 0,
            dirty: Bitmap::new(leaves),
            touched: Bitmap::new(leaves),
        }
    }

    /// The tree of what storage holds: every `(token, contribution)` of the range's keys,
    /// each key once, in any order (start-up, or a full rebuild).
    pub fn build(shape: Shape, keys: impl IntoIterator<Item = (Token, u64)>) -> MerkleTree {
        let mut tree = MerkleTree::new(shape);
        for (token, contribution) in keys {
            tree.update(token, None, Some(contribution));
        }
        tree
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The sum of every key's contribution (stale while leaves are dirty).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// One leaf's sum (stale if it is dirty).
    pub fn leaf(&self, leaf: u32) -> u64 {
        self.leaves[leaf as usize]
    }

    /// A write of a key with this token: its contribution was `old` (`None`: the key was
    /// absent) and is `new` (`None`: the key was purged). O(1). Panics on a token
    /// outside the range: routing sent the key to the wrong tree.
    pub fn update(&mut self, token: Token, old: Option<u64>, new: Option<u64>) {
        let leaf = self.leaf_index(token);
        let delta = new.unwrap_or(0).wrapping_sub(old.unwrap_or(0));
        self.leaves[leaf] = self.leaves[leaf].wrapping_add(delta);
        self.root = self.root.wrapping_add(delta);
        self.touched.set(leaf);
    }

    /// A write whose old contribution the caller does not know: the leaf's sum is no
    /// longer trusted until it is rebuilt from storage.
    pub fn mark_dirty(&mut self, token: Token) {
        let leaf = self.leaf_index(token);
        self.dirty.set(leaf);
        self.touched.set(leaf);
    }

    pub fn dirty_count(&self) -> u32 {
        self.dirty.count
    }

    pub fn is_dirty(&self, leaf: u32) -> bool {
        self.dirty.get(leaf as usize)
    }

    /// Dirty leaves, in increasing order.
    pub fn dirty_leaves(&self) -> impl Iterator<Item = u32> + '_ {
        self.dirty.iter().map(|leaf| leaf as u32)
    }

    /// Starts a rebuild of `leaf` whose scan of storage may interleave with writes:
    /// take the ticket *before* the scan starts reading.
    pub fn begin_rebuild(&mut self, leaf: u32) -> RebuildTicket {
        assert!(leaf < self.shape.leaf_count(), "leaf {leaf} out of range");
        self.touched.clear(leaf as usize);
        RebuildTicket { leaf }
    }

    /// Sets the leaf to the sum of the contributions storage listed for it (every key
    /// of the leaf, once), unless the leaf was written since the ticket was taken; then
    /// the scan may have missed that write, nothing changes, and this returns false.
    /// Panics on a token outside the leaf: the caller listed the wrong keys.
    pub fn finish_rebuild(
        &mut self,
        ticket: RebuildTicket,
        keys: impl IntoIterator<Item = (Token, u64)>,
    ) -> bool {
        let leaf = ticket.leaf as usize;
        let mut sum = 0u64;
        for (token, contribution) in keys {
            assert_eq!(
                self.shape.leaf_of(token),
                Some(ticket.leaf),
                "token {token:#018x} is not in leaf {leaf}"
            );
            sum = sum.wrapping_add(contribution);
        }
        if self.touched.get(leaf) {
            return false;
        }
        self.root = self.root.wrapping_sub(self.leaves[leaf]).wrapping_add(sum);
        self.leaves[leaf] = sum;
        self.dirty.clear(leaf);
        true
    }

    /// [`begin_rebuild`](Self::begin_rebuild) and
    /// [`finish_rebuild`](Self::finish_rebuild) with no write between them (start-up,
    /// the simulator): always applies.
    pub fn rebuild_leaf(&mut self, leaf: u32, keys: impl IntoIterator<Item = (Token, u64)>) {
        let ticket = self.begin_rebuild(leaf);
        let applied = self.finish_rebuild(ticket, keys);
        debug_assert!(applied);
    }

    /// The sums of every node, for one comparison. Dirty leaves are poisoned with
    /// `xxh3(salt, leaf)` so that they differ from whatever the peer holds: `salt`
    /// must be random per snapshot (the simulator draws it from its seed), never a
    /// value the peer could use too.
    pub fn snapshot(&self, salt: u64) -> Snapshot {
        let mut leaves = self.leaves.clone();
        for leaf in self.dirty.iter() {
            let mut input = [0u8; 16];
            input[..8].copy_from_slice(&salt.to_le_bytes());
            input[8..].copy_from_slice(&(leaf as u64).to_le_bytes());
            leaves[leaf] = xxh3_64(&input);
        }
        Snapshot::from_leaves(self.shape, leaves)
    }

    fn leaf_index(&self, token: Token) -> usize {
        match self.shape.leaf_of(token) {
            Some(leaf) => leaf as usize,
            None => panic!("token {token:#018x} outside {:?}", self.shape.range),
        }
    }
}

/// Every node's sum, frozen for one comparison (module doc). `levels[l][i]` is node
/// `(l, i)`; `levels[depth]` are the leaves. 16 bytes per leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    shape: Shape,
    levels: Vec<Vec<u64>>,
}

impl Snapshot {
    /// Sums the levels above `leaves` (`2^depth` of them).
    pub fn from_leaves(shape: Shape, leaves: Vec<u64>) -> Snapshot {
        assert_eq!(leaves.len(), shape.leaf_count() as usize);
        let mut levels = Vec::with_capacity(shape.depth as usize + 1);
        levels.push(leaves);
        while let Some(children) = levels.last().filter(|level| level.len() > 1) {
            let parents = children
                .chunks_exact(2)
                .map(|pair| pair[0].wrapping_add(pair[1]))
                .collect();
            levels.push(parents);
        }
        levels.reverse();
        Snapshot { shape, levels }
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    pub fn root(&self) -> u64 {
        self.levels[0][0]
    }

    /// Node `(level, index)`'s sum. Panics outside the tree.
    pub fn node(&self, level: u8, index: u32) -> u64 {
        self.levels[level as usize][index as usize]
    }
}

/// A fixed-size set of leaf indices with its population.
#[derive(Clone, Debug)]
struct Bitmap {
    words: Vec<u64>,
    count: u32,
}

impl Bitmap {
    fn new(bits: usize) -> Bitmap {
        Bitmap {
            words: vec![0; bits.div_ceil(64)],
            count: 0,
        }
    }

    fn get(&self, bit: usize) -> bool {
        self.words[bit / 64] & (1 << (bit % 64)) != 0
    }

    fn set(&mut self, bit: usize) {
        let word = &mut self.words[bit / 64];
        self.count += u32::from(*word & (1 << (bit % 64)) == 0);
        *word |= 1 << (bit % 64);
    }

    fn clear(&mut self, bit: usize) {
        let word = &mut self.words[bit / 64];
        self.count -= u32::from(*word & (1 << (bit % 64)) != 0);
        *word &= !(1 << (bit % 64));
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    w * 64 + bit
                })
            })
        })
    }
}
