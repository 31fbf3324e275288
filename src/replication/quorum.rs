//! Quorum tracking for one coordinated request.
//!
//! A tracker knows the key's replicas and how many must succeed. Each replica's answer
//! (or failure: refused, timed out, unreachable) is recorded once; [`Progress`] says
//! whether the request can answer yet, must fail, or waits. A replica that answers
//! twice, or a node that is not a replica, changes nothing: a late duplicate from a
//! retried connection must not count twice toward W.
//!
//! A read tracker also keeps every version set it received (a replica without the key
//! counts as the empty set). Their merge (DVVSet sync:
//! dominated versions dropped, concurrent ones kept as siblings) is the answer, and any
//! replica whose set does not hold the same knowledge as the merge is stale: read
//! repair sends it the merge.

use crate::ring::cluster::NodeId;
use crate::version::VersionSet;

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Fewer than needed succeeded, but enough are still pending.
    Waiting,
    /// Enough replicas succeeded: answer the client.
    Succeeded,
    /// Too many failed for the rest to make up the count: answer `Unavailable`.
    Failed,
}

/// Why a request could not get its quorum, for the client's `Unavailable` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    pub needed: usize,
    pub replicas: usize,
    pub succeeded: usize,
    /// Replicas that answered with an error or could not be reached, and why.
    pub failed: Vec<(NodeId, String)>,
    /// Replicas that had not answered when the coordinator gave up.
    pub pending: usize,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "needed {} of {} replicas, {} succeeded, {} failed",
            self.needed,
            self.replicas,
            self.succeeded,
            self.failed.len()
        )?;
        if self.pending > 0 {
            write!(f, ", {} did not answer in time", self.pending)?;
        }
        for (node, why) in &self.failed {
            write!(f, "; node {node:016x}: {why}")?;
        }
        Ok(())
    }
}

/// One replica's slot.
#[derive(Clone, Debug)]
enum Slot<T> {
    Pending,
    Ok(T),
    Failed(String),
}

/// One request's count: `needed` of `replicas` must succeed. A write's answers carry
/// nothing ([`WriteQuorum`]); a read's carry the replica's version set ([`ReadQuorum`]).
#[derive(Clone, Debug)]
pub struct Quorum<T> {
    replicas: Vec<NodeId>,
    slots: Vec<Slot<T>>,
    needed: usize,
}

/// A write waiting for W acknowledgements.
pub type WriteQuorum = Quorum<()>;

/// A read waiting for R answers; a replica without the key answers the empty set.
pub type ReadQuorum = Quorum<VersionSet>;

impl<T> Quorum<T> {
    /// `needed` of `replicas` must succeed (at least 1; more than the replicas is
    /// [`Progress::Failed`] from the start).
    pub fn new(replicas: &[NodeId], needed: usize) -> Self {
        Quorum {
            replicas: replicas.to_vec(),
            slots: replicas.iter().map(|_| Slot::Pending).collect(),
            needed: needed.max(1),
        }
    }

    /// Records `node`'s answer (or why it failed) unless it already answered or is not
    /// a replica.
    pub fn record(&mut self, node: NodeId, answer: Result<T, String>) -> Progress {
        if let Some(i) = self.replicas.iter().position(|&r| r == node) {
            if matches!(self.slots[i], Slot::Pending) {
                self.slots[i] = match answer {
                    Ok(t) => Slot::Ok(t),
                    Err(why) => Slot::Failed(why),
                };
            }
        }
        self.progress()
    }

    fn count(&self, f: impl Fn(&Slot<T>) -> bool) -> usize {
        self.slots.iter().filter(|s| f(s)).count()
    }

    pub fn progress(&self) -> Progress {
        let succeeded = self.count(|s| matches!(s, Slot::Ok(_)));
        let pending = self.count(|s| matches!(s, Slot::Pending));
        if succeeded >= self.needed {
            Progress::Succeeded
        } else if succeeded + pending < self.needed {
            Progress::Failed
        } else {
            Progress::Waiting
        }
    }

    /// Whether every replica answered or failed.
    pub fn all_answered(&self) -> bool {
        self.count(|s| matches!(s, Slot::Pending)) == 0
    }

    /// What the client is told when the request fails or times out.
    pub fn unavailable(&self) -> Unavailable {
        Unavailable {
            needed: self.needed,
            replicas: self.replicas.len(),
            succeeded: self.count(|s| matches!(s, Slot::Ok(_))),
            failed: self
                .replicas
                .iter()
                .zip(&self.slots)
                .filter_map(|(&node, s)| match s {
                    Slot::Failed(why) => Some((node, why.clone())),
                    _ => None,
                })
                .collect(),
            pending: self.count(|s| matches!(s, Slot::Pending)),
        }
    }
}

impl Quorum<VersionSet> {
    /// The merge of every set received so far (empty if none held the key).
    pub fn merged(&self) -> VersionSet {
        self.received()
            .fold(VersionSet::empty(), |merged, (_, set)| merged.sync(set))
    }

    /// Replicas that answered with less than `merged`'s knowledge (a missing key
    /// included): read repair writes `merged` to each. Replicas that failed or have
    /// not answered are not listed; anti-entropy covers them.
    pub fn stale(&self, merged: &VersionSet) -> Vec<NodeId> {
        self.received()
            .filter(|(_, set)| !set.equal(merged))
            .map(|(node, _)| node)
            .collect()
    }

    fn received(&self) -> impl Iterator<Item = (NodeId, &VersionSet)> + '_ {
        self.replicas
            .iter()
            .zip(&self.slots)
            .filter_map(|(&node, s)| match s {
                Slot::Ok(set) => Some((node, set)),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests;
