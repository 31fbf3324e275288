//! The token ring: which virtual node owns a key.
//!
//! A key's token is `xxh3_64(key)` with seed 0 — stable across processes, versions and
//! machines, because tokens are stored (in the node's metadata) and sent (in the shard
//! map). A [`TokenMap`] holds sorted `(token, owner)` pairs; the owner of a token is the
//! first vnode whose token is `>=` it, wrapping around to the first vnode. The same
//! lookup serves the node-local shard map today and the cluster ring (owner = node and
//! shard) when replication arrives.
//!
//! This module never touches storage or sockets; it is plain data and pure functions.

pub mod allocate;
pub mod cluster;

use xxhash_rust::xxh3::xxh3_64;

/// A position on the ring.
pub type Token = u64;

/// The token of a key. Stable: never change the hash or its seed (DESIGN.md §8.5).
pub fn token(key: &[u8]) -> Token {
    xxh3_64(key)
}

/// Sorted `(token, owner)` pairs. Immutable once built; shards share it read-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenMap<T> {
    vnodes: Vec<(Token, T)>,
}

impl<T> TokenMap<T> {
    /// Builds a map from vnodes in any order. Panics on an empty list or a duplicate
    /// token: both are programmer errors (allocation never produces them).
    pub fn new(mut vnodes: Vec<(Token, T)>) -> Self {
        assert!(!vnodes.is_empty(), "a token map needs at least one vnode");
        vnodes.sort_by_key(|(token, _)| *token);
        assert!(
            vnodes.windows(2).all(|w| w[0].0 != w[1].0),
            "duplicate token in token map"
        );
        Self { vnodes }
    }

    /// The index of the vnode that owns `token`.
    pub fn owner_index(&self, token: Token) -> usize {
        let index = self.vnodes.partition_point(|(t, _)| *t < token);
        if index == self.vnodes.len() {
            0
        } else {
            index
        }
    }

    /// The owner of `token`.
    pub fn owner(&self, token: Token) -> &T {
        &self.vnodes[self.owner_index(token)].1
    }

    /// The owner of `key`.
    pub fn owner_of_key(&self, key: &[u8]) -> &T {
        self.owner(token(key))
    }

    pub fn vnodes(&self) -> &[(Token, T)] {
        &self.vnodes
    }

    pub fn len(&self) -> usize {
        self.vnodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vnodes.is_empty()
    }

    /// How much of the token space each vnode owns: `(token - previous token)`, with the
    /// first vnode owning the wrap-around range. The sum is 2^64.
    pub fn range_sizes(&self) -> impl Iterator<Item = (u128, &T)> + '_ {
        let last = self.vnodes[self.vnodes.len() - 1].0;
        let mut previous = last;
        self.vnodes.iter().map(move |(token, owner)| {
            let size = if self.vnodes.len() == 1 {
                1u128 << 64
            } else {
                token.wrapping_sub(previous) as u128
            };
            previous = *token;
            (size, owner)
        })
    }
}

/// Which shard of this node owns each token: the node-local ring.
pub type ShardMap = TokenMap<u16>;

/// Tokens for `shards × vnodes_per_shard` vnodes, evenly spaced from `offset` and dealt
/// to shards round robin, so every shard owns exactly `1 / shards` of the token space.
/// `offset` is random per node so that nodes of a cluster do not all pick the same tokens.
pub fn even_shard_tokens(shards: u16, vnodes_per_shard: u16, offset: u64) -> Vec<(Token, u16)> {
    assert!(shards > 0 && vnodes_per_shard > 0);
    let total = shards as u64 * vnodes_per_shard as u64;
    let step = u64::MAX / total;
    (0..total)
        .map(|i| (offset.wrapping_add(i * step), (i % shards as u64) as u16))
        .collect()
}

/// Share of the token space owned by each shard, in [0, 1].
pub fn shard_ownership(map: &ShardMap, shards: u16) -> Vec<f64> {
    let mut owned = vec![0u128; shards as usize];
    for (size, shard) in map.range_sizes() {
        owned[*shard as usize] += size;
    }
    owned
        .into_iter()
        .map(|o| o as f64 / (1u128 << 64) as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn token_is_stable_xxh3() {
        // Pinned: a change here would move every stored key to another owner.
        assert_eq!(token(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(token(b"hello"), xxh3_64(b"hello"));
    }

    #[test]
    fn owner_is_first_vnode_at_or_after_token_wrapping() {
        let map = TokenMap::new(vec![(100, 'b'), (10, 'a'), (1000, 'c')]);
        assert_eq!(*map.owner(0), 'a');
        assert_eq!(*map.owner(10), 'a');
        assert_eq!(*map.owner(11), 'b');
        assert_eq!(*map.owner(100), 'b');
        assert_eq!(*map.owner(999), 'c');
        assert_eq!(*map.owner(1001), 'a');
        assert_eq!(*map.owner(u64::MAX), 'a');
    }

    #[test]
    fn even_tokens_balance_shards_exactly() {
        for shards in 1..=8u16 {
            let map = ShardMap::new(even_shard_tokens(shards, 16, 12345));
            for share in shard_ownership(&map, shards) {
                assert!((share - 1.0 / shards as f64).abs() < 1e-9, "{share}");
            }
        }
    }

    proptest! {
        #[test]
        fn every_token_has_exactly_the_owner_of_its_range(
            tokens in proptest::collection::btree_set(any::<u64>(), 1..50),
            probe in any::<u64>(),
        ) {
            let vnodes: Vec<(u64, usize)> = tokens.iter().copied().zip(0..).collect();
            let map = TokenMap::new(vnodes.clone());
            let expected = vnodes.iter().find(|(t, _)| *t >= probe).unwrap_or(&vnodes[0]).1;
            prop_assert_eq!(*map.owner(probe), expected);
            let total: u128 = map.range_sizes().map(|(s, _)| s).sum();
            prop_assert_eq!(total, 1u128 << 64);
        }
    }
}
