//! The member table a node last knew, kept in `DATA/members`, so that a node restarted
//! without `--seeds` (the first node of a cluster, say) routes with the whole ring from
//! its first request instead of with itself alone until a peer's exchange reaches it.
//! A cache: losing it loses nothing the exchanges do not bring back.
//!
//! Layout (little-endian): magic `RKVMEMB\0` (8) | format version u32 (1) | table_len
//! u32 | the member table as MEMBERS carries it (postcard, docs/protocol.md) |
//! CRC32C u32 of every byte before it. Written atomically.

use std::fs;
use std::path::Path;

use super::node_meta::write_atomically;
use super::sealed;
use crate::error::StartupError;
use crate::membership::MemberTable;

pub const MEMBERS_FILE: &str = "members";
const MAGIC: &[u8; 8] = b"RKVMEMB\0";
const FORMAT_VERSION: u32 = 1;

pub fn encode(table: &MemberTable) -> Vec<u8> {
    let payload = table.encode();
    let len = u32::try_from(payload.len()).expect("a member table under 4 GiB");
    sealed::seal(MAGIC, FORMAT_VERSION, len, &payload)
}

/// Decodes a members file. Never panics.
pub fn decode(b: &[u8]) -> Result<MemberTable, String> {
    let (len, payload) = sealed::open(b, MAGIC, FORMAT_VERSION, "members")?;
    if payload.len() != len as usize {
        return Err(format!("table of {len} bytes in a file of {}", b.len()));
    }
    MemberTable::decode(payload)
}

/// The table stored in `dir`, if any. A damaged file is reported and ignored: the
/// exchanges with the seeds and members rebuild the table.
pub fn load(dir: &Path) -> MemberTable {
    let path = dir.join(MEMBERS_FILE);
    match fs::read(&path) {
        Ok(bytes) => decode(&bytes).unwrap_or_else(|reason| {
            eprintln!(
                "ringkv: {}: {reason}; ignored (the cluster's exchanges rebuild it)",
                path.display()
            );
            MemberTable::default()
        }),
        Err(_) => MemberTable::default(),
    }
}

pub fn store(dir: &Path, table: &MemberTable) -> Result<(), StartupError> {
    write_atomically(dir, MEMBERS_FILE, &encode(table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::MemberInfo;

    fn table() -> MemberTable {
        MemberTable::new([MemberInfo {
            node_id: 7,
            generation: 1,
            host: "127.0.0.1".into(),
            port: 7700,
            shards: 1,
            dc: "dc1".into(),
            rack: "rack1".into(),
            replication_factor: 3,
            conflicts: "dvv".into(),
            tokens: vec![(5, 0)],
        }])
    }

    #[test]
    fn round_trip_and_every_flip_is_caught() {
        let bytes = encode(&table());
        assert_eq!(
            &bytes[..16],
            &[
                b'R',
                b'K',
                b'V',
                b'M',
                b'E',
                b'M',
                b'B',
                0,
                1,
                0,
                0,
                0,
                (bytes.len() - 20) as u8,
                0,
                0,
                0
            ]
        );
        assert_eq!(decode(&bytes).unwrap(), table());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn a_missing_or_damaged_file_is_an_empty_table() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_empty());
        store(dir.path(), &table()).unwrap();
        assert_eq!(load(dir.path()), table());
        fs::write(dir.path().join(MEMBERS_FILE), b"junk").unwrap();
        assert!(load(dir.path()).is_empty());
    }
}
