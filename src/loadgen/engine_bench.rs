//! `ringkv bench-engine`: one shard's storage engine measured on its own, the way
//! RocksDB's `db_bench` measures RocksDB (no network, one thread, one operation at a
//! time), so that perf/engine-vs-rocksdb.sh can put the two side by side.
//!
//! Phases, on one engine in `--dir`:
//! 1. `fillrandom`: `keys` writes of keys drawn uniformly from `0..keys` (with
//!    repeats, as db_bench does), 16-digit keys, values half random, half zeros (db_bench's
//!    default compression ratio of 0.5).
//! 2. Wait until flushes and compactions are done.
//! 3. `readrandom`: `reads` reads of keys drawn the same way (about 63 % exist).
//! 4. `readrandom_during_compaction`: the same reads while a major compaction of every
//!    table runs in its low-share queue; the phase stops when the compaction ends, so
//!    every read in it overlapped the compaction.
//! 5. `updaterandom`: `reads` updates of random keys on the filled store, each a read
//!    of the key, then a write with the context the read returned (db_bench's
//!    `updaterandom`: read, then write).
//!
//! `--conflicts` picks the engine's mode. Under `lww` a write is blind, as RocksDB's put
//! is, and a key drawn twice keeps one value: the like-for-like comparison with
//! db_bench's fillrandom. Under `dvv` every write reads the key's versions first (it
//! needs them to make the new version's dot), and a write overwrites only what its
//! context covers: so fillrandom there writes as a DVV client that means to overwrite
//! must, with the context of a read of the key. The store then holds one value per key
//! in both modes, as RocksDB's does, and readrandom reads the same data; a blind fill
//! would leave two siblings on every key drawn twice (a quarter more bytes to read).
//!
//! Each phase reports throughput and latency percentiles from an HdrHistogram.

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

use crate::config::{ConflictMode, ServerConfig, SyncPolicy};
use crate::runtime::checks;
use crate::storage::Engine;
use crate::version::{self, Context};

#[derive(Clone, Debug)]
pub struct EngineBenchOptions {
    pub dir: PathBuf,
    pub keys: u64,
    pub key_bytes: usize,
    pub value_bytes: usize,
    /// Reads per read phase (default: `keys`).
    pub reads: u64,
    pub cache_bytes: usize,
    pub memtable_bytes: usize,
    pub sync: SyncPolicy,
    pub conflicts: ConflictMode,
    pub seed: u64,
    pub compaction_bytes_per_sec: u64,
    /// The core the executor is pinned to (as shard 0 is), or none: unbound.
    pub cpu: Option<usize>,
    /// While pinned, how long the idle executor polls before it sleeps (the server's
    /// `--idle-poll-us`).
    pub idle_poll_us: u64,
}

/// One phase's figures.
pub struct PhaseReport {
    pub name: &'static str,
    pub ops: u64,
    pub elapsed: Duration,
    /// Latency per operation, nanoseconds.
    pub latency: Histogram<u64>,
    /// Reads that found their key (read phases).
    pub found: u64,
    /// Block cache lookups during the phase: `(hits, misses)`.
    pub cache: (u64, u64),
    /// CPU time of the whole process (user and system, every thread) over the phase: a
    /// polling executor spends its waits on the CPU, and this shows what that costs.
    pub cpu: Duration,
}

impl PhaseReport {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU microseconds per operation.
    pub fn cpu_us_per_op(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.ops.max(1) as f64
    }

    /// `name: ops_per_sec=… p50_us=… p99_us=… p999_us=…`: the line the perf script reads.
    pub fn line(&self) -> String {
        let us = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "{}: ops_per_sec={:.0} p50_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} ops={} found={} cache_hits={} cache_misses={} cpu_us_per_op={:.1}",
            self.name,
            self.ops_per_sec(),
            us(0.5),
            us(0.99),
            us(0.999),
            self.latency.max() as f64 / 1000.0,
            self.ops,
            self.found,
            self.cache.0,
            self.cache.1,
            self.cpu_us_per_op()
        )
    }
}

/// Runs the phases; `progress` gets each phase's report as it ends.
pub fn run(
    options: &EngineBenchOptions,
    mut progress: impl FnMut(&PhaseReport) + Send + 'static,
) -> Result<Vec<PhaseReport>, String> {
    if options.key_bytes < 8 || options.key_bytes > 1024 {
        return Err("--key-bytes must be between 8 and 1024".into());
    }
    checks::check_io_uring().map_err(|e| e.to_string())?;
    let memlock = checks::raise_memlock().map_err(|e| e.to_string())?;
    let io_memory = checks::size_io_memory(memlock, 1, 0).map_err(|e| e.to_string())?;
    checks::check_data_dir(&options.dir).map_err(|e| e.to_string())?;
    let options = options.clone();
    let idle_poll = Duration::from_micros(options.idle_poll_us);
    crate::runtime::executor("bench-engine", options.cpu, idle_poll, io_memory)
        .spawn(move || async move {
            crate::runtime::watchdog::guarded("bench-engine executor", async {
                phases(&options, &mut progress).await
            })
            .await
        })
        .map_err(|e| format!("starting the executor: {e}"))?
        .join()
        .map_err(|e| format!("the benchmark's executor failed: {e:?}"))?
}

async fn phases(
    options: &EngineBenchOptions,
    progress: &mut impl FnMut(&PhaseReport),
) -> Result<Vec<PhaseReport>, String> {
    let defaults = ServerConfig {
        sync: options.sync,
        conflicts: options.conflicts,
        memtable_bytes: options.memtable_bytes,
        cache_bytes: options.cache_bytes,
        compaction_bytes_per_sec: options.compaction_bytes_per_sec,
        ..ServerConfig::default()
    };
    let config = defaults.engine(options.dir.join("shard-000"), 1);
    let queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(1000),
        glommio::Latency::Matters(Duration::from_millis(1)),
        "commitlog",
    );
    let engine = Rc::new(
        Engine::open(config, queue)
            .await
            .map_err(|e| e.to_string())?,
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
    let mut reports = Vec::new();

    let fill = write_phase(
        &engine,
        options,
        options.keys,
        &mut rng,
        "fillrandom",
        options.conflicts == ConflictMode::Dvv,
    )
    .await?;
    progress(&fill);
    reports.push(fill);
    engine.flush().await.map_err(|e| e.to_string())?;
    engine.compactions_idle().await.map_err(|e| e.to_string())?;

    let idle = read_phase(&engine, options, &mut rng, "readrandom", None).await?;
    progress(&idle);
    reports.push(idle);

    let compacting = Rc::new(Cell::new(true));
    let compaction = {
        let (engine, compacting) = (engine.clone(), compacting.clone());
        glommio::spawn_local(async move {
            let result = engine.compact_all().await;
            compacting.set(false);
            result
        })
    };
    let during = read_phase(
        &engine,
        options,
        &mut rng,
        "readrandom_during_compaction",
        Some(&compacting),
    )
    .await?;
    compaction.await.map_err(|e| format!("compaction: {e}"))?;
    progress(&during);
    reports.push(during);

    let update = write_phase(
        &engine,
        options,
        options.reads,
        &mut rng,
        "updaterandom",
        true,
    )
    .await?;
    progress(&update);
    reports.push(update);
    eprintln!(
        "bench-engine: {} tables, {} KiB in the block cache, engine {:?}",
        engine.table_count(),
        engine.cache_bytes() >> 10,
        engine.stats()
    );
    engine.close().await.map_err(|e| e.to_string())?;
    Ok(reports)
}

/// Cache hits and misses since `before` (an earlier [`Engine::cache_lookups`]).
fn cache_since(engine: &Engine, before: (u64, u64)) -> (u64, u64) {
    let now = engine.cache_lookups();
    (now.0 - before.0, now.1 - before.1)
}

/// User plus system CPU time of this process so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// Key `n` as `key_bytes` ASCII digits (zero-padded), like db_bench's fixed-size keys.
fn key(n: u64, key_bytes: usize, out: &mut Vec<u8>) {
    out.clear();
    let digits = format!("{n:0width$}", width = key_bytes);
    out.extend_from_slice(&digits.as_bytes()[digits.len() - key_bytes..]);
}

/// `ops` writes of random keys; with `read_first`, each after a read of its key, with
/// the context that read returned (blind otherwise). Latency covers both.
async fn write_phase(
    engine: &Engine,
    options: &EngineBenchOptions,
    ops: u64,
    rng: &mut impl Rng,
    name: &'static str,
    read_first: bool,
) -> Result<PhaseReport, String> {
    let mut latency = new_histogram();
    let mut k = Vec::with_capacity(options.key_bytes);
    let mut value = vec![0u8; options.value_bytes];
    let mut found = 0;
    let lookups = engine.cache_lookups();
    let cpu = process_cpu();
    let started = Instant::now();
    for _ in 0..ops {
        key(rng.gen_range(0..options.keys), options.key_bytes, &mut k);
        // Half random, half zeros: compresses to about half, as db_bench's values do.
        rng.fill(&mut value[..options.value_bytes / 2]);
        let t = Instant::now();
        let context = if read_first {
            let stored = engine.get(&k).await.map_err(|e| format!("{name}: {e}"))?;
            found += u64::from(stored.is_some());
            stored.map_or_else(Context::empty, |v| v.context())
        } else {
            Context::empty()
        };
        engine
            .write(&k, &context, Some(&value), version::now_us())
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        latency.saturating_record(t.elapsed().as_nanos() as u64);
        // Writes served from memory never yield: let the flush and the watchdog run.
        glommio::yield_if_needed().await;
    }
    Ok(PhaseReport {
        name,
        ops,
        elapsed: started.elapsed(),
        latency,
        found,
        cache: cache_since(engine, lookups),
        cpu: process_cpu().saturating_sub(cpu),
    })
}

/// Reads random keys: `options.reads` of them, or fewer if `while_set` clears first.
async fn read_phase(
    engine: &Engine,
    options: &EngineBenchOptions,
    rng: &mut impl Rng,
    name: &'static str,
    while_set: Option<&Cell<bool>>,
) -> Result<PhaseReport, String> {
    let mut latency = new_histogram();
    let mut k = Vec::with_capacity(options.key_bytes);
    let (mut ops, mut found) = (0, 0);
    let lookups = engine.cache_lookups();
    let cpu = process_cpu();
    let started = Instant::now();
    loop {
        // Reads that all hit the cache never wait for the disk and leave the compaction
        // only its shares of the CPU: it may then outlast any number of reads.
        if ops >= options.reads || while_set.is_some_and(|running| !running.get()) {
            break;
        }
        key(rng.gen_range(0..options.keys), options.key_bytes, &mut k);
        let t = Instant::now();
        let versions = engine.get(&k).await.map_err(|e| format!("{name}: {e}"))?;
        latency.saturating_record(t.elapsed().as_nanos() as u64);
        ops += 1;
        found += u64::from(versions.is_some());
        // A read served from memory never yields: let the compaction run.
        glommio::yield_if_needed().await;
    }
    Ok(PhaseReport {
        name,
        ops,
        elapsed: started.elapsed(),
        latency,
        found,
        cache: cache_since(engine, lookups),
        cpu: process_cpu().saturating_sub(cpu),
    })
}
