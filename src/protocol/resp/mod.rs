//! RESP, the Redis serialization protocol: the command parser and the reply encoder
//! the Redis front end (`server::resp`) speaks, so that redis-cli, redis-benchmark and
//! redis-py work against a ringkv node unchanged (docs/resp.md).
//!
//! Owns the bytes and nothing else: [`parse`] turns the front of a connection's input
//! into one command (its arguments), [`Reply::encode`] appends one reply in RESP2 or
//! RESP3. Both are pure and synchronous; reading sockets, running commands and
//! keeping replies in order belong to the server.
//!
//! A client sends either a multibulk (`*<n>\r\n` then `n × $<len>\r\n<bytes>\r\n`,
//! what every client library sends) or an inline command (one text line, words split
//! as Redis splits them, quotes and escapes included: what telnet and
//! `redis-benchmark`'s PING_INLINE send). Every length read from the network is
//! checked against [`RespLimits`] before anything is allocated or waited for; a
//! violation is a [`ProtocolError`], after which the stream cannot be resynchronised
//! and the connection is closed (as Redis does). The parser never panics on any input.

mod parse;
mod reply;

#[cfg(test)]
mod tests;

pub use parse::{parse, Arg, Parsed, ProtocolError, RespLimits};
pub use reply::{Reply, Version};
