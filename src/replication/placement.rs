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

pub use crate::protocol::QuorumMode;

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

/// What the node a client wrote to does with the write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WritePlan {
    /// This node is one of the targets: it coordinates (writes locally, which makes the
    /// new version's dot its own, then sends to the other targets). `me` is among
    /// `targets`; if its `hint_for` is set, this node stands in and keeps a hint too.
    Coordinate { targets: Vec<Target> },
    /// Another node must coordinate: try these, in order, until one answers.
    Forward { to: Vec<Replica> },
    /// Fewer than `needed` targets are Up: refuse without sending.
    Unavailable { reachable: usize, needed: usize },
}

/// Plans a write that reached node `me` (always Up in its own eyes): the targets of
/// [`write_targets`], checked against `needed`. A preferred replica coordinates: this
/// node if it is one of them, else the write goes to the targets in order (Up
/// preferred replicas first). A stand-in coordinates only when no preferred replica is
/// Up (DESIGN.md §3.2: the coordinator is a replica while one can be).
pub fn plan_write(
    me: NodeId,
    preferred: &[Replica],
    fallbacks: &[Replica],
    is_up: impl Fn(NodeId) -> bool,
    mode: QuorumMode,
    needed: usize,
) -> WritePlan {
    let targets = write_targets(preferred, fallbacks, |n| n == me || is_up(n), mode);
    if let Err(reachable) = check_available(&targets, needed) {
        return WritePlan::Unavailable { reachable, needed };
    }
    let mine = targets.iter().find(|t| t.replica.node_id == me);
    let a_replica_is_up = targets.iter().any(|t| t.hint_for.is_none());
    let coordinate = match mine {
        Some(t) => t.hint_for.is_none() || !a_replica_is_up,
        None => false,
    };
    if coordinate {
        WritePlan::Coordinate { targets }
    } else {
        // Never to itself: a forwarded write would come back here and be forwarded again.
        WritePlan::Forward {
            to: targets
                .iter()
                .map(|t| t.replica)
                .filter(|r| r.node_id != me)
                .collect(),
        }
    }
}

/// Once every target answered or timed out: the preferred replicas the coordinator
/// keeps a hint for itself, because neither they nor a stand-in for them acknowledged
/// the write (a replica that timed out before the detector held it Down, or a Down one
/// no stand-in was found for). `acked(node)` says whether `node` acknowledged.
pub fn owed_hints(
    preferred: &[Replica],
    targets: &[Target],
    acked: impl Fn(NodeId) -> bool,
) -> Vec<NodeId> {
    preferred
        .iter()
        .map(|r| r.node_id)
        .filter(|&node| {
            let direct = targets
                .iter()
                .any(|t| t.replica.node_id == node && t.hint_for.is_none());
            let stood_in = targets
                .iter()
                .any(|t| t.hint_for == Some(node) && acked(t.replica.node_id));
            !(stood_in || direct && acked(node))
        })
        .collect()
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

    #[test]
    fn the_node_written_to_coordinates_when_it_is_a_target_else_forwards() {
        let preferred = [r(1), r(3), r(5)];
        let fallbacks = [r(7), r(9)];
        let up = |down: &'static [NodeId]| move |n: NodeId| !down.contains(&n);
        match plan_write(3, &preferred, &fallbacks, up(&[]), QuorumMode::Sloppy, 2) {
            WritePlan::Coordinate { targets } => assert_eq!(targets.len(), 3),
            other => panic!("{other:?}"),
        }
        // Not a replica: forward, Up preferred replicas first, then the stand-in.
        assert_eq!(
            plan_write(9, &preferred, &fallbacks, up(&[1]), QuorumMode::Sloppy, 2),
            WritePlan::Forward {
                to: vec![r(3), r(5), r(7)]
            }
        );
        // A stand-in forwards to a preferred replica while one is Up (never to itself)...
        assert_eq!(
            plan_write(7, &preferred, &fallbacks, up(&[1]), QuorumMode::Sloppy, 2),
            WritePlan::Forward {
                to: vec![r(3), r(5)]
            }
        );
        // ...and coordinates (keeping the hint itself) when none is.
        match plan_write(
            7,
            &preferred,
            &fallbacks,
            up(&[1, 3, 5]),
            QuorumMode::Sloppy,
            2,
        ) {
            WritePlan::Coordinate { targets } => {
                assert_eq!(targets[0].replica.node_id, 7);
                assert_eq!(targets[0].hint_for, Some(1));
            }
            other => panic!("{other:?}"),
        }
        // The node itself is always Up in its own eyes, even if it thinks it is not.
        assert!(matches!(
            plan_write(
                1,
                &preferred,
                &fallbacks,
                up(&[1, 3]),
                QuorumMode::Strict,
                2
            ),
            WritePlan::Coordinate { .. }
        ));
        assert_eq!(
            plan_write(
                1,
                &preferred,
                &fallbacks,
                up(&[3, 5]),
                QuorumMode::Strict,
                2
            ),
            WritePlan::Unavailable {
                reachable: 1,
                needed: 2
            }
        );
    }

    #[test]
    fn the_coordinator_owes_a_hint_to_every_preferred_replica_nobody_acked_for() {
        let preferred = [r(1), r(3), r(5)];
        // 5 Down, 7 stood in for it; 3 timed out without being held Down.
        let targets = write_targets(&preferred, &[r(7)], |n| n != 5, QuorumMode::Sloppy);
        assert_eq!(owed_hints(&preferred, &targets, |n| n == 1 || n == 7), [3]);
        // The stand-in failed too: the coordinator keeps 5's hint as well.
        assert_eq!(owed_hints(&preferred, &targets, |n| n == 1), [3, 5]);
        // Everybody acked: nothing owed.
        assert!(owed_hints(&preferred, &targets, |_| true).is_empty());
        // Strict: a Down replica with no stand-in is owed a hint.
        let strict = write_targets(&preferred, &[r(7)], |n| n != 5, QuorumMode::Strict);
        assert_eq!(owed_hints(&preferred, &strict, |_| true), [5]);
    }
}
