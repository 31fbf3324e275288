//! Fault injection (`ringkv admin fault`): make this node drop or delay the internal
//! traffic it sends to chosen peers, for tests and for operators rehearsing failures.
//!
//! A FAULT request carries a [`FaultChange`]; the shard that receives it applies it to
//! the node's [`Faults`] and sends the result to every shard, whose outgoing internal
//! requests ([`super::peers::Peers`]: replica reads and writes, hints, gossip) consult
//! it. A dropped request is never sent and fails after the request's timeout, as one
//! lost on the wire would; a delayed one waits before it is sent. Client traffic is
//! untouched. To cut a link both ways (a partition), apply the drop on both sides.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ring::cluster::NodeId;

/// Most peers one change may name.
pub const PEERS_MAX: usize = 4096;

/// One `ringkv admin fault` invocation: `heal` first (clear everything), then the rest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultChange {
    pub heal: bool,
    /// Start dropping everything sent to these nodes.
    pub drop_to: Vec<NodeId>,
    /// Set the delay of everything sent to `delay_to` (every peer, if empty).
    pub delay_ms: Option<u32>,
    pub delay_to: Vec<NodeId>,
}

impl FaultChange {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a fault change always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<FaultChange, String> {
        let change: FaultChange =
            postcard::from_bytes(bytes).map_err(|e| format!("fault spec does not decode: {e}"))?;
        if change.drop_to.len() > PEERS_MAX || change.delay_to.len() > PEERS_MAX {
            return Err(format!("a fault change names more than {PEERS_MAX} peers"));
        }
        Ok(change)
    }
}

/// The faults in force on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    pub drop_to: BTreeSet<NodeId>,
    /// `(delay, peers)`; no peers named: every peer.
    pub delay: Option<(Duration, BTreeSet<NodeId>)>,
}

/// What happens to one request to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Send,
    Drop,
    DelayThenSend(Duration),
}

impl Faults {
    pub fn apply(&mut self, change: &FaultChange) {
        if change.heal {
            *self = Faults::default();
        }
        self.drop_to.extend(change.drop_to.iter().copied());
        if let Some(ms) = change.delay_ms {
            self.delay = (ms > 0).then(|| {
                let peers = change.delay_to.iter().copied().collect();
                (Duration::from_millis(u64::from(ms)), peers)
            });
        }
    }

    /// The fate of a request to `to` (`None`: a peer known only by address, a seed).
    pub fn fate(&self, to: Option<NodeId>) -> Fate {
        if to.is_some_and(|node| self.drop_to.contains(&node)) {
            return Fate::Drop;
        }
        match &self.delay {
            Some((delay, peers))
                if peers.is_empty() || to.is_some_and(|node| peers.contains(&node)) =>
            {
                Fate::DelayThenSend(*delay)
            }
            _ => Fate::Send,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.drop_to.is_empty() && self.delay.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_and_delays_apply_to_the_named_peers_and_heal_clears_them() {
        let mut faults = Faults::default();
        assert_eq!(faults.fate(Some(3)), Fate::Send);
        faults.apply(&FaultChange {
            drop_to: vec![3],
            ..FaultChange::default()
        });
        faults.apply(&FaultChange {
            drop_to: vec![5],
            delay_ms: Some(40),
            delay_to: vec![7],
            ..FaultChange::default()
        });
        assert_eq!(faults.fate(Some(3)), Fate::Drop);
        assert_eq!(faults.fate(Some(5)), Fate::Drop, "drops accumulate");
        assert_eq!(
            faults.fate(Some(7)),
            Fate::DelayThenSend(Duration::from_millis(40))
        );
        assert_eq!(faults.fate(Some(9)), Fate::Send);
        assert_eq!(faults.fate(None), Fate::Send);
        // A delay for every peer, seeds included.
        faults.apply(&FaultChange {
            delay_ms: Some(10),
            ..FaultChange::default()
        });
        assert_eq!(
            faults.fate(None),
            Fate::DelayThenSend(Duration::from_millis(10))
        );
        faults.apply(&FaultChange {
            heal: true,
            ..FaultChange::default()
        });
        assert!(faults.is_empty());
    }

    #[test]
    fn changes_round_trip_and_garbage_is_refused() {
        let change = FaultChange {
            heal: true,
            drop_to: vec![1, 2],
            delay_ms: Some(5),
            delay_to: vec![3],
        };
        assert_eq!(FaultChange::decode(&change.encode()).unwrap(), change);
        assert!(FaultChange::decode(&[0xff; 16]).is_err());
        let encoded = change.encode();
        for len in 0..encoded.len() {
            let _ = FaultChange::decode(&encoded[..len]);
        }
    }
}
