//! Every limit, timeout and size ringkv uses, with its default and the reason for it.
//!
//! The server's command line fills a [`ServerConfig`]; everything not given on the command
//! line keeps the default written here. Units are last in names (`_bytes`, `_ms`).

use std::path::PathBuf;

/// The port the server listens on for clients when none is given.
/// Shard `k` also listens on `port + 1 + k` for shard-aware clients.
pub const DEFAULT_PORT: u16 = 7700;

/// Most arguments one RESP command may carry: an MSET of 32 767 pairs, far more than
/// any client batches, and a bound on the argument list a connection builds.
pub const RESP_ARGS_MAX: u32 = 1 << 16;

/// Longest inline RESP command line (telnet, `PING` from redis-benchmark): Redis's own
/// limit (`PROTO_INLINE_MAX_SIZE`).
pub const RESP_INLINE_BYTES_MAX: u32 = 64 << 10;

/// How many frames' worth of bytes one RESP command may take: an MSET or a SET of the
/// largest value fits with room, and a RESP connection buffers at most a few frames,
/// as a binary one buffers at most one.
pub const RESP_COMMAND_FRAMES_MAX: u64 = 4;

/// Where data lives when no `--data-dir` is given: under the current directory.
pub const DEFAULT_DATA_DIR: &str = "ringkv-data";

/// When commit-log records become durable before a write is acknowledged: `Batch`
/// (after the group commit's fdatasync; the default), `Periodic { period_ms }`
/// (acknowledge at once, fdatasync every period), `None` (never; tests only). The
/// commit log's own type, named here for the server's configuration.
pub use crate::storage::commitlog::SyncMode as SyncPolicy;

/// How concurrent writes to one key are settled: siblings (dotted version vectors, the
/// default) or last-write-wins (blind writes; see [`crate::version`]).
pub use crate::version::ConflictMode;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Directory that holds the node id, the shard layout and every shard's data.
    pub data_dir: PathBuf,
    /// Address the listeners bind to.
    pub host: String,
    /// Client port; shard k also serves `port + 1 + k`.
    pub port: u16,
    /// Port of the Redis-protocol (RESP) front end, bound by every shard like `port`;
    /// `None`: no RESP listener.
    pub resp_port: Option<u16>,
    /// Number of shards (one glommio executor, one core each).
    pub shards: usize,
    /// Tokens per shard on the ring: more tokens balance ownership better.
    pub vnodes_per_shard: usize,
    /// Pin each shard to a core (off in tests so many executors fit on 2 cores).
    pub pin_cores: bool,
    /// The cores pinned shards run on, shard `i` on `cpus[i % len]` (empty: shard `i`
    /// on core `i mod cores`). A benchmark keeps the server off its clients' cores.
    pub cpus: Vec<usize>,
    /// How long a pinned shard with nothing to run keeps polling its rings and inbox
    /// before it sleeps (0: sleep at once). An unpinned shard always sleeps at once.
    pub idle_poll_us: u64,
    pub sync: SyncPolicy,
    /// Fixed when the data dir is created (its `node.meta` records it).
    pub conflicts: ConflictMode,
    /// Commit-log segment size; a multiple of 4096.
    pub commitlog_segment_bytes: u64,
    /// Bytes that may wait in a shard's commit-log queue before appends wait (back-pressure).
    pub commitlog_buffer_bytes_max: usize,
    pub key_bytes_max: u32,
    pub value_bytes_max: u32,
    pub frame_bytes_max: u32,
    /// Requests a shard works on at once (all its connections together); past it the
    /// shard stops reading its sockets instead of buffering without bound.
    pub shard_requests_max: usize,
    /// Requests one connection may have in flight before its reader stops reading.
    pub connection_requests_max: usize,
    /// Cross-shard messages that may queue at one shard before senders wait.
    pub shard_queue_max: usize,
    /// io_uring registered buffer memory per shard; 0 = size it from RLIMIT_MEMLOCK.
    pub io_memory_bytes: usize,
    /// Most siblings one key may hold; a write that would make more is refused until a
    /// client resolves them (reads, then writes with the context it got).
    pub siblings_max: usize,
    /// A shard's memtable is sealed and flushed to an SSTable once it holds this much.
    pub memtable_bytes: usize,
    /// Each shard's block cache budget.
    pub cache_bytes: usize,
    /// Deleted keys keep their tombstones at least this long before compaction may drop
    /// them: the time hints, read repair and anti-entropy get to carry the delete to
    /// every replica. A replica that has not seen the delete by then can bring the old
    /// value back.
    pub gc_grace_secs: u64,
    /// Compaction reads at most this many bytes of tables per second per shard (0: no
    /// limit) while it keeps up: its disk traffic competes with requests' reads.
    pub compaction_bytes_per_sec: u64,
    /// `host:port` client addresses of nodes to join through (empty: start alone, or
    /// rejoin the members this node already knows).
    pub seeds: Vec<String>,
    /// Where this node is; replicas spread over distinct DCs and racks while they can.
    pub dc: String,
    pub rack: String,
    /// N: how many nodes store each key.
    pub replication_factor: usize,
    /// R and W when a request says "default".
    pub default_consistency: crate::protocol::Consistency,
    /// How often the node exchanges member tables with its seeds and members.
    pub membership_interval_ms: u64,
    /// How long a coordinator waits for a replica's answer before it counts it failed.
    pub replica_timeout_ms: u64,
    /// Clock entries of nodes that are no longer replicas of a key, and hold no values,
    /// are dropped once they are this old (DESIGN.md §5, `version::Pruning`).
    pub prune_clocks_after_secs: u64,
    /// `--max-hint-window`: hints older than this are dropped, and a node Down for
    /// longer gets no new ones (anti-entropy repairs it instead).
    pub max_hint_window_secs: u64,
    /// Most bytes of hints one shard keeps; past it, hints are refused (counted).
    pub hint_bytes_max: u64,
    /// How fast one shard replays hints to a node that is Up again.
    pub hint_replay_bytes_per_sec: u64,
    /// `--replace NODE_ID`: on an empty data dir, take over that (dead) node's tokens
    /// under a new id, and fill from the other replicas before serving reads.
    pub replace: Option<u64>,
    /// Seconds between two anti-entropy rounds of a shard (0: only `ringkv repair`).
    pub sync_interval_secs: u64,
    /// Bytes of tables per second one shard's anti-entropy scans read.
    pub sync_scan_bytes_per_sec: u64,
    /// Bytes of sets per second one shard's anti-entropy pushes and fetches.
    pub sync_bytes_per_sec: u64,
    /// Keys per second one shard's anti-entropy pushes and fetches (each one is a
    /// write or a read on some replica, however small its set).
    pub sync_keys_per_sec: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let limits = crate::protocol::Limits::default();
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            host: "127.0.0.1".to_string(),
            port: DEFAULT_PORT,
            // Off unless asked for: 6379 may belong to a real Redis on the machine, and
            // a node should not answer a protocol its operator did not choose.
            resp_port: None,
            // One shard per core the process may run on.
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            // 16 tokens per shard keeps every shard within a few % of an even share
            // while the ring stays small enough to send in a SHARD_MAP frame.
            vnodes_per_shard: 16,
            pin_cores: true,
            cpus: Vec::new(),
            // Seastar's default idle poll. A disk read completes about 50 µs after it is
            // sent; a shard that sleeps meanwhile pays the sleep and the wake-up (on a
            // virtual machine, ~10 µs more per read than polling: perf/README.md). 200 µs
            // covers a read and a round trip on loopback; past it the core goes idle.
            idle_poll_us: 200,
            sync: SyncPolicy::Batch,
            // Never lose a concurrent write silently (DESIGN.md §1); lww is opt-in.
            conflicts: ConflictMode::Dvv,
            // 64 MiB segments: few files, and recycling one frees a useful amount.
            commitlog_segment_bytes: 64 << 20,
            // 16 MiB queued per shard is ~10 ms of writes at disk speed.
            commitlog_buffer_bytes_max: 16 << 20,
            // DESIGN.md §1: keys up to 1 KiB, values up to 1 MiB; a frame carries a value
            // plus its key, context and fields (the protocol's own defaults, one source).
            key_bytes_max: limits.key_bytes_max,
            value_bytes_max: limits.value_bytes_max,
            frame_bytes_max: limits.frame_bytes_max,
            // 4096 in flight per shard is far past the knee of the latency curve.
            shard_requests_max: 4096,
            // Enough to keep a pipelining client busy; bounds one client's share.
            connection_requests_max: 256,
            shard_queue_max: 1024,
            io_memory_bytes: 0,
            // Riak warns at 25 and refuses at 100: past that, reads get slow and
            // something is writing blind in a loop.
            siblings_max: 100,
            // 64 MiB: flushes of a useful size, two of them (one sealed, one active)
            // per shard in memory.
            memtable_bytes: 64 << 20,
            // 64 MiB per shard holds the hot blocks; the OS page cache is bypassed
            // (O_DIRECT), so this is the only read cache.
            cache_bytes: 64 << 20,
            // Cassandra's default: 10 days, time for an operator to repair a node.
            gc_grace_secs: 10 * 24 * 3600,
            // 8 MiB/s per shard keeps reads during a compaction within 1.5x of their
            // quiet p99.9 (16 MiB/s: 1.7x, unlimited: 2x; perf/README.md). A shard
            // taking writes at full speed needs more; once tables pile up past twice
            // the compaction threshold, compaction runs unpaced until it catches up.
            compaction_bytes_per_sec: 8 << 20,
            seeds: Vec::new(),
            dc: "dc1".to_string(),
            rack: "rack1".to_string(),
            // Dynamo's and Cassandra's usual N: survives one node down at QUORUM.
            replication_factor: 3,
            default_consistency: crate::protocol::Consistency::Quorum,
            // Static membership: a new node is known everywhere within a second or two.
            membership_interval_ms: 1000,
            // Far above a loopback or LAN round trip and a replica's fdatasync (~1 ms);
            // short enough that a dead replica costs a client one second, not ten.
            replica_timeout_ms: 1000,
            // Riak's old_vclock: a day leaves read repair and anti-entropy ample time
            // to bring stale copies up to date before their entries go.
            prune_clocks_after_secs: 86_400,
            // Cassandra's default: three hours covers a reboot, a kernel upgrade or a
            // long network blip; a node away longer is repaired by anti-entropy.
            max_hint_window_secs: 3 * 3600,
            // 1 GiB per shard: about an hour of a 1 MB/s write stream to one Down node.
            hint_bytes_max: 1 << 30,
            // 16 MiB/s per shard drains an hour of hints in minutes without taking the
            // disk and the network from the foreground.
            hint_replay_bytes_per_sec: 16 << 20,
            replace: None,
            sync_interval_secs: 60,
            sync_scan_bytes_per_sec: 32 << 20,
            sync_bytes_per_sec: 16 << 20,
            // Small sets never reach the byte budget: 2 000 keys/s per shard bounds
            // the writes and reads a large repair adds on a replica (perf/README.md,
            // "Anti-entropy").
            sync_keys_per_sec: 2000,
        }
    }
}

impl ServerConfig {
    /// The port shard `shard` serves for shard-aware clients.
    pub fn shard_port(&self, shard: usize) -> u16 {
        self.port + 1 + shard as u16
    }

    /// Refuses settings that cannot work, saying which and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.shards == 0 || self.shards > 256 {
            return Err(format!(
                "--shards {} must be between 1 and 256",
                self.shards
            ));
        }
        if self.port as usize + self.shards >= u16::MAX as usize {
            return Err(format!(
                "--port {} leaves no room for {} shard ports after it",
                self.port, self.shards
            ));
        }
        // Cores online, not the ones this process may run on: `taskset` narrows those.
        let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
        if let Some(cpu) = self.cpus.iter().find(|&&c| c >= cores) {
            return Err(format!(
                "--cpus names core {cpu}, but this machine has cores 0..{cores}"
            ));
        }
        if let Some(resp_port) = self.resp_port {
            let binary = self.port..=self.shard_port(self.shards - 1);
            if resp_port == 0 || binary.contains(&resp_port) {
                return Err(format!(
                    "--resp-port {resp_port} must be a port of its own, not one of {}..={} \
                     (--port and the shard ports)",
                    binary.start(),
                    binary.end()
                ));
            }
        }
        if self.vnodes_per_shard == 0 || self.vnodes_per_shard > 1024 {
            return Err("--vnodes-per-shard must be between 1 and 1024".into());
        }
        if self.commitlog_segment_bytes % 4096 != 0 || self.commitlog_segment_bytes < 64 << 10 {
            return Err(
                "--commitlog-segment-bytes must be a multiple of 4096, at least 64 KiB".into(),
            );
        }
        if self.key_bytes_max == 0 || self.key_bytes_max > u16::MAX as u32 {
            return Err("--key-bytes-max must be between 1 and 65535 (keys are u16-framed)".into());
        }
        if self.value_bytes_max == 0 || self.value_bytes_max > 64 << 20 {
            return Err("--value-bytes-max must be between 1 and 64 MiB".into());
        }
        // Room in a frame for the key, the value, a context and the fields around them.
        let needed = self.key_bytes_max as u64 + self.value_bytes_max as u64 + 4096 + 64;
        if (self.frame_bytes_max as u64) < needed {
            return Err(format!(
                "--frame-bytes-max {} cannot carry a {}-byte key and a {}-byte value: raise it \
                 to at least {needed}",
                self.frame_bytes_max, self.key_bytes_max, self.value_bytes_max
            ));
        }
        // The commit log's segment header takes the first 4 KiB of a segment.
        if self.commitlog_segment_bytes < self.record_bytes_max() as u64 + 4096 {
            return Err(format!(
                "--commitlog-segment-bytes {} cannot hold the largest record ({} bytes: a \
                 key, up to 8 values of --value-bytes-max, their versions): raise it",
                self.commitlog_segment_bytes,
                self.record_bytes_max()
            ));
        }
        if self.memtable_bytes < 64 << 10 {
            return Err("--memtable-bytes must be at least 64 KiB".into());
        }
        if self.replication_factor == 0 || self.replication_factor > 127 {
            return Err("--replication-factor must be between 1 and 127".into());
        }
        if self.membership_interval_ms == 0 || self.replica_timeout_ms == 0 {
            return Err(
                "--membership-interval-ms and --replica-timeout-ms must be at least 1".into(),
            );
        }
        if let SyncPolicy::Periodic { period_ms } = self.sync {
            if period_ms == 0 {
                return Err("--sync-period-ms must be at least 1".into());
            }
        }
        Ok(())
    }

    /// Largest commit-log record: a key and its version set, which may hold several
    /// values (siblings). A set that would not fit is refused like too many siblings.
    pub fn record_bytes_max(&self) -> u32 {
        self.key_bytes_max
            .saturating_add(self.value_bytes_max.saturating_mul(8))
            .saturating_add(64 << 10)
    }

    /// A shard's hinted-handoff settings.
    pub fn handoff(&self) -> crate::server::handoff::HandoffConfig {
        crate::server::handoff::HandoffConfig {
            limits: crate::replication::hints::HintLimits {
                bytes_max: self.hint_bytes_max,
                window_us: self.max_hint_window_secs.saturating_mul(1_000_000),
            },
            // Segments a replay empties quickly; small enough that space comes back.
            segment_bytes_max: 16 << 20,
            replay_bytes_per_sec: self.hint_replay_bytes_per_sec.max(1),
        }
    }

    /// A shard's anti-entropy settings.
    pub fn sync(&self) -> crate::server::antientropy::SyncConfig {
        crate::server::antientropy::SyncConfig {
            interval: (self.sync_interval_secs > 0)
                .then(|| std::time::Duration::from_secs(self.sync_interval_secs)),
            scan_bytes_per_sec: self.sync_scan_bytes_per_sec,
            transfer_bytes_per_sec: self.sync_bytes_per_sec,
            transfer_keys_per_sec: self.sync_keys_per_sec,
            gc_grace_us: self.gc_grace_secs.saturating_mul(1_000_000),
            depth: crate::antientropy::DEPTH_DEFAULT,
        }
    }

    /// The storage engine's settings for the shard whose directory is `dir`.
    pub fn engine(&self, dir: PathBuf, node_id: u64) -> crate::storage::EngineConfig {
        crate::storage::EngineConfig {
            dir,
            node_id,
            sync: self.sync,
            conflicts: self.conflicts,
            segment_bytes: self.commitlog_segment_bytes,
            buffer_bytes_max: self.commitlog_buffer_bytes_max,
            record_bytes_max: self.record_bytes_max(),
            siblings_max: self.siblings_max,
            memtable_bytes: self.memtable_bytes,
            // One sealed memtable flushing while the next fills: writes wait only if a
            // flush takes longer than filling a whole memtable.
            sealed_memtables_max: 1,
            cache_bytes: self.cache_bytes,
            gc_grace_us: self.gc_grace_secs.saturating_mul(1_000_000),
            table: Default::default(),
            compaction: Default::default(),
            compaction_bytes_per_sec: self.compaction_bytes_per_sec,
            table_file_bytes_max: u64::MAX,
        }
    }

    /// What one RESP command may announce: bulk strings up to the frame limit.
    pub fn resp_limits(&self) -> crate::protocol::resp::RespLimits {
        crate::protocol::resp::RespLimits {
            bulk_bytes_max: self.frame_bytes_max,
            args_max: RESP_ARGS_MAX,
            inline_bytes_max: RESP_INLINE_BYTES_MAX,
            command_bytes_max: u64::from(self.frame_bytes_max) * RESP_COMMAND_FRAMES_MAX,
        }
    }

    /// Every port the node listens on: the client port, the shard ports, the RESP port.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports = vec![self.port];
        ports.extend((0..self.shards).map(|s| self.shard_port(s)));
        ports.extend(self.resp_port);
        ports
    }

    pub fn limits(&self) -> crate::protocol::Limits {
        crate::protocol::Limits {
            key_bytes_max: self.key_bytes_max,
            value_bytes_max: self.value_bytes_max,
            frame_bytes_max: self.frame_bytes_max,
        }
    }
}
