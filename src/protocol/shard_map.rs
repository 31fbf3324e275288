//! The SHARD_MAP payload: which shard of a node owns which tokens, and the port each
//! shard listens on, so a shard-aware client can skip the cross-shard hop.
//!
//! ```text
//! node_id u64 | shard_count u16 | shard_count × port u16
//!             | vnode_count u32 | vnode_count × (token u64 | shard u16)
//! ```
//!
//! Vnodes are strictly ascending by token and name a shard below `shard_count`;
//! the encoder asserts both and the decoder refuses a map that breaks them.

use super::codec::{put_u16, put_u32, put_u64, Reader};
use super::RequestError;

/// Bytes one vnode entry takes on the wire: token u64, shard u16.
const VNODE_BYTES: usize = size_of::<u64>() + size_of::<u16>();

/// A node's shard map as sent in a SHARD_MAP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    /// The answering node's id (random u64 fixed at first start, DESIGN §5).
    pub node_id: u64,
    /// `ports[k]` is the client port of shard k.
    pub ports: Vec<u16>,
    /// `(token, shard)`, strictly ascending by token. A key belongs to the first
    /// vnode whose token is ≥ the key's token, wrapping to the first vnode.
    pub vnodes: Vec<(u64, u16)>,
}

impl ShardMap {
    /// The shard owning `token`, or `None` for a map without vnodes.
    pub fn shard_for_token(&self, token: u64) -> Option<u16> {
        let index = self
            .vnodes
            .partition_point(|&(vnode_token, _)| vnode_token < token);
        self.vnodes
            .get(index)
            .or(self.vnodes.first())
            .map(|&(_, shard)| shard)
    }

    /// The client port of the shard owning `token`.
    pub fn port_for_token(&self, token: u64) -> Option<u16> {
        let shard = self.shard_for_token(token)?;
        self.ports.get(usize::from(shard)).copied()
    }

    /// Checks the invariants the format promises: sorted unique tokens, shards
    /// that exist. Returns the first violation.
    fn check(&self) -> Result<(), String> {
        let shard_count = self.ports.len();
        for (index, &(token, shard)) in self.vnodes.iter().enumerate() {
            if usize::from(shard) >= shard_count {
                return Err(format!(
                    "vnode {index} names shard {shard} of {shard_count}"
                ));
            }
            if index > 0 && self.vnodes[index - 1].0 >= token {
                return Err(format!(
                    "vnode {index} token {token:#x} is not above the previous"
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn encode_into(&self, buf: &mut Vec<u8>) {
        if let Err(reason) = self.check() {
            panic!("invalid shard map: {reason}");
        }
        let shard_count = u16::try_from(self.ports.len()).expect("shard count must fit u16");
        let vnode_count = u32::try_from(self.vnodes.len()).expect("vnode count must fit u32");
        put_u64(buf, self.node_id);
        put_u16(buf, shard_count);
        for &port in &self.ports {
            put_u16(buf, port);
        }
        put_u32(buf, vnode_count);
        for &(token, shard) in &self.vnodes {
            put_u64(buf, token);
            put_u16(buf, shard);
        }
    }

    pub(crate) fn decode(reader: &mut Reader) -> Result<ShardMap, RequestError> {
        let node_id = reader.u64("node_id")?;
        let shard_count = usize::from(reader.u16("shard_count")?);
        reader.ensure_room(shard_count, size_of::<u16>(), "shard_count")?;
        let mut ports = Vec::with_capacity(shard_count);
        for _ in 0..shard_count {
            ports.push(reader.u16("port")?);
        }
        let vnode_count = reader.u32("vnode_count")? as usize;
        reader.ensure_room(vnode_count, VNODE_BYTES, "vnode_count")?;
        let mut vnodes = Vec::with_capacity(vnode_count);
        for _ in 0..vnode_count {
            vnodes.push((reader.u64("token")?, reader.u16("shard")?));
        }
        let map = ShardMap {
            node_id,
            ports,
            vnodes,
        };
        map.check()
            .map_err(|reason| RequestError::bad_request(format!("shard map: {reason}")))?;
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Status;
    use bytes::Bytes;

    fn map(vnodes: Vec<(u64, u16)>) -> ShardMap {
        ShardMap {
            node_id: 1,
            ports: vec![7000, 7001],
            vnodes,
        }
    }

    #[test]
    fn owner_is_first_vnode_at_or_after_the_token_wrapping() {
        let map = map(vec![(100, 0), (200, 1), (300, 0)]);
        assert_eq!(map.shard_for_token(0), Some(0));
        assert_eq!(map.shard_for_token(100), Some(0));
        assert_eq!(map.shard_for_token(101), Some(1));
        assert_eq!(map.shard_for_token(200), Some(1));
        assert_eq!(map.shard_for_token(201), Some(0));
        assert_eq!(
            map.shard_for_token(301),
            Some(0),
            "wraps to the first vnode"
        );
        assert_eq!(map.port_for_token(150), Some(7001));
        assert_eq!(
            ShardMap {
                node_id: 1,
                ports: vec![],
                vnodes: vec![]
            }
            .shard_for_token(5),
            None
        );
    }

    #[test]
    fn decode_refuses_unsorted_tokens() {
        let mut buf = Vec::new();
        map(vec![(100, 0), (200, 1)]).encode_into(&mut buf);
        let first_token = 8 + 2 + 4 + 4; // node_id, shard_count, two ports, vnode_count
        buf[first_token..first_token + 8].copy_from_slice(&200u64.to_le_bytes());
        let error = ShardMap::decode(&mut Reader::new(Bytes::from(buf))).unwrap_err();
        assert_eq!(error.status, Status::BadRequest);
        assert_eq!(
            error.message,
            "shard map: vnode 1 token 0xc8 is not above the previous"
        );
    }

    #[test]
    fn decode_refuses_unknown_shards() {
        let mut buf = Vec::new();
        map(vec![(100, 1)]).encode_into(&mut buf);
        let last = buf.len() - 2;
        buf[last] = 2;
        let error = ShardMap::decode(&mut Reader::new(Bytes::from(buf))).unwrap_err();
        assert_eq!(error.message, "shard map: vnode 0 names shard 2 of 2");
    }

    #[test]
    fn huge_vnode_count_is_refused_before_allocating() {
        let mut buf = Vec::new();
        map(vec![]).encode_into(&mut buf);
        let count = buf.len() - 4;
        buf[count..].copy_from_slice(&u32::MAX.to_le_bytes());
        let error = ShardMap::decode(&mut Reader::new(Bytes::from(buf))).unwrap_err();
        assert_eq!(error.status, Status::BadRequest);
        assert!(error
            .message
            .starts_with("vnode_count 4294967295 needs at least"));
    }

    #[test]
    #[should_panic(expected = "invalid shard map")]
    fn encoding_an_unsorted_map_panics() {
        map(vec![(200, 0), (100, 1)]).encode_into(&mut Vec::new());
    }
}
