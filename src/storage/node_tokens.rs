//! The node's ring tokens, kept in `DATA/tokens` once the node has joined a cluster.
//!
//! A node that started alone has no such file: its tokens are
//! [`even_shard_tokens`](crate::ring::even_shard_tokens) of its `node.meta` (shard
//! count, vnodes per shard, token offset). A node that joins through `--seeds` gets its
//! tokens from the balanced allocator ([`crate::ring::allocate`]) against the ring the
//! seed knows, and writes them here before it serves: its tokens decide which shard
//! holds which key, so they never change afterwards.
//!
//! Layout (little-endian):
//!
//! | offset | size      | field                                  |
//! |--------|-----------|----------------------------------------|
//! | 0      | 8         | magic `RKVTOKN\0`                       |
//! | 8      | 4         | format version (1)                     |
//! | 12     | 4         | token count `n` (1..=65536)            |
//! | 16     | 10 × n    | `n × (token u64, shard u16)`, ascending, distinct tokens |
//! | 16+10n | 4         | CRC32C of every byte before it          |
//!
//! Written once, atomically (write, fsync, rename, fsync the directory).

use std::fs;
use std::path::Path;

use super::node_meta::write_atomically;
use super::sealed;
use crate::error::StartupError;
use crate::ring::Token;

pub const TOKENS_FILE: &str = "tokens";
const MAGIC: &[u8; 8] = b"RKVTOKN\0";
const FORMAT_VERSION: u32 = 1;
const ENTRY_BYTES: usize = 10;
/// Most tokens a node may hold: 1024 shards × 64 vnodes.
pub const TOKENS_MAX: usize = 1 << 16;

pub fn encode(tokens: &[(Token, u16)]) -> Vec<u8> {
    assert!(!tokens.is_empty() && tokens.len() <= TOKENS_MAX);
    let mut sorted = tokens.to_vec();
    sorted.sort_unstable_by_key(|&(t, _)| t);
    let mut payload = Vec::with_capacity(ENTRY_BYTES * sorted.len());
    for &(token, shard) in &sorted {
        payload.extend_from_slice(&token.to_le_bytes());
        payload.extend_from_slice(&shard.to_le_bytes());
    }
    sealed::seal(MAGIC, FORMAT_VERSION, sorted.len() as u32, &payload)
}

/// Decodes a tokens file of a node with `shards` shards. Never panics.
pub fn decode(b: &[u8], shards: u16) -> Result<Vec<(Token, u16)>, String> {
    let (count, payload) = sealed::open(b, MAGIC, FORMAT_VERSION, "tokens")?;
    let count = count as usize;
    if count == 0 || count > TOKENS_MAX {
        return Err(format!("token count {count} is not in 1..={TOKENS_MAX}"));
    }
    if payload.len() != count * ENTRY_BYTES {
        return Err(format!(
            "{count} tokens need {} bytes, file has {}",
            sealed::HEADER_BYTES + count * ENTRY_BYTES + 4,
            b.len()
        ));
    }
    let mut tokens = Vec::with_capacity(count);
    for entry in payload.chunks_exact(ENTRY_BYTES) {
        let token = u64::from_le_bytes(entry[..8].try_into().expect("8"));
        let shard = u16::from_le_bytes(entry[8..].try_into().expect("2"));
        if shard >= shards {
            return Err(format!("token {token:#x} names shard {shard} of {shards}"));
        }
        if tokens
            .last()
            .is_some_and(|&(previous, _)| previous >= token)
        {
            return Err(format!("token {token:#x} is not above the previous"));
        }
        tokens.push((token, shard));
    }
    Ok(tokens)
}

/// The tokens stored in `dir`, or `None` if the node never joined a cluster.
pub fn load(dir: &Path, shards: u16) -> Result<Option<Vec<(Token, u16)>>, StartupError> {
    let path = dir.join(TOKENS_FILE);
    match fs::read(&path) {
        Ok(bytes) => decode(&bytes, shards).map(Some).map_err(|reason| {
            StartupError::DataDir(format!(
                "{}: {reason}; refusing to start (the node's tokens say which shard holds \
                 which key: restore the file from a backup)",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StartupError::Io {
            op: "read",
            path,
            source,
        }),
    }
}

pub fn store(dir: &Path, tokens: &[(Token, u16)]) -> Result<(), StartupError> {
    write_atomically(dir, TOKENS_FILE, &encode(tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes_round_trip_and_every_flip_is_caught() {
        let bytes = encode(&[(0x20, 1), (0x10, 0)]);
        #[rustfmt::skip]
        let golden: Vec<u8> = [
            &b"RKVTOKN\0"[..],
            &[1, 0, 0, 0],                          // format version 1
            &[2, 0, 0, 0],                          // 2 tokens
            &[0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0],     // token 0x10, shard 0
            &[0x20, 0, 0, 0, 0, 0, 0, 0, 1, 0],     // token 0x20, shard 1
        ]
        .concat();
        assert_eq!(&bytes[..bytes.len() - 4], &golden[..]);
        assert_eq!(decode(&bytes, 2).unwrap(), vec![(0x10, 0), (0x20, 1)]);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            assert!(decode(&bad, 2).is_err(), "flip at {i} accepted");
        }
        assert!(decode(&bytes, 1).unwrap_err().contains("shard 1 of 1"));
        assert!(decode(&bytes[..10], 2).is_err());
    }

    #[test]
    fn a_node_without_the_file_has_none_and_a_stored_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), 2).unwrap(), None);
        store(dir.path(), &[(5, 1), (9, 0)]).unwrap();
        assert_eq!(load(dir.path(), 2).unwrap(), Some(vec![(5, 1), (9, 0)]));
        fs::write(dir.path().join(TOKENS_FILE), b"garbage").unwrap();
        let err = load(dir.path(), 2).unwrap_err().to_string();
        assert!(err.contains("refusing to start"), "{err}");
    }
}
