//! Connections from this shard to other nodes' shards: one pipelined connection per
//! address, opened on first use, dropped when it fails (the next request reconnects).
//! Every request has a deadline; a peer that does not answer in time counts as failed
//! for that request only. Injected faults ([`super::faults`]) are applied here, to every
//! internal request this shard sends.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use ahash::AHashMap;
use futures_lite::FutureExt;

use super::faults::{Fate, Faults};
use crate::client::Connection;
use crate::protocol::{Request, Response};
use crate::ring::cluster::NodeId;

#[derive(Default)]
pub struct Peers {
    connections: RefCell<AHashMap<(String, u16), Rc<Connection>>>,
    /// The faults in force on this node (`ringkv admin fault`).
    pub faults: RefCell<Faults>,
}

impl Peers {
    /// Sends `request` to node `to` (`None`: known by address only, a seed) at
    /// `host:port` and waits at most `timeout` for the answer (connecting included).
    /// Errors are strings for the client's `Unavailable` message.
    pub async fn request(
        &self,
        to: Option<NodeId>,
        host: &str,
        port: u16,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, String> {
        let fate = self.faults.borrow().fate(to);
        match fate {
            Fate::Send => {}
            Fate::Drop => {
                glommio::timer::sleep(timeout).await;
                return Err(format!(
                    "{host}:{port}: no answer in {timeout:?} (dropped by fault injection)"
                ));
            }
            Fate::DelayThenSend(delay) => glommio::timer::sleep(delay).await,
        }
        let key = (host.to_string(), port);
        let existing = self.connections.borrow().get(&key).cloned();
        let connection = match existing {
            Some(connection) => connection,
            None => {
                let connect = async {
                    Connection::connect(host, port)
                        .await
                        .map_err(|e| e.to_string())
                };
                let expired = async {
                    glommio::timer::sleep(timeout).await;
                    Err(format!("connect {host}:{port}: no answer in {timeout:?}"))
                };
                let connection = Rc::new(connect.or(expired).await?);
                self.connections
                    .borrow_mut()
                    .insert(key.clone(), connection.clone());
                connection
            }
        };
        match connection.request(request, timeout).await {
            Ok(response) => Ok(response),
            Err(e) => {
                // A closed or broken connection is replaced on the next request; a slow
                // one too (its late answers would only be dropped).
                let mut connections = self.connections.borrow_mut();
                if connections
                    .get(&key)
                    .is_some_and(|c| Rc::ptr_eq(c, &connection))
                {
                    connections.remove(&key);
                }
                Err(format!("{host}:{port}: {e}"))
            }
        }
    }
}
