//! Compaction decisions and the merge they run: pure, synchronous code.
//!
//! Owns *which* tables to compact ([`size_tiered::choose`], a function from table
//! metadata to a [`Choice`], as in fjall's `CompactionStrategy`), how their contents
//! merge ([`merge::MergeIter`]: each key once, the DVVSet `sync` of all its versions)
//! and when a deleted key may be dropped ([`merge::purgeable`]). Never touches files,
//! the executor or the clock: the compaction worker (a glommio task in a low-share
//! queue, DESIGN.md §4) reads the tables, feeds the merge, writes the new table, and
//! swaps it in through the manifest (`storage::manifest`).
//!
//! Because `sync` is commutative, associative and idempotent, a merge may take its
//! inputs in any order and any subset of the tables: no "newer table wins" rule, and
//! no need for the inputs to be adjacent in time.

pub mod merge;
pub mod size_tiered;

pub use merge::{purgeable, without_purgeable, MergeIter};
pub use size_tiered::{choose, SizeTieredOptions};

/// What a compaction should do: merge these tables (by id) into one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// Ids of the input tables, at least two, no duplicates, all in the list given to
    /// the strategy. Smallest size first.
    pub inputs: Vec<u64>,
}
