//! Connections from this shard to other nodes' shards: one pipelined connection per
//! address, opened on first use, dropped when it fails (the next request reconnects).
//! Every request has a deadline; a peer that does not answer in time counts as failed
//! for that request only.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use ahash::AHashMap;
use futures_lite::FutureExt;

use crate::client::Connection;
use crate::protocol::{Request, Response};

#[derive(Default)]
pub struct Peers {
    connections: RefCell<AHashMap<(String, u16), Rc<Connection>>>,
}

impl Peers {
    /// Sends `request` to `host:port` and waits at most `timeout` for the answer
    /// (connecting included). Errors are strings for the client's `Unavailable` message.
    pub async fn request(
        &self,
        host: &str,
        port: u16,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, String> {
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
