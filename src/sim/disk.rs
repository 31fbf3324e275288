//! A simulated node's disk: the key → version set store and the hint log, both durable
//! only once a simulated fdatasync completed.
//!
//! Every write is a record appended to one queue and given the time its fdatasync
//! completes (`durable_at_us`, in append order: a sync never overtakes an earlier one).
//! A crash keeps exactly the records whose sync completed by then and loses the rest,
//! as a power loss does to a commit log.
//!
//! What reads see follows the engine's `batch` sync mode: a record becomes visible once
//! the node has observed its sync ([`Disk::synced`]), never before, so no read returns
//! a version a crash could take back; the next write of a key builds on the newest
//! *pending* set of the key, as the engine's group commit does. With
//! [`Disk::visible_before_sync`] (the broken variant `ack_before_sync`), a record is
//! visible as soon as it is appended — the engine's `periodic` mode — and the crash then
//! takes back what clients were already shown.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::ring::cluster::NodeId;
use crate::version::VersionSet;

/// One hint in the hint log: the set a preferred replica is owed.
#[derive(Clone, Debug)]
pub(super) struct HintRecord {
    pub target: NodeId,
    pub key: Bytes,
    /// The encoded version set, as the coordinator sent it.
    pub set: Bytes,
    pub written_at_us: u64,
    /// A stand-in's hint, which counted toward W: the window never drops it.
    pub counted: bool,
}

/// A record of the log.
#[derive(Clone, Debug)]
enum Record {
    /// The key's new set (a coordinated write, or a merge of a replica write).
    /// `own`: a write this node coordinated (its dot), not a merge of another's set.
    Data {
        key: Bytes,
        set: VersionSet,
        own: bool,
    },
    Hint(HintRecord),
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    durable_at_us: u64,
    record: Record,
}

/// The disk of one node. Survives [`Disk::crash`] minus what was not yet synced.
#[derive(Debug, Default)]
pub(super) struct Disk {
    /// What a crash keeps: every record whose fdatasync completed.
    durable: BTreeMap<Bytes, VersionSet>,
    /// What reads see (module doc).
    visible: BTreeMap<Bytes, VersionSet>,
    /// The durable hint log, by record sequence number.
    hints: BTreeMap<u64, HintRecord>,
    /// Appended, not yet known synced: oldest first.
    pending: VecDeque<Pending>,
    /// The newest pending set of each key and its record: what the next write builds on.
    newest_pending: BTreeMap<Bytes, (u64, VersionSet)>,
    /// When the newest fdatasync completes (syncs complete in append order).
    last_durable_at_us: u64,
    next_seq: u64,
    /// The broken variant `ack_before_sync`: records are visible when appended.
    pub visible_before_sync: bool,
}

impl Disk {
    /// The set a write of `key` builds on, and the pending record it comes from if it
    /// is not durable yet (a merge that adds nothing still waits for that one).
    pub fn building_on(&self, key: &[u8]) -> (VersionSet, Option<u64>) {
        match self.newest_pending.get(key) {
            Some((seq, set)) => (set.clone(), Some(*seq)),
            None => (self.visible.get(key).cloned().unwrap_or_default(), None),
        }
    }

    /// What a read of `key` returns.
    pub fn read(&self, key: &[u8]) -> Option<&VersionSet> {
        self.visible.get(key)
    }

    /// Every key and set a crash would keep.
    pub fn durable(&self) -> &BTreeMap<Bytes, VersionSet> {
        &self.durable
    }

    /// Appends the key's new set at `now_us`; its fdatasync takes `sync_us`. Returns
    /// the record's sequence number and when it is durable.
    pub fn write(
        &mut self,
        key: Bytes,
        set: VersionSet,
        own: bool,
        now_us: u64,
        sync_us: u64,
    ) -> (u64, u64) {
        let appended = self.append(
            Record::Data {
                key: key.clone(),
                set: set.clone(),
                own,
            },
            now_us,
            sync_us,
        );
        if self.visible_before_sync {
            merge_into(&mut self.visible, &key, &set);
        } else {
            self.newest_pending.insert(key, (appended.0, set));
        }
        appended
    }

    /// Appends a hint record (durable, and replayable, once synced).
    pub fn write_hint(&mut self, hint: HintRecord, now_us: u64, sync_us: u64) -> (u64, u64) {
        self.append(Record::Hint(hint), now_us, sync_us)
    }

    fn append(&mut self, record: Record, now_us: u64, sync_us: u64) -> (u64, u64) {
        self.next_seq += 1;
        let durable_at_us = now_us.max(self.last_durable_at_us) + sync_us;
        self.last_durable_at_us = durable_at_us;
        self.pending.push_back(Pending {
            seq: self.next_seq,
            durable_at_us,
            record,
        });
        (self.next_seq, durable_at_us)
    }

    /// The node observes the syncs completed by `now_us`: their records become durable
    /// and visible. Returns their sequence numbers, oldest first.
    pub fn synced(&mut self, now_us: u64) -> Vec<u64> {
        let mut done = Vec::new();
        while self
            .pending
            .front()
            .is_some_and(|p| p.durable_at_us <= now_us)
        {
            let p = self.pending.pop_front().expect("checked");
            self.make_durable(p.seq, p.record, true);
            done.push(p.seq);
        }
        done
    }

    fn make_durable(&mut self, seq: u64, record: Record, observed: bool) {
        match record {
            Record::Data { key, set, .. } => {
                merge_into(&mut self.durable, &key, &set);
                if observed && !self.visible_before_sync {
                    merge_into(&mut self.visible, &key, &set);
                    if self
                        .newest_pending
                        .get(&key)
                        .is_some_and(|(s, _)| *s == seq)
                    {
                        self.newest_pending.remove(&key);
                    }
                }
            }
            Record::Hint(hint) => {
                self.hints.insert(seq, hint);
            }
        }
    }

    /// A crash at `now_us`: the records synced by then are kept, the rest are lost; what
    /// reads see is what was kept. Returns how many records were lost.
    pub fn crash(&mut self, now_us: u64) -> u64 {
        let mut lost = 0;
        while let Some(p) = self.pending.pop_front() {
            if p.durable_at_us <= now_us {
                self.make_durable(p.seq, p.record, false);
            } else {
                lost += 1;
            }
        }
        self.newest_pending.clear();
        self.visible = self.durable.clone();
        self.last_durable_at_us = now_us;
        lost
    }

    /// Whether a crash at `now_us` would lose a write this node coordinated.
    pub fn has_unsynced_own(&self, now_us: u64) -> bool {
        // Syncs complete in append order: the unsynced records are the newest.
        self.pending
            .iter()
            .rev()
            .take_while(|p| p.durable_at_us > now_us)
            .any(|p| matches!(p.record, Record::Data { own: true, .. }))
    }

    /// The durable hint of record `seq` (`None`: not synced yet, or deleted).
    pub fn hint(&self, seq: u64) -> Option<&HintRecord> {
        self.hints.get(&seq)
    }

    /// Every durable hint, oldest first (what a restart takes back into its book).
    pub fn hints(&self) -> impl Iterator<Item = (u64, &HintRecord)> + '_ {
        self.hints.iter().map(|(&seq, h)| (seq, h))
    }

    /// Deletes a hint (acknowledged by its target, or past the window). Deleting is
    /// durable at once: a hint replayed twice is harmless, so the order does not matter.
    pub fn delete_hint(&mut self, seq: u64) {
        self.hints.remove(&seq);
        self.pending.retain(|p| p.seq != seq);
    }
}

fn merge_into(map: &mut BTreeMap<Bytes, VersionSet>, key: &Bytes, set: &VersionSet) {
    let merged = match map.get(key) {
        Some(stored) => stored.sync(set),
        None => set.clone(),
    };
    map.insert(key.clone(), merged);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Context, Versioned};

    fn set(node: NodeId, value: &'static str) -> VersionSet {
        let v = Versioned {
            timestamp_us: 1,
            value: Some(Bytes::from_static(value.as_bytes())),
        };
        VersionSet::coordinate(&VersionSet::empty(), &Context::empty(), v, node, 1)
    }

    #[test]
    fn a_crash_keeps_what_was_synced_and_reads_see_only_that() {
        let mut d = Disk::default();
        let k = Bytes::from_static(b"k");
        let (first, at) = d.write(k.clone(), set(1, "a"), true, 0, 10);
        assert!(d.read(&k).is_none(), "not visible before its sync");
        assert_eq!(d.building_on(&k).1, Some(first));
        assert_eq!(d.synced(at), [first]);
        assert!(d.read(&k).is_some());
        let (_, later) = d.write(k.clone(), set(3, "b"), false, at, 10);
        assert!(!d.has_unsynced_own(at));
        assert!(later > at);
        d.crash(later - 1);
        assert_eq!(d.read(&k), Some(&set(1, "a")));
        assert_eq!(d.durable().len(), 1);
    }

    #[test]
    fn synced_but_unobserved_records_survive_a_crash() {
        let mut d = Disk::default();
        let k = Bytes::from_static(b"k");
        let (_, at) = d.write(k.clone(), set(1, "a"), true, 0, 10);
        assert!(d.has_unsynced_own(at - 1) && !d.has_unsynced_own(at));
        d.crash(at);
        assert_eq!(d.read(&k), Some(&set(1, "a")));
    }
}
