//! [`BlockCache`]: the shard's data blocks, as stored on disk (compressed frames), LRU
//! within a byte budget. Keeping the frames rather than the decompressed payloads
//! fits about twice the blocks in a budget with lz4; a hit decompresses again
//! (`Table::get`), which costs far less than the O_DIRECT read it saves.
//!
//! One per shard, shared by its tables as an `Rc<BlockCache>`; the `RefCell` inside is
//! never borrowed across an await (lookups copy out a `Bytes` handle), so no lock is
//! needed and none is taken. Keys are `(table id, block offset)`: a table's blocks are
//! immutable, so an entry never goes stale; [`remove_table`](BlockCache::remove_table)
//! drops a deleted table's blocks so that their memory is not held until eviction.
//!
//! LRU by a use counter: a `HashMap` from key to (block, last use) and a `BTreeMap`
//! from last use to key. O(log n) per hit; simple, and a hit costs far less than the
//! disk read it saves.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

/// Bytes charged per cached block besides its payload: the two map entries.
pub const ENTRY_OVERHEAD_BYTES: usize = 64;

/// `(table id, block offset)`.
type BlockKey = (u64, u64);

/// A per-shard cache of data blocks' frames.
pub struct BlockCache {
    capacity_bytes: usize,
    inner: RefCell<Inner>,
    hits: Cell<u64>,
    misses: Cell<u64>,
}

#[derive(Default)]
struct Inner {
    blocks: HashMap<BlockKey, (Bytes, u64), ahash::RandomState>,
    /// Last use → key; the first entry is the least recently used.
    lru: BTreeMap<u64, BlockKey>,
    /// Bumped on every use.
    clock: u64,
    /// Sum of charges of the cached blocks; never above `capacity_bytes`.
    used_bytes: usize,
}

fn charge(block: &Bytes) -> usize {
    block.len() + ENTRY_OVERHEAD_BYTES
}

impl BlockCache {
    /// A cache of at most `capacity_bytes` (`--cache-bytes`); 0 disables it.
    pub fn new(capacity_bytes: usize) -> Self {
        BlockCache {
            capacity_bytes,
            inner: RefCell::new(Inner::default()),
            hits: Cell::new(0),
            misses: Cell::new(0),
        }
    }

    /// The block at `offset` of table `table_id`, if cached (counts a hit or a miss).
    pub fn get(&self, table_id: u64, offset: u64) -> Option<Bytes> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        inner.clock += 1;
        let clock = inner.clock;
        match inner.blocks.get_mut(&(table_id, offset)) {
            Some((block, used)) => {
                inner.lru.remove(used);
                *used = clock;
                inner.lru.insert(clock, (table_id, offset));
                self.hits.set(self.hits.get() + 1);
                Some(block.clone())
            }
            None => {
                self.misses.set(self.misses.get() + 1);
                None
            }
        }
    }

    /// Caches `block`, evicting least recently used blocks to stay within the budget.
    /// A block larger than the whole budget is not cached.
    pub fn insert(&self, table_id: u64, offset: u64, block: Bytes) {
        let cost = charge(&block);
        if cost > self.capacity_bytes {
            return;
        }
        let mut inner = self.inner.borrow_mut();
        inner.remove((table_id, offset));
        while inner.used_bytes + cost > self.capacity_bytes {
            let (_, key) = inner
                .lru
                .pop_first()
                .expect("used bytes imply a cached block");
            let (old, _) = inner.blocks.remove(&key).expect("lru and blocks agree");
            inner.used_bytes -= charge(&old);
        }
        inner.clock += 1;
        let clock = inner.clock;
        inner.lru.insert(clock, (table_id, offset));
        inner.blocks.insert((table_id, offset), (block, clock));
        inner.used_bytes += cost;
        debug_assert!(inner.used_bytes <= self.capacity_bytes);
    }

    /// Drops every block of table `table_id` (the table was deleted).
    pub fn remove_table(&self, table_id: u64) {
        let mut inner = self.inner.borrow_mut();
        let keys: Vec<BlockKey> = inner
            .blocks
            .keys()
            .filter(|(id, _)| *id == table_id)
            .copied()
            .collect();
        for key in keys {
            inner.remove(key);
        }
    }

    /// Lookups that found their block.
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    /// Lookups that did not.
    pub fn misses(&self) -> u64 {
        self.misses.get()
    }

    /// Bytes charged for the cached blocks (payloads plus [`ENTRY_OVERHEAD_BYTES`] each).
    pub fn used_bytes(&self) -> usize {
        self.inner.borrow().used_bytes
    }

    /// The budget.
    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    /// Blocks cached.
    pub fn len(&self) -> usize {
        self.inner.borrow().blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn remove(&mut self, key: BlockKey) {
        if let Some((block, used)) = self.blocks.remove(&key) {
            self.lru.remove(&used);
            self.used_bytes -= charge(&block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(len: usize) -> Bytes {
        Bytes::from(vec![1u8; len])
    }

    #[test]
    fn eviction_keeps_the_budget_and_drops_the_least_recently_used() {
        let per_block = 1000 + ENTRY_OVERHEAD_BYTES;
        let cache = BlockCache::new(3 * per_block);
        for offset in 0..3 {
            cache.insert(1, offset, block(1000));
        }
        assert_eq!(cache.used_bytes(), 3 * per_block);
        assert!(cache.get(1, 0).is_some()); // 0 is now the most recently used
        cache.insert(1, 3, block(1000)); // evicts 1
        assert!(cache.used_bytes() <= cache.capacity_bytes());
        assert!(cache.get(1, 1).is_none());
        assert!(cache.get(1, 0).is_some());
        assert!(cache.get(1, 2).is_some());
        assert!(cache.get(1, 3).is_some());
        assert_eq!((cache.hits(), cache.misses()), (4, 1));
        // Many inserts of varied sizes never exceed the budget.
        for i in 0..500u64 {
            cache.insert(2, i, block((i as usize * 37) % 2500));
            assert!(cache.used_bytes() <= cache.capacity_bytes());
        }
    }

    #[test]
    fn oversized_blocks_and_zero_capacity_cache_nothing() {
        let cache = BlockCache::new(100);
        cache.insert(1, 0, block(100));
        assert!(cache.is_empty());
        let off = BlockCache::new(0);
        off.insert(1, 0, block(1));
        assert!(off.get(1, 0).is_none());
        assert_eq!(off.misses(), 1);
    }

    #[test]
    fn reinsert_replaces_and_remove_table_frees_its_blocks() {
        let cache = BlockCache::new(1 << 20);
        cache.insert(1, 0, block(10));
        cache.insert(1, 0, block(20));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.used_bytes(), 20 + ENTRY_OVERHEAD_BYTES);
        cache.insert(2, 0, block(30));
        cache.insert(1, 4096, block(40));
        cache.remove_table(1);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.used_bytes(), 30 + ENTRY_OVERHEAD_BYTES);
        assert!(cache.get(2, 0).is_some());
        assert!(cache.get(1, 4096).is_none());
    }
}
