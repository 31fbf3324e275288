//! Where a write goes when some of its preferred replicas are Down: sloppy or strict
//! quorum (DESIGN.md §6).
//!
//! - **Strict:** only the preference list counts. Down replicas are not sent to; if
//!   fewer than W preferred replicas are Up, the write is refused at once
//!   (`Unavailable`), so a minority partition never acknowledges a write.
//! - **Sloppy** (the default): each Down preferred replica is stood in for by the next
//!   Up node past the preference list, in the ring's walk order
//!   ([`crate::ring::cluster::Ring::fallbacks`]). The stand-in stores the write under a
//!   hint naming the replica it stands in for, by node id, and hands it over once that
//!   node is Up again; its acknowledgement counts toward W.
//!
//! Decide only: the coordinator asks the failure detector who is Up, calls
//! [`write_targets`], and sends.

use crate::ring::cluster::{NodeId, Replica};

/// Which replicas a write's acknowledgements may come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QuorumMode {
    /// Preferred replicas, and stand-ins for the Down ones.
    #[default]
    Sloppy,
    /// Preferred replicas only.
    Strict,
}

/// One replica a write is sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub replica: Replica,
    /// The preferred replica this one stands in for (sloppy quorum): the write is kept
    /// as a hint for that node, not as this node's own data.
    pub hint_for: Option<NodeId>,
}

/// The replicas a write goes to: the Up preferred replicas, then (sloppy) one stand-in
/// per Down preferred replica, taken in order from `fallbacks` among the Up nodes.
/// Fewer targets than preferred replicas when stand-ins run out (strict: whenever one
/// is Down).
pub fn write_targets(
    preferred: &[Replica],
    fallbacks: &[Replica],
    is_up: impl Fn(NodeId) -> bool,
    mode: QuorumMode,
) -> Vec<Target> {
    let mut targets: Vec<Target> = preferred
        .iter()
        .filter(|r| is_up(r.node_id))
        .map(|&replica| Target {
            replica,
            hint_for: None,
        })
        .collect();
    if mode == QuorumMode::Sloppy {
        let mut stand_ins = fallbacks.iter().filter(|r| is_up(r.node_id));
        for down in preferred.iter().filter(|r| !is_up(r.node_id)) {
            let Some(&replica) = stand_ins.next() else {
                break;
            };
            targets.push(Target {
                replica,
                hint_for: Some(down.node_id),
            });
        }
    }
    targets
}

/// Whether a write with these targets can reach `needed` acknowledgements; `Err` with
/// how many it could get (the coordinator answers `Unavailable` without sending).
pub fn check_available(targets: &[Target], needed: usize) -> Result<(), usize> {
    if targets.len() >= needed {
        Ok(())
    } else {
        Err(targets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(node_id: NodeId) -> Replica {
        Replica { node_id, shard: 0 }
    }

    fn plan(down: &[NodeId], mode: QuorumMode) -> Vec<(NodeId, Option<NodeId>)> {
        let preferred = [r(1), r(3), r(5)];
        let fallbacks = [r(7), r(9), r(11)];
        write_targets(&preferred, &fallbacks, |n| !down.contains(&n), mode)
            .iter()
            .map(|t| (t.replica.node_id, t.hint_for))
            .collect()
    }

    #[test]
    fn all_up_goes_to_the_preference_list_alone() {
        for mode in [QuorumMode::Sloppy, QuorumMode::Strict] {
            assert_eq!(plan(&[], mode), [(1, None), (3, None), (5, None)]);
        }
    }

    #[test]
    fn sloppy_stands_in_for_each_down_replica_with_the_next_up_node() {
        assert_eq!(
            plan(&[3], QuorumMode::Sloppy),
            [(1, None), (5, None), (7, Some(3))]
        );
        // The first fallback is Down too: the next one stands in.
        assert_eq!(
            plan(&[3, 5, 7], QuorumMode::Sloppy),
            [(1, None), (9, Some(3)), (11, Some(5))]
        );
    }

    #[test]
    fn sloppy_runs_out_of_stand_ins_gracefully() {
        let targets = plan(&[1, 3, 5, 7, 9], QuorumMode::Sloppy);
        assert_eq!(targets, [(11, Some(1))]);
    }

    #[test]
    fn strict_counts_only_the_preference_list_so_a_minority_refuses() {
        // Two of three preferred replicas Down (a minority partition's view).
        let strict = write_targets(
            &[r(1), r(3), r(5)],
            &[r(7)],
            |n| n == 1 || n == 7,
            QuorumMode::Strict,
        );
        assert_eq!(check_available(&strict, 2), Err(1));
        // The same partition under sloppy quorum finds a stand-in and can go on.
        let sloppy = write_targets(
            &[r(1), r(3), r(5)],
            &[r(7)],
            |n| n == 1 || n == 7,
            QuorumMode::Sloppy,
        );
        assert_eq!(check_available(&sloppy, 2), Ok(()));
        assert_eq!(sloppy[1].hint_for, Some(3));
    }
}
