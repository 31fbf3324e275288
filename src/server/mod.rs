//! The server side of a node: per-shard listeners, connections, and request dispatch.
//!
//! Every shard accepts on the shared client port (SO_REUSEPORT spreads connections over
//! the shards) and on its own port for shard-aware clients. A connection's reader parses
//! frames and dispatches each request ([`dispatch`]); requests for keys another shard
//! owns are forwarded over the cross-shard channel; responses go back through the
//! connection's [`Outbox`](crate::runtime::outbox::Outbox), possibly out of order.
//! With `--resp-port`, every shard also accepts Redis-protocol connections there
//! ([`resp`]), whose commands run through the same dispatch.

pub mod antientropy;
pub mod connection;
pub mod control;
pub mod coordinator;
pub mod dispatch;
pub mod faults;
pub mod handoff;
pub mod peers;
pub mod resp;

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::net::TcpListener;
use glommio::sync::Semaphore;
use glommio::{Latency, Shares};

use crate::config::ServerConfig;
use crate::error::StartupError;
use crate::membership::{Health, Snapshot};
use crate::protocol::{Consistency, Limits};
use crate::ring::ShardMap;
use crate::runtime::watchdog::Liveness;
use crate::runtime::{ShardMsg, ShardSetup};
use crate::storage::{Engine, EngineConfig};

/// Everything one shard serves with. Owned by the shard's executor (`Rc`), never shared
/// with another thread.
pub struct Shard {
    pub id: usize,
    pub node_id: u64,
    pub engine: Engine,
    /// Which shard owns which token (immutable, shared read-only by every shard).
    pub shard_map: Arc<ShardMap>,
    /// The port of each shard, for the SHARD_MAP answer.
    pub shard_ports: Vec<u16>,
    /// Inboxes of every shard (this one included), indexed by shard.
    pub peers: Vec<flume::Sender<ShardMsg>>,
    pub limits: Limits,
    /// Bounds the requests this shard works on at once; when none is left, readers stop
    /// reading their sockets (back-pressure instead of unbounded buffering).
    pub permits: Rc<Semaphore>,
    pub connection_requests_max: usize,
    /// The cluster as this shard routes with it; replaced when the control plane
    /// publishes a new one.
    /// Shared with the engine's clock pruning rule (same thread).
    snapshot: Rc<RefCell<Arc<Snapshot>>>,
    /// What the failure detector holds of the other nodes (from the control plane).
    health: RefCell<Arc<Health>>,
    /// This shard's hints for other nodes, and their replay.
    pub handoff: handoff::Handoff,
    /// This shard's Merkle trees and syncs with the other replicas.
    pub antientropy: antientropy::AntiEntropy,
    /// Connections to other nodes' shards.
    pub net: peers::Peers,
    /// The control plane, on shard 0 only.
    pub control: Option<control::Control>,
    pub default_consistency: Consistency,
    pub replica_timeout: Duration,
    /// Clock entries of nodes that are no longer replicas of a key are dropped this
    /// long after their last change (`version::Pruning`).
    pub prune_clocks_after: Duration,
    pub data_dir: std::path::PathBuf,
    /// The Redis-protocol front end's settings and counters.
    pub resp: resp::Front,
}

impl Shard {
    /// The current cluster snapshot (cheap: an `Arc` clone).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// The failure detector's current verdicts (cheap: an `Arc` clone).
    pub fn health(&self) -> Arc<Health> {
        self.health.borrow().clone()
    }
}

/// The body of a shard's executor: open storage, bind, report ready, serve until told
/// to stop.
pub async fn run_shard(setup: ShardSetup) {
    let ShardSetup {
        shard: id,
        config,
        meta,
        shard_map,
        inbox,
        peers,
        ready,
        liveness,
        snapshot,
        control,
        serve,
    } = setup;
    let background = glommio::executor().create_task_queue(
        Shares::Static(1000),
        Latency::Matters(Duration::from_millis(1)),
        "commitlog",
    );
    let engine = match Engine::open(engine_config(&config, id, meta.node_id), background).await {
        Ok(engine) => engine,
        Err(source) => {
            let _ = ready.send(Err(StartupError::Shard { shard: id, source }));
            return;
        }
    };
    let hints_dir = engine_config(&config, id, meta.node_id).dir.join("hints");
    let handoff = match handoff::Handoff::open(hints_dir, config.handoff()).await {
        Ok(handoff) => handoff,
        Err(e) => {
            let _ = ready.send(Err(StartupError::Environment(format!(
                "shard {id}: opening the hint log: {e}"
            ))));
            return;
        }
    };
    let snapshot = Rc::new(RefCell::new(snapshot));
    let prune_clocks_after = Duration::from_secs(config.prune_clocks_after_secs);
    engine.set_clock_pruning(coordinator::clock_pruning(
        snapshot.clone(),
        prune_clocks_after,
    ));
    let antientropy = antientropy::AntiEntropy::new(
        crate::ring::cluster::Replica {
            node_id: meta.node_id,
            shard: id as u16,
        },
        config.sync(),
        snapshot.borrow().clone(),
        config.limits().key_bytes_max as usize,
        config
            .data_dir
            .join(crate::runtime::join::REPLACING_FILE)
            .exists(),
        &engine_config(&config, id, meta.node_id).dir,
    );
    engine.set_change_hook(antientropy.change_hook());
    engine.set_purge_rule(antientropy.purge_rule());
    let shard = Rc::new(Shard {
        id,
        node_id: meta.node_id,
        engine,
        shard_map,
        shard_ports: (0..config.shards).map(|s| config.shard_port(s)).collect(),
        peers,
        limits: config.limits(),
        permits: Rc::new(Semaphore::new(config.shard_requests_max as u64)),
        connection_requests_max: config.connection_requests_max,
        snapshot: snapshot.clone(),
        health: RefCell::default(),
        handoff,
        antientropy,
        net: peers::Peers::default(),
        control: control.map(|joined| {
            control::Control::new(
                joined,
                &config.seeds,
                Duration::from_millis(config.membership_interval_ms),
                config.replication_factor,
                config.data_dir.clone(),
            )
        }),
        default_consistency: config.default_consistency,
        replica_timeout: Duration::from_millis(config.replica_timeout_ms),
        prune_clocks_after,
        data_dir: config.data_dir.clone(),
        resp: resp::Front::new(config.resp_port, config.resp_limits()),
    });
    let mut listeners = Vec::new();
    let mut sockets = Vec::new();
    let binary = [config.port, config.shard_port(id)].map(|port| (port, Protocol::Binary));
    let redis = config.resp_port.map(|port| (port, Protocol::Resp));
    for (port, protocol) in binary.into_iter().chain(redis) {
        match bind(&config.host, port) {
            Ok((listener, inode)) => {
                listeners.push((listener, protocol));
                sockets.push(inode);
            }
            Err(e) => {
                let _ = ready.send(Err(StartupError::Environment(format!(
                    "shard {id}: bind {}:{port}: {e}",
                    config.host
                ))));
                return;
            }
        }
    }
    liveness.running();
    let _ = ready.send(Ok(sockets));
    // Accept only once every shard of the node is ready.
    {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            if serve.recv_async().await.is_err() {
                return; // start-up failed elsewhere; the shard is told to shut down
            }
            for (listener, protocol) in listeners {
                glommio::spawn_local(accept_loop(shard.clone(), listener, protocol)).detach();
            }
            if shard.control.is_some() {
                glommio::spawn_local(control::run(shard.clone())).detach();
            }
            let replay = glommio::executor().create_task_queue(
                Shares::Static(100),
                Latency::NotImportant,
                "hint replay",
            );
            let _ = glommio::spawn_local_into(handoff::replay(shard.clone()), replay)
                .map(|task| task.detach());
            let sync = shard.antientropy.queue();
            let _ = glommio::spawn_local_into(antientropy::run(shard.clone()), sync)
                .map(|task| task.detach());
        })
        .detach();
    }
    serve_inbox(&shard, inbox, &liveness).await;
    if let Err(e) = shard.engine.close().await {
        eprintln!("ringkv: shard {id}: closing the commit log: {e}");
    }
}

fn engine_config(config: &ServerConfig, shard: usize, node_id: u64) -> EngineConfig {
    config.engine(config.data_dir.join(format!("shard-{shard:03}")), node_id)
}

/// A listener on `host:port` with SO_REUSEPORT (every shard of the node listens on the
/// client port; the kernel spreads the connections), and its socket's inode, by which
/// the node later tells its own sockets from another process's.
fn bind(host: &str, port: u16) -> std::io::Result<(TcpListener, u64)> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    use std::net::ToSocketAddrs;
    let address = (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "the host has no address")
    })?;
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_port(true)?;
    socket.bind(&SockAddr::from(address))?;
    socket.listen(1024)?;
    let inode = crate::runtime::checks::socket_inode(socket.as_raw_fd());
    // SAFETY: the fd is a bound, listening TCP socket whose ownership moves here.
    let listener = unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) };
    Ok((listener, inode))
}

/// What a listener's connections speak.
#[derive(Clone, Copy)]
enum Protocol {
    /// ringkv's binary protocol (docs/protocol.md).
    Binary,
    /// RESP, for Redis clients (docs/resp.md).
    Resp,
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, protocol: Protocol) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                let shard = shard.clone();
                match protocol {
                    Protocol::Binary => glommio::spawn_local(connection::serve(shard, stream)),
                    Protocol::Resp => glommio::spawn_local(resp::serve(shard, stream)),
                }
                .detach();
            }
            Err(e) => {
                // Out of file descriptors and the like: say so, back off, keep serving.
                eprintln!("ringkv: shard {}: accept: {e}", shard.id);
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves requests forwarded by other shards until told to shut down.
async fn serve_inbox(shard: &Rc<Shard>, inbox: flume::Receiver<ShardMsg>, liveness: &Liveness) {
    while let Ok(message) = inbox.recv_async().await {
        match message {
            ShardMsg::Forward {
                request_id,
                opcode,
                request,
                reply,
            } => {
                if shard.permits.acquire(1).await.is_err() {
                    return;
                }
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let mut frame = Vec::new();
                    dispatch::execute_local(&shard, request_id, opcode, request, &mut frame).await;
                    shard.permits.signal(1);
                    let _ = reply.send_async(frame).await;
                })
                .detach();
            }
            ShardMsg::Tick => liveness.tick(),
            ShardMsg::Snapshot(snapshot) => *shard.snapshot.borrow_mut() = snapshot,
            ShardMsg::Health(health) => *shard.health.borrow_mut() = health,
            ShardMsg::Faults(faults) => *shard.net.faults.borrow_mut() = faults,
            ShardMsg::Hints {
                shard: from,
                report,
            } => {
                if let Some(control) = &shard.control {
                    control.hint_report(from, report);
                }
            }
            ShardMsg::Syncs { shard: from, peers } => {
                if let Some(control) = &shard.control {
                    control.sync_report(from, peers);
                }
            }
            ShardMsg::Shutdown => return,
        }
    }
}
