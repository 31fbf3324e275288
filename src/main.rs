//! The `ringkv` command: the server, a small CLI client, and the load generator.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};

use ringkv::client::blocking::BlockingClient;
use ringkv::client::Routing;
use ringkv::config::{ConflictMode, ServerConfig, SyncPolicy, DEFAULT_DATA_DIR, DEFAULT_PORT};
use ringkv::loadgen::keys::Distribution;
use ringkv::loadgen::target::{self as bench_target, RingkvOptions};
use ringkv::loadgen::workload::Workload;
use ringkv::loadgen::{self, BenchOptions, Load, Sweep};
use ringkv::protocol::{Consistency, QuorumMode, Request, Status};
use ringkv::runtime;

#[derive(Parser)]
#[command(
    name = "ringkv",
    version,
    about = "A Dynamo-style distributed key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum SyncArg {
    /// Acknowledge after fdatasync (survives power loss)
    Batch,
    /// Acknowledge at once, fdatasync every --sync-period-ms
    Periodic,
    /// Never fdatasync (tests only)
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum ConflictsArg {
    /// Concurrent writes become siblings (dotted version vectors)
    Dvv,
    /// Last write wins: blind writes, a concurrent write is lost to the newer one
    Lww,
}

impl From<ConflictsArg> for ConflictMode {
    fn from(arg: ConflictsArg) -> ConflictMode {
        match arg {
            ConflictsArg::Dvv => ConflictMode::Dvv,
            ConflictsArg::Lww => ConflictMode::Lww,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum RoutingArg {
    /// Each key to its owning shard's port
    Aware,
    /// Everything to --port; the server forwards
    Direct,
    /// Each key to a shard that does not own it (measures the cross-core hop)
    Forward,
    /// Each key to its primary replica's owning shard, on any node of the cluster
    Token,
}

#[derive(clap::Args)]
struct Target {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: one shard per core, data under --data-dir
    Server(Box<ServerArgs>),
    /// A cluster of --nodes server processes on loopback, data under --data-dir
    Local(LocalArgs),
    /// Write a value
    Put {
        key: String,
        value: String,
        /// Context (hex) from an earlier get: the write supersedes what it saw
        #[arg(long, default_value = "")]
        context: String,
        /// W: one, quorum, all, or a count (default: the server's)
        #[arg(long, default_value = "default", value_parser = parse_consistency)]
        consistency: Consistency,
        /// Strict quorum: only the key's preferred replicas count toward W (default:
        /// sloppy, where stand-ins for Down replicas count too)
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Read a key: every sibling and the context to write with (exit code 1 if absent)
    Get {
        key: String,
        /// R: one, quorum, all, or a count (default: the server's)
        #[arg(long, default_value = "default", value_parser = parse_consistency)]
        consistency: Consistency,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a key (a tombstone version)
    Del {
        key: String,
        #[arg(long, default_value = "")]
        context: String,
        /// W: one, quorum, all, or a count (default: the server's)
        #[arg(long, default_value = "default", value_parser = parse_consistency)]
        consistency: Consistency,
        /// Strict quorum: only the key's preferred replicas count toward W (default:
        /// sloppy, where stand-ins for Down replicas count too)
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        target: Target,
    },
    /// The cluster as one node knows it: nodes, Up/Suspect/Down, load, tokens,
    /// ownership, the hints it holds for each
    Status {
        /// N, for the ownership column (default: the node's)
        #[arg(long)]
        replication_factor: Option<usize>,
        #[command(flatten)]
        target: Target,
    },
    /// Run an anti-entropy round now on one node: every range it replicates is compared
    /// with every other replica and the differences are repaired both ways; prints
    /// what the round did
    Repair {
        /// Only this shard of the node (default: every shard)
        #[arg(long)]
        shard: Option<u16>,
        #[command(flatten)]
        target: Target,
    },
    /// Operator actions on one node
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Check that a node answers
    Ping {
        #[command(flatten)]
        target: Target,
    },
    /// YCSB-style load on ringkv or Redis, closed or open loop (latency corrected for
    /// coordinated omission), or a sweep of open-loop rates; percentiles, hgrm, JSON, SVG
    Bench(BenchArgs),
    /// One shard's storage engine without the network, like RocksDB's db_bench:
    /// fillrandom, readrandom, readrandom during a compaction
    BenchEngine(BenchEngineArgs),
    /// One 4 KiB O_DIRECT random read through glommio against a blocking pread of the
    /// same file, interleaved: what the runtime adds to every table block read
    BenchDisk(BenchDiskArgs),
    /// Inspect a commit-log segment
    Commitlog {
        #[command(subcommand)]
        action: DumpAction,
    },
    /// Inspect an SSTable
    Sstable {
        #[command(subcommand)]
        action: DumpAction,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Make the node drop or delay the internal traffic it sends to chosen peers (node
    /// ids in hex, as `ringkv status` shows them), for tests and failure rehearsals;
    /// `--heal` ends every fault first. Apply on both sides to cut a link both ways.
    Fault {
        /// Drop everything sent to these nodes (comma-separated ids)
        #[arg(long, value_delimiter = ',', value_parser = parse_node_id)]
        drop_to: Vec<u64>,
        /// Delay everything sent to --delay-to (default: every peer) by this much
        #[arg(long)]
        delay_ms: Option<u32>,
        #[arg(long, value_delimiter = ',', value_parser = parse_node_id)]
        delay_to: Vec<u64>,
        /// Clear every fault (before applying the others given)
        #[arg(long)]
        heal: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Flush the memtables and merge every table into one (a major compaction), on
    /// every shard of the node; tombstones past --gc-grace that anti-entropy proved
    /// every replica holds are dropped
    Compact {
        #[command(flatten)]
        target: Target,
    },
    /// One shard's anti-entropy trees: each range it replicates, its root, its dirty
    /// leaves (replicas in sync show the same roots for the same range)
    Trees {
        #[arg(long, default_value_t = 0)]
        shard: u16,
        #[command(flatten)]
        target: Target,
    },
}

/// A node id as `ringkv status` prints it: 16 hex digits (a `0x` prefix is allowed).
fn parse_node_id(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|_| format!("{s:?} is not a node id (hex, as ringkv status shows it)"))
}

/// `90s`, `30m`, `3h`, `500ms`, or plain seconds.
fn parse_duration_secs(s: &str) -> Result<u64, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |at| s.split_at(at));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration like 90s, 30m, 3h"))?;
    match unit {
        "" | "s" => Ok(n),
        "ms" => Ok(n.div_ceil(1000)),
        "m" => Ok(n * 60),
        "h" => Ok(n * 3600),
        "d" => Ok(n * 86_400),
        _ => Err(format!("{s:?}: unit {unit:?} is not one of ms, s, m, h, d")),
    }
}

#[derive(Subcommand)]
enum DumpAction {
    /// Print every record (or entry) of FILE, stopping at damage with its offset
    Dump { file: PathBuf },
}

#[derive(clap::Args)]
struct ServerArgs {
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Client port; shard k also listens on port + 1 + k
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Also serve the Redis protocol (RESP2/3: redis-cli, redis-py) on this port, on
    /// every shard; default: off (0 also means off)
    #[arg(long)]
    resp_port: Option<u16>,
    /// Shards (executors, one per core); default: the cores available
    #[arg(long)]
    shards: Option<usize>,
    /// Cores the shards are pinned to, in shard order, e.g. `1` or `1,0` (shard i on
    /// the (i mod len)-th); default: shard i on core i
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    #[arg(long, value_enum, default_value = "batch")]
    sync: SyncArg,
    #[arg(long, default_value_t = 10)]
    sync_period_ms: u64,
    /// How concurrent writes to a key are settled; fixed when the data dir is created
    #[arg(long, value_enum, default_value = "dvv")]
    conflicts: ConflictsArg,
    #[command(flatten)]
    cores: CoreArgs,
    #[arg(long)]
    vnodes_per_shard: Option<usize>,
    #[arg(long)]
    key_bytes_max: Option<u32>,
    #[arg(long)]
    value_bytes_max: Option<u32>,
    #[arg(long)]
    frame_bytes_max: Option<u32>,
    #[arg(long)]
    commitlog_segment_bytes: Option<u64>,
    /// Requests one shard works on at once before it stops reading its sockets
    #[arg(long)]
    shard_requests_max: Option<usize>,
    /// io_uring registered memory per shard in bytes (default: sized from RLIMIT_MEMLOCK)
    #[arg(long)]
    io_memory: Option<usize>,
    /// Memtable size per shard at which it is flushed to an SSTable
    #[arg(long)]
    memtable_bytes: Option<usize>,
    /// Block cache per shard in bytes
    #[arg(long)]
    cache_bytes: Option<usize>,
    /// How long a deleted key's tombstone is kept at least: compaction drops it only
    /// after this and once every replica is known to hold it (anti-entropy): e.g. 10d,
    /// 3h, 90s [default: 10d]
    #[arg(long = "gc-grace", alias = "gc-grace-secs", value_parser = parse_duration_secs)]
    gc_grace_secs: Option<u64>,
    /// Bytes of tables one shard's compaction reads per second (0: no limit)
    #[arg(long)]
    compaction_bytes_per_sec: Option<u64>,
    /// Nodes to join through, host:port of their client port, comma-separated
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<String>,
    /// This node's data center; replicas spread over distinct DCs while they can
    #[arg(long)]
    dc: Option<String>,
    /// This node's rack; replicas spread over distinct racks while they can
    #[arg(long)]
    rack: Option<String>,
    /// N: nodes that store each key (the same on every node of a cluster)
    #[arg(long)]
    replication_factor: Option<usize>,
    /// Milliseconds between member table exchanges with the seeds and members
    #[arg(long)]
    membership_interval_ms: Option<u64>,
    /// Milliseconds a coordinator waits for a replica before counting it failed
    #[arg(long)]
    replica_timeout_ms: Option<u64>,
    /// Seconds after which clock entries of nodes that are no longer replicas of a key
    /// (and hold no values) are dropped
    #[arg(long)]
    prune_clocks_after_secs: Option<u64>,
    /// Hints older than this are dropped, and a node Down longer gets no new ones
    /// (anti-entropy repairs it): e.g. 3h, 30m, 90s [default: 3h]
    #[arg(long, value_parser = parse_duration_secs)]
    max_hint_window: Option<u64>,
    /// Most bytes of hints one shard keeps [default: 1 GiB]
    #[arg(long)]
    hint_bytes_max: Option<u64>,
    /// Bytes per second one shard replays hints at [default: 16 MiB]
    #[arg(long)]
    hint_replay_bytes_per_sec: Option<u64>,
    /// On an empty data dir: take over the tokens of this dead node (its id in hex, as
    /// `ringkv status` shows it) under a new id, fill from the other replicas, and only
    /// then serve reads; needs --seeds
    #[arg(long, value_parser = parse_node_id)]
    replace: Option<u64>,
    /// Time between two anti-entropy rounds of a shard (0: only `ringkv repair`):
    /// e.g. 60s, 10m [default: 60s]
    #[arg(long, value_parser = parse_duration_secs)]
    sync_interval: Option<u64>,
    /// Bytes of tables per second one shard's anti-entropy scans read [default: 32 MiB]
    #[arg(long)]
    sync_scan_bytes_per_sec: Option<u64>,
    /// Bytes of version sets per second one shard's anti-entropy pushes and fetches
    /// [default: 16 MiB]
    #[arg(long)]
    sync_bytes_per_sec: Option<u64>,
    /// Keys per second one shard's anti-entropy pushes and fetches, 0: no limit
    /// [default: 2000]
    #[arg(long)]
    sync_keys_per_sec: Option<u64>,
}

/// How executors sit on cores: the server's shards, and the benchmarks standing for one.
#[derive(clap::Args)]
struct CoreArgs {
    /// Do not pin shards to cores (for machines shared with other work, and tests); an
    /// unpinned shard never polls, it sleeps as soon as it has nothing to run
    #[arg(long)]
    no_pin: bool,
    /// Microseconds a pinned shard with nothing to run keeps polling for completions
    /// and messages before it sleeps (0: sleep at once)
    #[arg(long, default_value_t = ServerConfig::default().idle_poll_us)]
    idle_poll_us: u64,
}

/// The core a benchmark's one executor runs on.
#[derive(clap::Args)]
struct BenchCoreArgs {
    #[command(flatten)]
    cores: CoreArgs,
    /// Core to pin the executor to: best the one that takes the disk's completion
    /// interrupts (a completion on another core first crosses to it)
    #[arg(long, default_value_t = 0)]
    cpu: usize,
}

impl BenchCoreArgs {
    fn cpu(&self) -> Option<usize> {
        (!self.cores.no_pin).then_some(self.cpu)
    }
}

#[derive(clap::Args)]
struct LocalArgs {
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Shards per node (the nodes share this machine, unpinned)
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Node 1's client port; node i listens 10 ports further per node
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Node i keeps its data in DIR/node<i> and its output in DIR/node<i>.log
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Flags for every node's `ringkv server`, after `--`
    #[arg(last = true)]
    server_args: Vec<String>,
}

#[derive(clap::Args)]
struct BenchEngineArgs {
    /// Where the engine's files go (created; must be on a real disk)
    #[arg(long, default_value = "ringkv-bench-engine")]
    dir: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    #[arg(long, default_value_t = 16)]
    key_bytes: usize,
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Reads per read phase (default: --keys)
    #[arg(long)]
    reads: Option<u64>,
    #[arg(long, default_value_t = 8 << 20)]
    cache_bytes: usize,
    #[arg(long, default_value_t = 64 << 20)]
    memtable_bytes: usize,
    #[arg(long, value_enum, default_value = "periodic")]
    sync: SyncArg,
    #[arg(long, default_value_t = 10)]
    sync_period_ms: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// dvv: every write reads the key first (to make its dot); lww: blind writes
    #[arg(long, value_enum, default_value = "dvv")]
    conflicts: ConflictsArg,
    /// Compaction's read rate limit in bytes/s (0: none; default: the server's)
    #[arg(long)]
    compaction_bytes_per_sec: Option<u64>,
    #[command(flatten)]
    cores: BenchCoreArgs,
}

#[derive(clap::Args)]
struct BenchDiskArgs {
    /// File to read (made of random bytes if shorter than --file-bytes); must be on a
    /// real disk
    #[arg(long, default_value = "ringkv-bench-disk.dat")]
    file: PathBuf,
    #[arg(long, default_value_t = 100 << 20)]
    file_bytes: u64,
    #[arg(long, default_value_t = 20_000)]
    reads: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[command(flatten)]
    cores: BenchCoreArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum WorkloadArg {
    /// 50% read, 50% update
    A,
    /// 95% read, 5% update
    B,
    /// 100% read
    C,
    /// 95% read (latest records), 5% insert
    D,
    /// 50% read, 50% read-modify-write
    F,
    /// 100% update
    WriteOnly,
}

#[derive(Clone, Copy, ValueEnum)]
enum DistributionArg {
    Uniform,
    /// YCSB's scrambled zipfian, constant 0.99
    Zipfian,
    /// The newest records most often (YCSB's skewed latest)
    Latest,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// What to load: ringkv://HOST:PORT (binary protocol) or redis://HOST:PORT (RESP2);
    /// default ringkv://--host:--port
    #[arg(long, conflicts_with_all = ["host", "port"])]
    target: Option<String>,
    /// ringkv host, when --target is not given
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// ringkv port, when --target is not given
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// YCSB core workload
    #[arg(long, value_enum, default_value = "a", conflicts_with = "read_ratio")]
    workload: WorkloadArg,
    /// Instead of --workload: this fraction reads, the rest updates (uniform keys)
    #[arg(long)]
    read_ratio: Option<f64>,
    /// Record choice (default: the workload's: latest for d, uniform for --read-ratio,
    /// zipfian otherwise)
    #[arg(long, value_enum)]
    distribution: Option<DistributionArg>,
    /// Records in the key space (key-0000000000 ...)
    #[arg(long, alias = "keys", default_value_t = 100_000)]
    records: u64,
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Requests outstanding per connection
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Open loop: requests scheduled at this many ops/s over all connections, latency
    /// measured from each one's intended send time
    #[arg(long, conflicts_with = "sweep")]
    rate: Option<f64>,
    /// Open-loop steps START:STEP:MAX ops/s, each --warmup + --duration long, until
    /// saturation (achieved < 90% of offered, p99 > --sweep-p99-ms, or errors)
    #[arg(long)]
    sweep: Option<String>,
    /// A sweep step with a p99 over this many milliseconds saturates
    #[arg(long, default_value_t = 100.0)]
    sweep_p99_ms: f64,
    /// Seconds to run before recording (each sweep step)
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Seconds to record (each sweep step; default 10 unless --ops)
    #[arg(long)]
    duration: Option<f64>,
    /// Operations to record (instead of --duration)
    #[arg(long)]
    ops: Option<u64>,
    #[arg(long, value_enum, default_value = "aware")]
    routing: RoutingArg,
    /// R and W of every request: one, quorum, all, a count, or default (the server's)
    #[arg(long, default_value = "default", value_parser = parse_consistency)]
    consistency: Consistency,
    /// Client threads (executors)
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Write every record once before measuring
    #[arg(long)]
    prefill: bool,
    /// Count the samples at or over this many milliseconds (summary and JSON)
    #[arg(long, default_value_t = 10.0)]
    slow_ms: f64,
    /// Print a progress line on stderr every second even when it is not a terminal
    #[arg(long)]
    progress: bool,
    /// Write the latency distribution of all operations in HdrHistogram's percentile
    /// format (milliseconds); a sweep writes one file per step, FILE with -RATE added
    #[arg(long)]
    hgrm: Option<PathBuf>,
    /// Write the summary as JSON (per-operation percentiles in µs, sweep steps)
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG: latency by percentile; for a sweep also throughput vs latency
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            // Our errors already carry their causes in their messages.
            eprintln!("ringkv: {e}");
            ExitCode::from(2)
        }
    }
}

/// `one`, `quorum`, `all`, `default`, or a replica count 1..=63.
fn parse_consistency(s: &str) -> Result<Consistency, String> {
    match s {
        "default" => Ok(Consistency::Default),
        "one" => Ok(Consistency::One),
        "quorum" => Ok(Consistency::Quorum),
        "all" => Ok(Consistency::All),
        n => match n.parse::<u8>() {
            Ok(count) if (1..=Consistency::COUNT_MAX).contains(&count) => {
                Ok(Consistency::Count(count))
            }
            _ => Err(format!(
                "{n:?}: expected one, quorum, all, default or a count 1..=63"
            )),
        },
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_secs(10);
    let connect = |t: &Target| BlockingClient::connect(&t.host, t.port, timeout);
    let connect_at = |t: &Target, consistency: Consistency| {
        connect(t).map(|mut client| {
            client.set_consistency(consistency);
            client
        })
    };
    let quorum = |strict: bool| {
        if strict {
            QuorumMode::Strict
        } else {
            QuorumMode::Sloppy
        }
    };
    match cli.command {
        Command::Server(args) => serve(*args),
        Command::Local(args) => local(args),
        Command::Put {
            key,
            value,
            context,
            consistency,
            strict,
            target,
        } => {
            let context = hex_decode(&context)?;
            let mut client = connect_at(&target, consistency)?;
            client.set_quorum(quorum(strict));
            let new = client.put(key.as_bytes(), value.as_bytes(), &context)?;
            println!("OK context={}", hex_encode(&new));
            Ok(ExitCode::SUCCESS)
        }
        Command::Del {
            key,
            context,
            consistency,
            strict,
            target,
        } => {
            let context = hex_decode(&context)?;
            let mut client = connect_at(&target, consistency)?;
            client.set_quorum(quorum(strict));
            let new = client.delete(key.as_bytes(), &context)?;
            println!("OK context={}", hex_encode(&new));
            Ok(ExitCode::SUCCESS)
        }
        Command::Get {
            key,
            consistency,
            target,
        } => {
            let result = connect_at(&target, consistency)?.get(key.as_bytes())?;
            if result.values.is_empty() {
                println!("(not found) context={}", hex_encode(&result.context));
                return Ok(ExitCode::from(1));
            }
            if result.values.len() == 1 {
                println!("{}", String::from_utf8_lossy(&result.values[0].value));
            } else {
                println!("{} siblings:", result.values.len());
                for (i, v) in result.values.iter().enumerate() {
                    println!(
                        "  {}) [{} µs] {}",
                        i + 1,
                        v.timestamp_us,
                        String::from_utf8_lossy(&v.value)
                    );
                }
            }
            println!("context={}", hex_encode(&result.context));
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            replication_factor,
            target,
        } => {
            let table = ringkv::status::status(
                &target.host,
                target.port,
                replication_factor,
                Duration::from_secs(2),
            )
            .map_err(anyhow::Error::msg)?;
            print!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin {
            action:
                AdminAction::Fault {
                    drop_to,
                    delay_ms,
                    delay_to,
                    heal,
                    target,
                },
        } => {
            let change = ringkv::server::faults::FaultChange {
                heal,
                drop_to,
                delay_ms,
                delay_to,
            };
            let response = connect(&target)?.request(&Request::Fault {
                spec: change.encode().into(),
            })?;
            if response.status != Status::Ok {
                anyhow::bail!("{:?}: {}", response.status, response.message);
            }
            println!("OK");
            Ok(ExitCode::SUCCESS)
        }
        Command::Repair { shard, target } => {
            let shard = shard.unwrap_or(ringkv::protocol::REPAIR_ALL_SHARDS);
            // A round compares every range with every peer: give it time.
            let mut client = ringkv::client::blocking::BlockingClient::connect(
                &target.host,
                target.port,
                Duration::from_secs(3600),
            )?;
            let response = client.request(&Request::Repair { shard })?;
            let report = match (response.status, response.body) {
                (Status::Ok, ringkv::protocol::ResponseBody::Repair { report }) => {
                    ringkv::server::antientropy::RepairReport::decode(&report)
                        .map_err(anyhow::Error::msg)?
                }
                (status, _) => anyhow::bail!("{status:?}: {}", response.message),
            };
            println!(
                "shards {}  ranges {}  syncs {} ok, {} failed, {} skipped  differing leaves {}",
                report.shards,
                report.ranges,
                report.syncs,
                report.syncs_failed,
                report.syncs_skipped,
                report.differing_leaves
            );
            if report.ranges_differing > 0 {
                println!(
                    "ranges that differed: {}, listed in {} scans of this node's shards",
                    report.ranges_differing, report.listings
                );
            }
            if report.ranges_unsynced > 0 {
                println!(
                    "ranges no sync completed for: {} (every peer failed or was skipped)",
                    report.ranges_unsynced
                );
            }
            println!(
                "keys pushed {}  pulled {}  tombstones withheld {}  bytes sent {}  received {}",
                report.keys_pushed,
                report.keys_pulled,
                report.tombstones_withheld,
                report.bytes_sent,
                report.bytes_received
            );
            if let Some(e) = &report.first_error {
                println!("first failure: {e}");
            }
            Ok(if report.syncs_failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Admin {
            action: AdminAction::Compact { target },
        } => {
            let mut client = ringkv::client::blocking::BlockingClient::connect(
                &target.host,
                target.port,
                Duration::from_secs(3600),
            )?;
            let response = client.request(&Request::Compact {
                shard: ringkv::protocol::REPAIR_ALL_SHARDS,
            })?;
            if response.status != Status::Ok {
                anyhow::bail!("{:?}: {}", response.status, response.message);
            }
            println!("OK");
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin {
            action: AdminAction::Trees { shard, target },
        } => {
            let response = connect(&target)?.request(&Request::Sync {
                shard,
                body: ringkv::server::antientropy::encode_trees_request(0),
            })?;
            let body = match (response.status, response.body) {
                (Status::Ok, ringkv::protocol::ResponseBody::Sync { body }) => body,
                (status, _) => anyhow::bail!("{status:?}: {}", response.message),
            };
            let reply = ringkv::server::antientropy::wire::decode_reply(body, u16::MAX as usize)
                .map_err(anyhow::Error::msg)?;
            let ringkv::server::antientropy::wire::Reply::Trees(trees) = reply else {
                anyhow::bail!("the node answered TREES with another step");
            };
            for tree in trees {
                println!(
                    "({:#018x}, {:#018x}] root {:016x} dirty {} {}",
                    tree.start,
                    tree.end,
                    tree.root,
                    tree.dirty,
                    if tree.ready { "ready" } else { "building" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ping { target } => {
            let started = std::time::Instant::now();
            connect(&target)?.ping()?;
            println!(
                "PONG from {}:{} in {:?}",
                target.host,
                target.port,
                started.elapsed()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => bench(args),
        Command::BenchEngine(args) => bench_engine(args),
        Command::BenchDisk(args) => bench_disk(args),
        Command::Commitlog {
            action: DumpAction::Dump { file },
        } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            ringkv::inspect::dump_commitlog(&file, &mut out).map_err(anyhow::Error::msg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sstable {
            action: DumpAction::Dump { file },
        } => dump_sstable(file),
    }
}

fn sync_policy(sync: SyncArg, period_ms: u64) -> SyncPolicy {
    match sync {
        SyncArg::Batch => SyncPolicy::Batch,
        SyncArg::Periodic => SyncPolicy::Periodic { period_ms },
        SyncArg::None => SyncPolicy::None,
    }
}

fn bench_engine(args: BenchEngineArgs) -> anyhow::Result<ExitCode> {
    let options = loadgen::engine_bench::EngineBenchOptions {
        dir: args.dir,
        keys: args.keys,
        key_bytes: args.key_bytes,
        value_bytes: args.value_bytes,
        reads: args.reads.unwrap_or(args.keys),
        cache_bytes: args.cache_bytes,
        memtable_bytes: args.memtable_bytes,
        sync: sync_policy(args.sync, args.sync_period_ms),
        conflicts: args.conflicts.into(),
        seed: args.seed,
        compaction_bytes_per_sec: args
            .compaction_bytes_per_sec
            .unwrap_or(ringkv::config::ServerConfig::default().compaction_bytes_per_sec),
        cpu: args.cores.cpu(),
        idle_poll_us: args.cores.cores.idle_poll_us,
    };
    println!(
        "bench-engine: {} keys of {} bytes, {}-byte values, cache {} KiB, memtable {} KiB, \
         sync {:?}, conflicts {}, dir {}",
        options.keys,
        options.key_bytes,
        options.value_bytes,
        options.cache_bytes >> 10,
        options.memtable_bytes >> 10,
        options.sync,
        options.conflicts.name(),
        options.dir.display()
    );
    loadgen::engine_bench::run(&options, |phase| println!("{}", phase.line()))
        .map_err(anyhow::Error::msg)?;
    Ok(ExitCode::SUCCESS)
}

fn bench_disk(args: BenchDiskArgs) -> anyhow::Result<ExitCode> {
    let options = loadgen::disk_bench::DiskBenchOptions {
        file: args.file,
        file_bytes: args.file_bytes,
        reads: args.reads,
        seed: args.seed,
        cpu: args.cores.cpu(),
        idle_poll_us: args.cores.cores.idle_poll_us,
    };
    let (pread_us, glommio_us) = loadgen::disk_bench::run(&options).map_err(anyhow::Error::msg)?;
    println!(
        "bench-disk: {} random 4 KiB O_DIRECT reads each of {} ({} MiB): pread_us={pread_us:.1} \
         glommio_us={glommio_us:.1} glommio_extra_us={:.1}",
        options.reads,
        options.file.display(),
        options.file_bytes >> 20,
        glommio_us - pread_us
    );
    Ok(ExitCode::SUCCESS)
}

fn serve(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let defaults = ServerConfig::default();
    let config = ServerConfig {
        data_dir: args.data_dir,
        host: args.host,
        port: args.port,
        resp_port: args.resp_port.filter(|&port| port != 0),
        shards: args.shards.unwrap_or(defaults.shards),
        vnodes_per_shard: args.vnodes_per_shard.unwrap_or(defaults.vnodes_per_shard),
        pin_cores: !args.cores.no_pin,
        cpus: args.cpus,
        idle_poll_us: args.cores.idle_poll_us,
        sync: sync_policy(args.sync, args.sync_period_ms),
        conflicts: args.conflicts.into(),
        commitlog_segment_bytes: args
            .commitlog_segment_bytes
            .unwrap_or(defaults.commitlog_segment_bytes),
        key_bytes_max: args.key_bytes_max.unwrap_or(defaults.key_bytes_max),
        value_bytes_max: args.value_bytes_max.unwrap_or(defaults.value_bytes_max),
        frame_bytes_max: args.frame_bytes_max.unwrap_or(defaults.frame_bytes_max),
        shard_requests_max: args
            .shard_requests_max
            .unwrap_or(defaults.shard_requests_max),
        io_memory_bytes: args.io_memory.unwrap_or(defaults.io_memory_bytes),
        memtable_bytes: args.memtable_bytes.unwrap_or(defaults.memtable_bytes),
        cache_bytes: args.cache_bytes.unwrap_or(defaults.cache_bytes),
        gc_grace_secs: args.gc_grace_secs.unwrap_or(defaults.gc_grace_secs),
        compaction_bytes_per_sec: args
            .compaction_bytes_per_sec
            .unwrap_or(defaults.compaction_bytes_per_sec),
        seeds: args.seeds,
        dc: args.dc.unwrap_or(defaults.dc.clone()),
        rack: args.rack.unwrap_or(defaults.rack.clone()),
        replication_factor: args
            .replication_factor
            .unwrap_or(defaults.replication_factor),
        membership_interval_ms: args
            .membership_interval_ms
            .unwrap_or(defaults.membership_interval_ms),
        replica_timeout_ms: args
            .replica_timeout_ms
            .unwrap_or(defaults.replica_timeout_ms),
        prune_clocks_after_secs: args
            .prune_clocks_after_secs
            .unwrap_or(defaults.prune_clocks_after_secs),
        max_hint_window_secs: args
            .max_hint_window
            .unwrap_or(defaults.max_hint_window_secs),
        hint_bytes_max: args.hint_bytes_max.unwrap_or(defaults.hint_bytes_max),
        hint_replay_bytes_per_sec: args
            .hint_replay_bytes_per_sec
            .unwrap_or(defaults.hint_replay_bytes_per_sec),
        replace: args.replace,
        sync_interval_secs: args.sync_interval.unwrap_or(defaults.sync_interval_secs),
        sync_scan_bytes_per_sec: args
            .sync_scan_bytes_per_sec
            .unwrap_or(defaults.sync_scan_bytes_per_sec),
        sync_bytes_per_sec: args
            .sync_bytes_per_sec
            .unwrap_or(defaults.sync_bytes_per_sec),
        sync_keys_per_sec: args.sync_keys_per_sec.unwrap_or(defaults.sync_keys_per_sec),
        ..defaults
    };
    config.validate().map_err(anyhow::Error::msg)?;
    runtime::block_shutdown_signals();
    let node = runtime::start(config.clone())?;
    let resp = config
        .resp_port
        .map_or(String::new(), |port| format!(", RESP on port {port}"));
    println!(
        "ringkv node {:016x} serving {}:{} with {} shards (shard ports {}..={}){resp}, data in {}, sync {:?}, conflicts {}",
        node.meta.node_id,
        config.host,
        config.port,
        config.shards,
        config.shard_port(0),
        config.shard_port(config.shards - 1),
        config.data_dir.display(),
        config.sync,
        config.conflicts.name()
    );
    let signal = runtime::wait_for_shutdown_signal();
    eprintln!("ringkv: signal {signal}: shutting down");
    node.shutdown();
    Ok(ExitCode::SUCCESS)
}

fn local(args: LocalArgs) -> anyhow::Result<ExitCode> {
    let options = ringkv::local::LocalOptions {
        nodes: args.nodes,
        shards: args.shards,
        port: args.port,
        data_dir: args.data_dir,
        server_args: args.server_args,
    };
    runtime::block_shutdown_signals();
    let mut cluster = ringkv::local::LocalCluster::start(&options).map_err(anyhow::Error::msg)?;
    println!("ringkv: a {}-node cluster on loopback:", options.nodes);
    for (i, node) in cluster.nodes.iter().enumerate() {
        println!(
            "  node {}  127.0.0.1:{}  RESP {}  data {}  log {}",
            i + 1,
            node.port,
            node.resp_port,
            node.data_dir.display(),
            node.log.display()
        );
    }
    let first = cluster.nodes[0].port;
    println!("try:  ringkv put --port {first} greeting hello");
    println!(
        "      ringkv get --port {} greeting",
        cluster.nodes.last().map_or(first, |n| n.port)
    );
    println!("      ringkv status --port {first}");
    println!(
        "      redis-cli -p {} get greeting",
        cluster.nodes.last().map_or(first, |n| n.resp_port)
    );
    println!("Ctrl-C stops every node.");
    let signal = runtime::wait_for_shutdown_signal();
    eprintln!("ringkv: signal {signal}: stopping the nodes");
    cluster.stop();
    Ok(ExitCode::SUCCESS)
}

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.connections == 0 || args.pipeline == 0 || args.threads == 0 || args.records == 0 {
        bail!("--connections, --pipeline, --threads and --records must be at least 1");
    }
    let workload = match (args.read_ratio, args.workload) {
        (Some(r), _) if !(0.0..=1.0).contains(&r) => bail!("--read-ratio must be between 0 and 1"),
        (Some(read_ratio), _) => Workload::Custom { read_ratio },
        (None, WorkloadArg::A) => Workload::A,
        (None, WorkloadArg::B) => Workload::B,
        (None, WorkloadArg::C) => Workload::C,
        (None, WorkloadArg::D) => Workload::D,
        (None, WorkloadArg::F) => Workload::F,
        (None, WorkloadArg::WriteOnly) => Workload::WriteOnly,
    };
    let target = match &args.target {
        Some(url) => bench_target::Target::parse(url).map_err(anyhow::Error::msg)?,
        None => bench_target::Target::Ringkv {
            host: args.host.clone(),
            port: args.port,
        },
    };
    let load = match (args.rate, &args.sweep) {
        (Some(rate), _) if !rate.is_finite() || rate <= 0.0 => bail!("--rate must be above 0"),
        (Some(ops_per_sec), _) => Load::Open { ops_per_sec },
        (None, Some(text)) => Load::Sweep(
            Sweep::parse(text, Duration::from_secs_f64(args.sweep_p99_ms / 1e3))
                .map_err(anyhow::Error::msg)?,
        ),
        (None, None) => Load::Closed,
    };
    let options = BenchOptions {
        target,
        ringkv: RingkvOptions {
            routing: match args.routing {
                RoutingArg::Aware => Routing::ShardAware,
                RoutingArg::Direct => Routing::Direct,
                RoutingArg::Forward => Routing::ForceForward,
                RoutingArg::Token => Routing::TokenAware,
            },
            consistency: args.consistency,
        },
        connections: args.connections,
        pipeline: args.pipeline,
        records: args.records,
        value_size: args.value_size,
        workload,
        distribution: match args.distribution {
            None => workload.default_distribution(),
            Some(DistributionArg::Uniform) => Distribution::Uniform,
            Some(DistributionArg::Zipfian) => Distribution::Zipfian,
            Some(DistributionArg::Latest) => Distribution::Latest,
        },
        load,
        warmup: Duration::from_secs_f64(args.warmup.max(0.0)),
        duration: match (args.duration, args.ops) {
            (None, None) => Some(Duration::from_secs(10)),
            (d, _) => d.map(Duration::from_secs_f64),
        },
        ops: args.ops,
        threads: args.threads,
        prefill: args.prefill,
        slow: Duration::from_secs_f64(args.slow_ms.max(0.0) / 1e3),
        progress: args.progress || std::io::stderr().is_terminal(),
    };
    let report = loadgen::run(&options).map_err(anyhow::Error::msg)?;
    print!("{}", report.summary());
    write_outputs(&args, &report)?;
    Ok(if report.errors() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The --hgrm, --json and --plot files.
fn write_outputs(args: &BenchArgs, report: &loadgen::report::BenchReport) -> anyhow::Result<()> {
    let write = |path: &PathBuf, text: String| {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    };
    if let Some(path) = &args.hgrm {
        if report.sweep.is_some() {
            for run in &report.runs {
                let rate = run.offered_ops_per_sec.unwrap_or(0.0);
                write(
                    &step_path(path, rate),
                    loadgen::report::hgrm(&run.stats.all()),
                )?;
            }
        } else if let Some(run) = report.runs.last() {
            write(path, loadgen::report::hgrm(&run.stats.all()))?;
        }
    }
    if let Some(path) = &args.json {
        write(path, serde_json::to_string_pretty(&report.json())? + "\n")?;
    }
    if let Some(path) = &args.plot {
        write(
            path,
            loadgen::plot::svg(report).map_err(anyhow::Error::msg)?,
        )?;
    }
    Ok(())
}

/// `out.hgrm` for the step at 3000 ops/s: `out-3000.hgrm`.
fn step_path(path: &std::path::Path, rate: f64) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{rate:.0}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{rate:.0}"),
    };
    path.with_file_name(name)
}

/// Runs the SSTable inspector on a small glommio executor (tables are read with
/// O_DIRECT). glommio must first open a non-empty file on the table's device (see
/// `prime_direct_reads` in the engine), so a 4 KiB probe is written next to the table.
fn dump_sstable(file: PathBuf) -> anyhow::Result<ExitCode> {
    runtime::checks::raise_memlock()?;
    let dir = file
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let probe = dir.join(format!(".ringkv-dump-probe-{}", std::process::id()));
    std::fs::write(&probe, [0u8; 4096])
        .with_context(|| format!("writing the O_DIRECT probe {}", probe.display()))?;
    let result = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn({
            let probe = probe.clone();
            move || async move {
                ringkv::storage::sstable::prime_iopoll_probe(&probe)
                    .await
                    .map_err(|e| format!("open {}: {e}", probe.display()))?;
                let mut out = std::io::BufWriter::new(std::io::stdout());
                ringkv::inspect::dump_sstable(&file, &mut out).await?;
                std::io::Write::flush(&mut out).map_err(|e| e.to_string())
            }
        })
        .map_err(|e| anyhow::anyhow!("starting an executor: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("executor: {e}"));
    let _ = std::fs::remove_file(&probe);
    result?.map_err(anyhow::Error::msg)?;
    Ok(ExitCode::SUCCESS)
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    if text.len() % 2 != 0 {
        bail!("context must be hex with an even number of digits");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).context("context must be hex"))
        .collect()
}
