//! The node's identity and shard layout, kept in `DATA/node.meta`.
//!
//! The node id is a random u64 made on first start (DESIGN.md §5: a wiped disk gets a
//! new id, so DVV counters are never reused). The shard layout (shard count, vnodes per
//! shard, token offset) decides which shard owns which key, and each shard's commit log
//! holds only its own keys: starting the same data dir with another shard count would
//! look in the wrong shard for every moved key, so it is refused. The conflict mode is
//! kept for the same reason: sets written under last-write-wins read as one pseudo-node's
//! history (`crate::version`, "Last write wins"), and switching modes would mix the two
//! kinds of set in one key.
//!
//! Layout (little-endian), 40 bytes:
//!
//! | offset | size | field                                   |
//! |--------|------|-----------------------------------------|
//! | 0      | 8    | magic `RKVMETA\0`                        |
//! | 8      | 4    | format version (1)                      |
//! | 12     | 8    | node id                                 |
//! | 20     | 2    | shard count                             |
//! | 22     | 2    | vnodes per shard                        |
//! | 24     | 8    | token offset                            |
//! | 32     | 1    | conflict mode: 0 = dvv, 1 = lww         |
//! | 33     | 3    | reserved, zero                          |
//! | 36     | 4    | CRC32C of bytes 0..36                   |
//!
//! Written once, atomically: write a temporary file, fsync it, rename, fsync the dir.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::StartupError;
use crate::version::ConflictMode;

const MAGIC: &[u8; 8] = b"RKVMETA\0";
const FORMAT_VERSION: u32 = 1;
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const NODE_ID_OFFSET: usize = VERSION_OFFSET + 4;
const SHARDS_OFFSET: usize = NODE_ID_OFFSET + 8;
const VNODES_OFFSET: usize = SHARDS_OFFSET + 2;
const TOKEN_OFFSET_OFFSET: usize = VNODES_OFFSET + 2;
const CONFLICTS_OFFSET: usize = TOKEN_OFFSET_OFFSET + 8;
const RESERVED_OFFSET: usize = CONFLICTS_OFFSET + 1;
const CRC_OFFSET: usize = RESERVED_OFFSET + 3;
pub const META_LEN: usize = CRC_OFFSET + 4;

pub const META_FILE: &str = "node.meta";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeMeta {
    pub node_id: u64,
    pub shards: u16,
    pub vnodes_per_shard: u16,
    pub token_offset: u64,
    /// Fixed when the node is created (module doc).
    pub conflicts: ConflictMode,
}

impl NodeMeta {
    pub fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(MAGIC);
        b[VERSION_OFFSET..NODE_ID_OFFSET].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[NODE_ID_OFFSET..SHARDS_OFFSET].copy_from_slice(&self.node_id.to_le_bytes());
        b[SHARDS_OFFSET..VNODES_OFFSET].copy_from_slice(&self.shards.to_le_bytes());
        b[VNODES_OFFSET..TOKEN_OFFSET_OFFSET].copy_from_slice(&self.vnodes_per_shard.to_le_bytes());
        b[TOKEN_OFFSET_OFFSET..CONFLICTS_OFFSET].copy_from_slice(&self.token_offset.to_le_bytes());
        b[CONFLICTS_OFFSET] = match self.conflicts {
            ConflictMode::Dvv => 0,
            ConflictMode::Lww => 1,
        };
        let crc = crc32c::crc32c(&b[..CRC_OFFSET]);
        b[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<NodeMeta, String> {
        if b.len() != META_LEN {
            return Err(format!("is {} bytes, expected {META_LEN}", b.len()));
        }
        if &b[MAGIC_OFFSET..VERSION_OFFSET] != MAGIC {
            return Err("bad magic (not a ringkv node.meta)".into());
        }
        let crc = u32::from_le_bytes(b[CRC_OFFSET..].try_into().unwrap());
        if crc != crc32c::crc32c(&b[..CRC_OFFSET]) {
            return Err("CRC32C mismatch".into());
        }
        let version = u32::from_le_bytes(b[VERSION_OFFSET..NODE_ID_OFFSET].try_into().unwrap());
        if version != FORMAT_VERSION {
            return Err(format!(
                "format version {version}, this build reads {FORMAT_VERSION}"
            ));
        }
        let meta = NodeMeta {
            node_id: u64::from_le_bytes(b[NODE_ID_OFFSET..SHARDS_OFFSET].try_into().unwrap()),
            shards: u16::from_le_bytes(b[SHARDS_OFFSET..VNODES_OFFSET].try_into().unwrap()),
            vnodes_per_shard: u16::from_le_bytes(
                b[VNODES_OFFSET..TOKEN_OFFSET_OFFSET].try_into().unwrap(),
            ),
            token_offset: u64::from_le_bytes(
                b[TOKEN_OFFSET_OFFSET..CONFLICTS_OFFSET].try_into().unwrap(),
            ),
            conflicts: match b[CONFLICTS_OFFSET] {
                0 => ConflictMode::Dvv,
                1 => ConflictMode::Lww,
                other => {
                    return Err(format!(
                        "conflict mode {other} is unknown (0 = dvv, 1 = lww)"
                    ))
                }
            },
        };
        if b[RESERVED_OFFSET..CRC_OFFSET] != [0; 3] {
            return Err("reserved bytes are not zero".into());
        }
        if meta.shards == 0 || meta.vnodes_per_shard == 0 {
            return Err("zero shards or vnodes".into());
        }
        Ok(meta)
    }

    /// Loads `dir/node.meta`, or creates it with a fresh node id and the given layout.
    /// A data dir made with another shard count or conflict mode is refused with a
    /// message that says so.
    pub fn load_or_create(
        dir: &Path,
        shards: u16,
        vnodes_per_shard: u16,
        conflicts: ConflictMode,
    ) -> Result<NodeMeta, StartupError> {
        let path = dir.join(META_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                let meta = NodeMeta::decode(&bytes).map_err(|reason| {
                    StartupError::DataDir(format!(
                        "{}: {reason}; refusing to start (restore the file from a backup, \
                         or move the data dir away to start an empty node)",
                        path.display()
                    ))
                })?;
                if meta.shards != shards {
                    return Err(StartupError::DataDir(format!(
                        "{} was created with --shards {}, not {shards}: each shard's data \
                         lives in its own commit log, so start with --shards {}",
                        dir.display(),
                        meta.shards,
                        meta.shards
                    )));
                }
                if meta.conflicts != conflicts {
                    return Err(StartupError::DataDir(format!(
                        "{} was created with --conflicts {}, not {}: its stored versions \
                         are of that kind, so start with --conflicts {}",
                        dir.display(),
                        meta.conflicts.name(),
                        conflicts.name(),
                        meta.conflicts.name()
                    )));
                }
                Ok(meta)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let meta = NodeMeta {
                    node_id: rand::random::<u64>() | 1,
                    shards,
                    vnodes_per_shard,
                    token_offset: rand::random(),
                    conflicts,
                };
                write_atomically(dir, META_FILE, &meta.encode())?;
                Ok(meta)
            }
            Err(source) => Err(StartupError::Io {
                op: "read",
                path,
                source,
            }),
        }
    }
}

/// Writes `dir/name` so that after a crash it holds either nothing or all of `bytes`.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StartupError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StartupError::Io { op, path, source }
    };
    let mut file = fs::File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync dir", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes_and_round_trip() {
        let meta = NodeMeta {
            node_id: 0x0102_0304_0506_0708,
            shards: 2,
            vnodes_per_shard: 16,
            token_offset: 0xAA,
            conflicts: ConflictMode::Lww,
        };
        let bytes = meta.encode();
        assert_eq!(&bytes[..8], b"RKVMETA\0");
        assert_eq!(&bytes[8..12], &[1, 0, 0, 0]);
        assert_eq!(&bytes[12..20], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&bytes[20..24], &[2, 0, 16, 0]);
        assert_eq!(&bytes[24..32], &[0xAA, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[32..36], &[1, 0, 0, 0]);
        let dvv = NodeMeta {
            conflicts: ConflictMode::Dvv,
            ..meta
        };
        assert_eq!(dvv.encode()[32], 0, "dvv is the old reserved zero");
        assert_eq!(NodeMeta::decode(&bytes).unwrap(), meta);
        for i in 0..META_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x10;
            assert!(NodeMeta::decode(&bad).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn another_shard_count_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeMeta::load_or_create(dir.path(), 2, 16, ConflictMode::Dvv).unwrap();
        assert_eq!(
            NodeMeta::load_or_create(dir.path(), 2, 16, ConflictMode::Dvv).unwrap(),
            first
        );
        let err = NodeMeta::load_or_create(dir.path(), 4, 16, ConflictMode::Dvv)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--shards 2"), "{err}");
    }

    #[test]
    fn another_conflict_mode_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeMeta::load_or_create(dir.path(), 2, 16, ConflictMode::Lww).unwrap();
        assert_eq!(first.conflicts, ConflictMode::Lww);
        let err = NodeMeta::load_or_create(dir.path(), 2, 16, ConflictMode::Dvv)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--conflicts lww"), "{err}");
    }
}
