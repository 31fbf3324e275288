//! Shard executors and the messages that cross between them.
//!
//! [`start`] runs the start-up checks, loads the node's identity, then starts one glommio
//! `LocalExecutor` per shard (pinned to a core unless told otherwise). Shards share
//! nothing mutable: each gets an immutable [`ShardMap`] (`Arc`, read-only) and a sender
//! to every other shard's inbox. A request for a key another shard owns crosses as a
//! [`ShardMsg::Forward`] and its encoded response comes back on the reply channel. A
//! [`watchdog`] thread ticks every shard and signals one that stops taking ticks.

pub mod checks;
pub mod join;
pub mod outbox;
pub mod readiness;
pub mod socket;
pub mod watchdog;

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use watchdog::Liveness;

use crate::config::ServerConfig;

use crate::error::StartupError;
use crate::membership::Snapshot;
use crate::protocol::Request;
use crate::ring::ShardMap;
use crate::storage::node_meta::NodeMeta;
use join::Joined;

/// A message to a shard's inbox.
pub enum ShardMsg {
    /// A request whose key this shard owns, received by another shard. The owner encodes
    /// the whole response frame and sends it back on `reply`.
    Forward {
        request_id: u32,
        opcode: u8,
        request: Request,
        reply: flume::Sender<Vec<u8>>,
    },
    /// Nothing to do: the watchdog's periodic nudge (see [`watchdog`]).
    Tick,
    /// The control plane's new view of the cluster: route with it from now on.
    Snapshot(Arc<Snapshot>),
    /// The failure detector's new verdicts: place writes with them from now on.
    Health(Arc<crate::membership::Health>),
    /// The faults now in force on this node (`ringkv admin fault`).
    Faults(crate::server::faults::Faults),
    /// To shard 0: shard `shard`'s hints.
    Hints {
        shard: usize,
        report: crate::server::control::HintReport,
    },
    /// To shard 0: what shard `shard`'s anti-entropy syncs did, per peer.
    Syncs {
        shard: usize,
        peers: Vec<(u64, crate::server::antientropy::PeerSync)>,
    },
    /// Stop serving, make the commit log durable, and end the executor.
    Shutdown,
}

/// What a shard needs to start; moved into its executor thread.
pub struct ShardSetup {
    pub shard: usize,
    pub config: ServerConfig,
    pub meta: NodeMeta,
    pub shard_map: Arc<ShardMap>,
    pub inbox: flume::Receiver<ShardMsg>,
    pub peers: Vec<flume::Sender<ShardMsg>>,
    /// Reports the shard ready with the inodes of the sockets it listens on (or why it
    /// could not start).
    pub ready: mpsc::Sender<Result<Vec<u64>, StartupError>>,
    pub liveness: Arc<Liveness>,
    /// The cluster as known at start.
    pub snapshot: Arc<Snapshot>,
    /// Shard 0 runs the control plane: it gets this node's member entry and the table.
    pub control: Option<Joined>,
    /// Gets one message per shard once every shard is ready: a shard accepts
    /// connections only then, so that a node answering on its client port also
    /// answers on every shard port. Dropped without a message if start-up fails.
    pub serve: flume::Receiver<()>,
}

/// A running node: its shard threads and their inboxes.
pub struct RunningNode {
    pub meta: NodeMeta,
    pub shard_map: Arc<ShardMap>,
    inboxes: Vec<flume::Sender<ShardMsg>>,
    threads: Vec<ExecutorJoinHandle<()>>,
    _lock: std::fs::File,
}

/// Checks the machine, then starts every shard and waits until all of them serve.
pub fn start(config: ServerConfig) -> Result<RunningNode, StartupError> {
    assert!(
        config.shards > 0 && config.shards < 1024,
        "shard count out of range"
    );
    checks::check_io_uring()?;
    let memlock = checks::raise_memlock()?;
    let io_memory = checks::size_io_memory(memlock, config.shards, config.io_memory_bytes)?;
    checks::check_data_dir(&config.data_dir)?;
    let lock = checks::lock_data_dir(&config.data_dir)?;
    checks::check_ports_free(&config.host, &config.ports())?;
    let meta = NodeMeta::load_or_create(
        &config.data_dir,
        config.shards as u16,
        config.vnodes_per_shard as u16,
        config.conflicts,
    )?;
    let joined = join::join(&config, &meta)?;
    let shard_map = Arc::new(ShardMap::new(joined.me.tokens.clone()));
    let snapshot = Arc::new(
        Snapshot::new(joined.table.clone(), config.replication_factor)
            .map_err(|e| StartupError::Environment(format!("the member table: {e}")))?,
    );
    let mut control = Some(joined);
    let (serve_tx, serve_rx) = flume::bounded::<()>(config.shards);

    let channels: Vec<_> = (0..config.shards)
        .map(|_| flume::bounded(config.shard_queue_max))
        .collect();
    let senders: Vec<_> = channels.iter().map(|(tx, _)| tx.clone()).collect();
    let (ready_tx, ready_rx) = mpsc::channel();
    let liveness: Vec<Arc<Liveness>> = (0..config.shards).map(|_| Arc::default()).collect();
    let mut threads = Vec::new();
    for (shard, (_, inbox)) in channels.into_iter().enumerate() {
        let setup = ShardSetup {
            shard,
            config: config.clone(),
            meta,
            shard_map: shard_map.clone(),
            inbox,
            peers: senders.clone(),
            ready: ready_tx.clone(),
            liveness: liveness[shard].clone(),
            snapshot: snapshot.clone(),
            control: if shard == 0 { control.take() } else { None },
            serve: serve_rx.clone(),
        };
        let cpu = config.pin_cores.then(|| match &config.cpus[..] {
            [] => shard % num_cpus(),
            cpus => cpus[shard % cpus.len()],
        });
        let idle_poll = Duration::from_micros(config.idle_poll_us);
        let handle = executor(&format!("shard-{shard}"), cpu, idle_poll, io_memory)
            .spawn(move || crate::server::run_shard(setup))
            .map_err(|e| {
                StartupError::Environment(format!("starting shard {shard}'s executor: {e}"))
            })?;
        threads.push(handle);
    }
    drop(ready_tx);
    let targets = senders
        .iter()
        .zip(liveness)
        .map(|(inbox, live)| (watchdog::tick_over(inbox.clone(), || ShardMsg::Tick), live))
        .collect();
    watchdog::start("shard", targets);
    let shut_down = |e: StartupError| {
        for tx in &senders {
            let _ = tx.send(ShardMsg::Shutdown);
        }
        Err(e)
    };
    let mut ours = Vec::new();
    for _ in 0..config.shards {
        match ready_rx.recv() {
            Ok(Ok(sockets)) => ours.extend(sockets),
            Ok(Err(e)) => return shut_down(e),
            Err(_) => {
                return Err(StartupError::Environment(
                    "a shard ended before it started serving".into(),
                ))
            }
        }
    }
    // Another process that started at the same moment may have passed the check above
    // too and joined our ports' SO_REUSEPORT groups: now that every socket is bound, any
    // listener on our ports that is not ours is one.
    if let Err(e) = checks::check_ports_ours(&config.host, &config.ports(), &ours) {
        return shut_down(e);
    }
    // Every shard is ready: let them all accept.
    for _ in 0..config.shards {
        let _ = serve_tx.send(());
    }
    Ok(RunningNode {
        meta,
        shard_map,
        inboxes: senders,
        threads,
        _lock: lock,
    })
}

impl RunningNode {
    /// Asks every shard to stop (commit logs made durable first) and waits for them.
    pub fn shutdown(self) {
        for tx in &self.inboxes {
            let _ = tx.send(ShardMsg::Shutdown);
        }
        for (shard, thread) in self.threads.into_iter().enumerate() {
            if let Err(e) = thread.join() {
                eprintln!("ringkv: shard {shard} executor ended with: {e}");
            }
        }
    }
}

/// The builder of every ringkv executor that serves data (shards, and the benchmarks
/// that stand for one): pinned to core `cpu` and polling for `idle_poll` whenever it has
/// nothing to run before it sleeps, or, with no `cpu`, unbound and never polling
/// (glommio polls only on a pinned executor; tests run many unbound executors on 2
/// cores, where polling would take the core from the others).
pub fn executor(
    name: &str,
    cpu: Option<usize>,
    idle_poll: Duration,
    io_memory: usize,
) -> LocalExecutorBuilder {
    let builder = match cpu {
        Some(cpu) => LocalExecutorBuilder::new(Placement::Fixed(cpu)).spin_before_park(idle_poll),
        None => LocalExecutorBuilder::new(Placement::Unbound),
    };
    builder.name(name).io_memory(io_memory)
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Blocks SIGINT and SIGTERM in this thread (and every thread it starts afterwards), so
/// that [`wait_for_shutdown_signal`] can receive them. Call before [`start`].
pub fn block_shutdown_signals() {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for SIGINT or SIGTERM; returns the signal number.
pub fn wait_for_shutdown_signal() -> i32 {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let mut signal = 0;
        libc::sigwait(&set, &mut signal);
        signal
    }
}
