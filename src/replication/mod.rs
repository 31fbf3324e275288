//! Replication decisions: how many replicas must answer ([`Consistency`]), when a
//! request has its quorum ([`quorum::WriteQuorum`], [`quorum::ReadQuorum`]), and which
//! replicas a read found stale (read repair).
//!
//! Decide, then do: everything here is synchronous and owns no I/O. The coordinator's
//! glommio tasks send the replica requests, feed each answer (or timeout) in, and act
//! on what comes out; tests and the simulator drive the same code without a runtime.

pub mod quorum;

/// How many of a key's N replicas must answer before the coordinator does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    One,
    /// A majority: `N / 2 + 1`.
    Quorum,
    All,
    /// Exactly this many (an explicit R or W), at least 1.
    Count(u8),
}

impl Consistency {
    /// Answers needed out of `n` replicas. May exceed `n` (an explicit count larger than
    /// the replication factor): such a request can never succeed and fails at once
    /// with `Unavailable`.
    pub fn needed(self, n: usize) -> usize {
        match self {
            Consistency::One => 1,
            Consistency::Quorum => n / 2 + 1,
            Consistency::All => n,
            Consistency::Count(k) => usize::from(k.max(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_answers_per_level() {
        assert_eq!(Consistency::One.needed(3), 1);
        assert_eq!(Consistency::Quorum.needed(3), 2);
        assert_eq!(Consistency::Quorum.needed(4), 3);
        assert_eq!(Consistency::Quorum.needed(5), 3);
        assert_eq!(Consistency::Quorum.needed(1), 1);
        assert_eq!(Consistency::All.needed(3), 3);
        assert_eq!(Consistency::Count(2).needed(3), 2);
        assert_eq!(Consistency::Count(0).needed(3), 1);
        assert_eq!(Consistency::Count(5).needed(3), 5);
    }
}
