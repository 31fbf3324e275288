//! Replication decisions: how many replicas must answer ([`needed`]), when a request
//! has its quorum ([`quorum::WriteQuorum`], [`quorum::ReadQuorum`]), and which replicas
//! a read found stale (read repair), and where a write goes when replicas are Down
//! ([`placement`]: sloppy or strict quorum), and the hints kept for Down replicas
//! ([`hints`]: bounded by bytes and by the hint window, replayed oldest first).
//!
//! Decide, then do: everything here is synchronous and owns no I/O. The coordinator's
//! glommio tasks send the replica requests, feed each answer (or timeout) in, and act
//! on what comes out; tests and the simulator drive the same code without a runtime.

pub mod hints;
pub mod placement;
pub mod quorum;

pub use crate::protocol::Consistency;

/// Answers needed out of `n` replicas for a request at `consistency`, where
/// [`Consistency::Default`] means the server's `default` level. May exceed `n` (an
/// explicit count larger than the replication factor): such a request can never
/// succeed and fails at once with `Unavailable`.
pub fn needed(consistency: Consistency, default: Consistency, n: usize) -> usize {
    match consistency {
        Consistency::Default if default == Consistency::Default => n / 2 + 1,
        Consistency::Default => needed(default, Consistency::Default, n),
        Consistency::One => 1,
        Consistency::Quorum => n / 2 + 1,
        Consistency::All => n,
        Consistency::Count(k) => usize::from(k.max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_answers_per_level() {
        let d = Consistency::Default;
        assert_eq!(needed(Consistency::One, d, 3), 1);
        assert_eq!(needed(Consistency::Quorum, d, 3), 2);
        assert_eq!(needed(Consistency::Quorum, d, 4), 3);
        assert_eq!(needed(Consistency::Quorum, d, 5), 3);
        assert_eq!(needed(Consistency::Quorum, d, 1), 1);
        assert_eq!(needed(Consistency::All, d, 3), 3);
        assert_eq!(needed(Consistency::Count(2), d, 3), 2);
        assert_eq!(needed(Consistency::Count(5), d, 3), 5);
        // Default: the server's level; a server without one uses QUORUM.
        assert_eq!(needed(d, Consistency::One, 3), 1);
        assert_eq!(needed(d, Consistency::All, 3), 3);
        assert_eq!(needed(d, d, 3), 2);
    }
}
