//! The Rust client: async on a glommio executor, pipelined, shard-aware.
//!
//! [`Client::connect`] asks the node for its shard map (SHARD_MAP) and opens one
//! connection to each shard's own port; each key then goes straight to the shard that
//! owns it (token = xxh3 of the key), saving the server the cross-core hop. Each
//! connection pipelines any number of requests (one writer task batches the frames,
//! one reader task matches responses to requests by id, in any order).
//! [`blocking::BlockingClient`] is a small synchronous client for the CLI and tests.

pub mod blocking;
mod connection;

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

pub use connection::Connection;

use crate::protocol::{
    Consistency, QuorumMode, Request, Response, ResponseBody, Status, WireValue,
};
use crate::ring::ShardMap;

/// How requests are sent to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// Each key to its owning shard's port (no hop inside the server).
    ShardAware,
    /// Everything to the given port; the server forwards to the owning shard.
    Direct,
    /// Each key deliberately to a shard that does NOT own it (benchmarks the hop).
    ForceForward,
    /// Each key to the owning shard of its primary replica, on whichever node that is:
    /// the client fetches the member table (MEMBERS) and connects to every shard of
    /// every node, so no node forwards and coordinators spread over the cluster.
    TokenAware,
}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub routing: Routing,
    /// How long one request may take before it fails with a timeout.
    pub timeout: Duration,
    /// R and W of every GET, PUT and DELETE (default: the server's).
    pub consistency: Consistency,
    /// Sloppy (default) or strict quorum for PUT and DELETE.
    pub quorum: QuorumMode,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            routing: Routing::ShardAware,
            timeout: Duration::from_secs(10),
            consistency: Consistency::Default,
            quorum: QuorumMode::Sloppy,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{op} {addr}: {source}")]
    Io {
        op: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("server answered {status:?}: {message}")]
    Server { status: Status, message: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("connection closed: {0}")]
    Closed(String),
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
}

/// The answer to a GET: every sibling (empty if not found) and the context to write with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetResult {
    pub values: Vec<WireValue>,
    pub context: Bytes,
}

/// How often a token-aware client re-reads the member table (MEMBERS), so that it
/// routes to nodes that joined since it connected.
const RING_REFRESH: Duration = Duration::from_secs(1);

/// Token-aware routing: the member table it was built from, the ring, and the
/// connection of each (node, shard).
struct TokenRoutes {
    table: crate::membership::MemberTable,
    ring: crate::ring::cluster::Ring,
    connections: ahash::AHashMap<(u64, u16), Rc<Connection>>,
    refreshed: std::time::Instant,
}

pub struct Client {
    /// Which shard owns which token; `None` in direct routing.
    map: Option<ShardMap>,
    /// One connection per shard (shard-aware), or one to the given port (direct).
    connections: Vec<Rc<Connection>>,
    /// Token-aware: the ring and a connection to every shard of every node.
    cluster: std::cell::RefCell<Option<TokenRoutes>>,
    options: ClientOptions,
}

impl Client {
    pub async fn connect(
        host: &str,
        port: u16,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let first = Rc::new(Connection::connect(host, port).await?);
        if options.routing == Routing::Direct {
            return Ok(Client {
                map: None,
                connections: vec![first],
                cluster: Default::default(),
                options,
            });
        }
        if options.routing == Routing::TokenAware {
            return Client::connect_token_aware(&first, options).await;
        }
        let response = first.request(&Request::ShardMap, options.timeout).await?;
        let ResponseBody::ShardMap(wire) = ok_body(response)? else {
            return Err(ClientError::Protocol(
                "SHARD_MAP answered without a map".into(),
            ));
        };
        if wire.vnodes.is_empty()
            || wire
                .vnodes
                .iter()
                .any(|(_, s)| *s as usize >= wire.ports.len())
        {
            return Err(ClientError::Protocol(
                "shard map names a shard without a port".into(),
            ));
        }
        let mut connections = Vec::with_capacity(wire.ports.len());
        for port in &wire.ports {
            connections.push(Rc::new(Connection::connect(host, *port).await?));
        }
        Ok(Client {
            map: Some(ShardMap::new(wire.vnodes)),
            connections,
            cluster: Default::default(),
            options,
        })
    }

    async fn connect_token_aware(
        first: &Rc<Connection>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let routes = token_routes(first, None, options.timeout).await?;
        Ok(Client {
            map: None,
            connections: vec![first.clone()],
            cluster: std::cell::RefCell::new(Some(routes)),
            options,
        })
    }

    /// Token-aware: re-reads the member table once per [`RING_REFRESH`] and, if it
    /// changed, routes with the new ring (connecting to the new nodes' shards).
    async fn refresh_routes(&self) -> Result<(), ClientError> {
        let due = match &*self.cluster.borrow() {
            Some(routes) => routes.refreshed.elapsed() >= RING_REFRESH,
            None => false,
        };
        if !due {
            return Ok(());
        }
        let Some(mut old) = self.cluster.borrow_mut().take() else {
            return Ok(()); // another request is refreshing
        };
        // Not again until the interval has passed, whatever the outcome.
        old.refreshed = std::time::Instant::now();
        let fresh = token_routes(&self.connections[0], Some(&old), self.options.timeout).await;
        let result = match fresh {
            Ok(routes) => {
                *self.cluster.borrow_mut() = Some(routes);
                Ok(())
            }
            Err(e) => {
                // Keep routing with what is known; try again at the next refresh.
                *self.cluster.borrow_mut() = Some(old);
                Err(e)
            }
        };
        result
    }

    /// The connection a request for `key` goes to.
    fn connection_for(&self, key: &[u8]) -> Rc<Connection> {
        if let Some(routes) = &*self.cluster.borrow() {
            let primary = routes.ring.replicas_of_key(key)[0];
            return routes.connections[&(primary.node_id, primary.shard)].clone();
        }
        let Some(map) = &self.map else {
            return self.connections[0].clone();
        };
        let owner = *map.owner_of_key(key) as usize;
        let index = match self.options.routing {
            Routing::ForceForward => (owner + 1) % self.connections.len(),
            _ => owner,
        };
        self.connections[index].clone()
    }

    pub async fn ping(&self) -> Result<(), ClientError> {
        ok_body(
            self.connections[0]
                .request(&Request::Ping, self.options.timeout)
                .await?,
        )?;
        Ok(())
    }

    pub async fn get(&self, key: &[u8]) -> Result<GetResult, ClientError> {
        self.get_with(key, self.options.consistency).await
    }

    pub async fn get_with(
        &self,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<GetResult, ClientError> {
        let request = Request::Get {
            key: Bytes::copy_from_slice(key),
            consistency,
        };
        let _ = self.refresh_routes().await;
        let response = self
            .connection_for(key)
            .request(&request, self.options.timeout)
            .await?;
        if response.status == Status::NotFound {
            if let ResponseBody::Get { context, .. } = response.body {
                return Ok(GetResult {
                    values: Vec::new(),
                    context,
                });
            }
            return Ok(GetResult::default());
        }
        match ok_body(response)? {
            ResponseBody::Get { context, values } => Ok(GetResult { values, context }),
            _ => Err(ClientError::Protocol("GET answered without values".into())),
        }
    }

    /// Writes `value`, superseding the versions `context` covers (empty: none). Returns
    /// the context of the new version.
    pub async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        context: &[u8],
    ) -> Result<Bytes, ClientError> {
        let request = Request::Put {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            context: Bytes::copy_from_slice(context),
            consistency: self.options.consistency,
            quorum: self.options.quorum,
        };
        self.write(key, &request).await
    }

    pub async fn delete(&self, key: &[u8], context: &[u8]) -> Result<Bytes, ClientError> {
        let request = Request::Delete {
            key: Bytes::copy_from_slice(key),
            context: Bytes::copy_from_slice(context),
            consistency: self.options.consistency,
            quorum: self.options.quorum,
        };
        self.write(key, &request).await
    }

    async fn write(&self, key: &[u8], request: &Request) -> Result<Bytes, ClientError> {
        let _ = self.refresh_routes().await;
        let response = self
            .connection_for(key)
            .request(request, self.options.timeout)
            .await?;
        match ok_body(response)? {
            ResponseBody::Written { context } => Ok(context),
            _ => Err(ClientError::Protocol(
                "write answered without a context".into(),
            )),
        }
    }

    /// Sends any request to the connection `key` routes to (benchmarks, tests).
    pub async fn request(&self, key: &[u8], request: &Request) -> Result<Response, ClientError> {
        let _ = self.refresh_routes().await;
        self.connection_for(key)
            .request(request, self.options.timeout)
            .await
    }

    /// Number of shards (connections) this client routes over.
    pub fn shard_count(&self) -> usize {
        match &*self.cluster.borrow() {
            Some(routes) => routes.connections.len(),
            None => self.connections.len(),
        }
    }
}

/// Reads the member table through `through` and builds the routes, reusing `old`'s
/// connections to shards that are still there.
async fn token_routes(
    through: &Connection,
    old: Option<&TokenRoutes>,
    timeout: Duration,
) -> Result<TokenRoutes, ClientError> {
    let request = Request::Members {
        table: Bytes::new(),
    };
    let ResponseBody::Members { table } = ok_body(through.request(&request, timeout).await?)?
    else {
        return Err(ClientError::Protocol(
            "MEMBERS answered without a table".into(),
        ));
    };
    let table = crate::membership::Exchange::decode(&table)
        .map_err(ClientError::Protocol)?
        .table;
    // The primary does not depend on N: a ring of N = 1 gives it.
    let ring = match old {
        Some(old) if old.table == table => old.ring.clone(),
        _ => table.ring(1).map_err(ClientError::Protocol)?,
    };
    let mut connections = ahash::AHashMap::new();
    for member in table.members() {
        for shard in 0..member.shards {
            let key = (member.node_id, shard);
            let reused = old.and_then(|o| o.connections.get(&key).cloned());
            let connection = match reused {
                Some(connection) => connection,
                None => Rc::new(Connection::connect(&member.host, member.shard_port(shard)).await?),
            };
            connections.insert(key, connection);
        }
    }
    Ok(TokenRoutes {
        table,
        ring,
        connections,
        refreshed: std::time::Instant::now(),
    })
}

/// The body of an Ok response, or the server's error.
pub(crate) fn ok_body(response: Response) -> Result<ResponseBody, ClientError> {
    if response.status == Status::Ok {
        Ok(response.body)
    } else {
        Err(ClientError::Server {
            status: response.status,
            message: response.message,
        })
    }
}
