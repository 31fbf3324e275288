//! Bounding a key's clock: [`Pruning`], and why dropping entries loses no write.
//!
//! A key's set gets an entry for every node that ever coordinated a write of it. Writes
//! are coordinated by the key's replicas, so in a fixed ring that is at most N entries;
//! but every ring change (a node joining, leaving, being replaced with a new id) can
//! bring new coordinators, and the entries of the old ones would stay forever. DESIGN.md
//! §5: entries of nodes that are no longer replicas of the key and older than
//! `prune_after` are dropped.
//!
//! # The rule
//!
//! [`VersionSet::prune`] drops an entry when all of these hold:
//!
//! - its node is not one of the key's replicas in the current ring
//!   ([`Pruning::replicas`]), and is not the last-write-wins pseudo-node;
//! - it holds no values: every dot of the node was superseded (an entry holding a value
//!   is never dropped, since that would drop the value);
//! - its counter is below [`Pruning::before`]. Coordinators mint counters from a clock
//!   that reads microseconds since the Unix epoch ([`VersionSet::coordinate`]'s
//!   `fresh`), so a counter is about the time of the node's last write to the key after
//!   which its entry held no values. A run of siblings the node coordinated after that
//!   counts `+1` each, so the age errs early by at most the length of such a run.
//!
//! Every node applies the rule to the sets it makes: a coordinator to the set it writes
//! and to the merge it answers a read with, a replica to every merge it stores. With
//! the same ring and about the same time they agree, so read repair converges instead
//! of re-adding an entry one replica just dropped.
//!
//! # Why no write is lost
//!
//! A dropped entry `(X, c, [])` said "dots `(X, 1..=c)` were seen and superseded". Two
//! things could go wrong without it:
//!
//! - **A dot minted twice.** If `X`'s own copy lost the entry and `X` later coordinates
//!   again (a ring change made it a replica again), plain counters would restart at 1,
//!   and every copy still holding `(X, c, [])` would take the new write `(X, 1)` for a
//!   superseded one: a lost write (the bug Riak calls KV679). Here a node's entry that
//!   holds no values jumps to `max(counter + 1, fresh)` and the shard's clock stays above
//!   every counter it minted, across restarts (the manifest's clock floor): the new dot
//!   is above every old one, and the old copies' floors cover nothing new.
//! - **A superseded value coming back.** A stale copy that still holds `(X, c, [v])`
//!   merged into a set without `X`'s entry brings `v` back, as a sibling of whatever
//!   superseded it. That is the documented loss of precision (as in Dynamo's clock
//!   truncation): the client sees a sibling it already resolved and resolves it again;
//!   no value it wrote is missing. `prune_after` (a day by default) leaves read repair
//!   and anti-entropy that long to bring stale copies up to date first.
//!
//! The property test `pruning_never_loses_a_write` plays random histories with pruning
//! anywhere (the age test switched off: every valueless non-replica entry dropped at
//! once) and checks that every write no context covered survives.
//!
//! # The bound
//!
//! After pruning, a set holds entries of: the key's N replicas, the nodes with a live
//! sibling (at most `siblings_max`), and nodes that coordinated within `prune_after`
//! and have since stopped being replicas.

use super::dvvset::VersionSet;
use super::{NodeId, LWW_NODE};

/// Which entries [`VersionSet::prune`] may drop (module doc).
#[derive(Clone, Copy, Debug)]
pub struct Pruning<'a> {
    /// The key's replicas in the current ring: their entries are kept.
    pub replicas: &'a [NodeId],
    /// Entries whose counter is below this may go: the coordinator's clock (µs since
    /// the epoch) minus `prune_after`. 0 keeps everything.
    pub before: u64,
}

impl Pruning<'static> {
    /// Drops nothing: for a single engine with no ring, tests and benchmarks.
    pub const NONE: Pruning<'static> = Pruning {
        replicas: &[],
        before: 0,
    };
}

impl<'a> Pruning<'a> {
    /// Entries of nodes other than `replicas` that stopped changing more than
    /// `after_us` before `now_us`.
    pub fn older_than(replicas: &'a [NodeId], now_us: u64, after_us: u64) -> Pruning<'a> {
        Pruning {
            replicas,
            before: now_us.saturating_sub(after_us),
        }
    }

    fn drops(&self, node: NodeId, counter: u64, values: usize) -> bool {
        self.may_drop(node, counter, values) && !self.replicas.contains(&node)
    }

    /// The age and value tests alone, before anyone looks up the key's replicas.
    fn may_drop(&self, node: NodeId, counter: u64, values: usize) -> bool {
        node != LWW_NODE && values == 0 && counter < self.before
    }
}

impl VersionSet {
    /// Drops the entries `rule` allows (module doc); returns how many went. Values are
    /// never dropped.
    pub fn prune(&mut self, rule: &Pruning) -> usize {
        if !self.may_prune(rule) {
            return 0;
        }
        let before = self.entries.len();
        self.entries
            .retain(|e| !rule.drops(e.node, e.counter, e.values.len()));
        before - self.entries.len()
    }

    /// Whether `rule` could drop an entry if none of the nodes were a replica: a cheap
    /// test that lets callers skip finding the key's replicas.
    pub fn may_prune(&self, rule: &Pruning) -> bool {
        self.entries
            .iter()
            .any(|e| rule.may_drop(e.node, e.counter, e.values.len()))
    }
}
