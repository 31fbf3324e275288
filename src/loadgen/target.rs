//! What the bench drives: `ringkv://host:port` through the Rust client (binary
//! protocol, its routing options), or `redis://host:port` through [`super::resp`].
//! [`Store`] gives both the two calls a workload needs: read a record, write one.

use std::time::Duration;

use bytes::Bytes;

use super::resp::{RespConnection, RespError};
use crate::client::{Client, ClientError, ClientOptions, Routing};
use crate::protocol::Consistency;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Ringkv { host: String, port: u16 },
    Redis { host: String, port: u16 },
}

impl Target {
    /// `ringkv://host:port` or `redis://host:port` (port defaults: ringkv's, 6379).
    pub fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?}: expected ringkv://host:port or redis://host:port"))?;
        let default_port = match scheme {
            "ringkv" => crate::config::DEFAULT_PORT,
            "redis" => 6379,
            _ => {
                return Err(format!(
                    "{url:?}: unknown scheme {scheme:?} (ringkv or redis)"
                ))
            }
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => {
                let port = port
                    .parse()
                    .map_err(|_| format!("{url:?}: bad port {port:?}"))?;
                (host, port)
            }
            None => (rest, default_port),
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let host = host.to_string();
        Ok(match scheme {
            "ringkv" => Target::Ringkv { host, port },
            _ => Target::Redis { host, port },
        })
    }

    pub fn url(&self) -> String {
        match self {
            Target::Ringkv { host, port } => format!("ringkv://{host}:{port}"),
            Target::Redis { host, port } => format!("redis://{host}:{port}"),
        }
    }

    /// True if writes carry causal contexts (ringkv); Redis writes are blind.
    pub fn has_contexts(&self) -> bool {
        matches!(self, Target::Ringkv { .. })
    }
}

/// A failed operation: its message, and whether the connection is gone.
#[derive(Debug)]
pub struct OpError {
    pub message: String,
    /// A dead connection: the worker stops instead of counting the same failure
    /// millions of times.
    pub fatal: bool,
}

impl From<ClientError> for OpError {
    fn from(e: ClientError) -> OpError {
        let fatal = matches!(e, ClientError::Closed(_) | ClientError::Io { .. });
        OpError {
            message: e.to_string(),
            fatal,
        }
    }
}

impl From<RespError> for OpError {
    fn from(e: RespError) -> OpError {
        OpError {
            fatal: e.is_fatal(),
            message: e.to_string(),
        }
    }
}

/// A read's outcome: whether the record exists, and the context to write it with.
pub struct Read {
    pub found: bool,
    pub context: Bytes,
}

/// One connection (ringkv: one client, itself one connection per shard) to the target.
// One per load-generator connection, made once: its size costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Store {
    Ringkv(Client),
    Redis(RespConnection),
}

/// How the bench talks to a ringkv target.
#[derive(Clone, Copy, Debug)]
pub struct RingkvOptions {
    pub routing: Routing,
    /// R and W of every request.
    pub consistency: Consistency,
}

impl Store {
    pub async fn connect(target: &Target, ringkv: RingkvOptions) -> Result<Store, String> {
        let timeout = Duration::from_secs(10);
        match target {
            Target::Ringkv { host, port } => {
                let options = ClientOptions {
                    routing: ringkv.routing,
                    consistency: ringkv.consistency,
                    quorum: crate::protocol::QuorumMode::Sloppy,
                    timeout,
                };
                let client = Client::connect(host, *port, options).await;
                client
                    .map(Store::Ringkv)
                    .map_err(|e| format!("connecting to {}: {e}", target.url()))
            }
            Target::Redis { host, port } => RespConnection::connect(host, *port, timeout)
                .await
                .map(Store::Redis)
                .map_err(|e| format!("connecting to {}: {e}", target.url())),
        }
    }

    pub async fn read(&self, key: &[u8]) -> Result<Read, OpError> {
        match self {
            Store::Ringkv(client) => {
                let result = client.get(key).await?;
                Ok(Read {
                    found: !result.values.is_empty(),
                    context: result.context,
                })
            }
            Store::Redis(connection) => Ok(Read {
                found: connection.get(key).await?.is_some(),
                context: Bytes::new(),
            }),
        }
    }

    /// Writes `value` superseding `context` (ringkv); returns the new context.
    pub async fn write(&self, key: &[u8], value: &[u8], context: &[u8]) -> Result<Bytes, OpError> {
        match self {
            Store::Ringkv(client) => Ok(client.put(key, value, context).await?),
            Store::Redis(connection) => {
                connection.set(key, value).await?;
                Ok(Bytes::new())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_urls_parse() {
        assert_eq!(
            Target::parse("ringkv://127.0.0.1:7000").unwrap(),
            Target::Ringkv {
                host: "127.0.0.1".into(),
                port: 7000
            }
        );
        assert_eq!(
            Target::parse("redis://localhost").unwrap(),
            Target::Redis {
                host: "localhost".into(),
                port: 6379
            }
        );
        assert_eq!(
            Target::parse("redis://h:1/").unwrap().url(),
            "redis://h:1".to_string()
        );
        for bad in [
            "127.0.0.1:7000",
            "http://x:1",
            "ringkv://:1",
            "redis://h:port",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
