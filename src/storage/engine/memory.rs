//! The in-memory layers of the engine: the active memtable and the sealed ones waiting
//! for their flush.
//!
//! A [`Generation`] is one memtable's life: it takes writes while active, is sealed
//! when it reaches the flush threshold (a fresh one takes over at once), and is dropped
//! once its table is live. Reads look at the active generation, then the sealed ones
//! newest first, and stop at the first that holds the key: every write builds on what
//! the engine held for the key (read-merge-write), so the newest layer's set descends
//! from all older ones.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use super::super::memtable::Memtable;
use crate::version::VersionSet;

/// One memtable and what its flush must wait for.
#[derive(Default)]
pub struct Generation {
    pub table: RefCell<Memtable>,
    /// Writes whose records went to the log while this generation was active and that
    /// have not merged into it yet (batch sync: they merge once durable). The flush
    /// waits for zero, so that a record below the log floor is never left out of the
    /// table that lets its segment go.
    pub inflight: Cell<usize>,
    /// Set once sealed and the log has rolled: the segment id below which the log holds
    /// only records of this and older generations.
    pub log_floor: Cell<Option<u64>>,
}

impl Generation {
    /// Whether the flush may start: sealed, rolled, and no write still to merge.
    pub fn ready_to_flush(&self) -> bool {
        self.log_floor.get().is_some() && self.inflight.get() == 0
    }

    pub fn bytes(&self) -> usize {
        self.table.borrow().approximate_bytes()
    }
}

pub struct Memory {
    active: RefCell<Rc<Generation>>,
    /// Oldest first: flushes go in this order.
    sealed: RefCell<VecDeque<Rc<Generation>>>,
}

impl Memory {
    pub fn new(memtable: Memtable) -> Memory {
        let active = Generation {
            table: RefCell::new(memtable),
            ..Generation::default()
        };
        Memory {
            active: RefCell::new(Rc::new(active)),
            sealed: RefCell::default(),
        }
    }

    pub fn active(&self) -> Rc<Generation> {
        self.active.borrow().clone()
    }

    /// `f` of the key's set in the newest generation that holds it: one lookup per
    /// generation, newest first.
    pub fn find<R>(&self, key: &[u8], f: impl FnOnce(&VersionSet) -> R) -> Option<R> {
        let active = self.active.borrow();
        let sealed = self.sealed.borrow();
        let newest_first = std::iter::once(&*active).chain(sealed.iter().rev());
        for generation in newest_first {
            if let Some(versions) = generation.table.borrow().get(key) {
                return Some(f(versions));
            }
        }
        None
    }

    /// Every key of every generation, newest generation first (a key in two is seen
    /// twice, the newest copy first).
    pub fn for_each_newest(&self, mut f: impl FnMut(&bytes::Bytes, &VersionSet)) {
        let active = self.active.borrow();
        let sealed = self.sealed.borrow();
        for generation in std::iter::once(&*active).chain(sealed.iter().rev()) {
            for (key, versions) in generation.table.borrow().iter() {
                f(key, versions);
            }
        }
    }

    /// The key's set in the newest generation that holds it.
    pub fn get(&self, key: &[u8]) -> Option<VersionSet> {
        self.find(key, VersionSet::clone)
    }

    /// Seals the active generation behind a fresh one and returns it.
    pub fn seal(&self) -> Rc<Generation> {
        let sealed = std::mem::take(&mut *self.active.borrow_mut());
        self.sealed.borrow_mut().push_back(sealed.clone());
        sealed
    }

    /// The oldest sealed generation: the next to flush.
    pub fn oldest_sealed(&self) -> Option<Rc<Generation>> {
        self.sealed.borrow().front().cloned()
    }

    /// Drops the oldest sealed generation, `flushed`, once its table is live.
    pub fn remove_flushed(&self, flushed: &Rc<Generation>) {
        let removed = self.sealed.borrow_mut().pop_front();
        assert!(
            removed.is_some_and(|g| Rc::ptr_eq(&g, flushed)),
            "flushes go oldest first"
        );
    }

    pub fn sealed_count(&self) -> usize {
        self.sealed.borrow().len()
    }

    pub fn active_bytes(&self) -> usize {
        self.active.borrow().bytes()
    }

    /// Memory held by every generation (approximate).
    pub fn bytes(&self) -> usize {
        self.active_bytes()
            + self
                .sealed
                .borrow()
                .iter()
                .map(|g| g.bytes())
                .sum::<usize>()
    }

    /// Keys in every generation (a key in two counts twice).
    pub fn key_count(&self) -> usize {
        let count = |g: &Rc<Generation>| g.table.borrow().len();
        count(&self.active.borrow()) + self.sealed.borrow().iter().map(count).sum::<usize>()
    }
}
