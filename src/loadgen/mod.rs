//! `ringkv bench`: a YCSB-style load generator for ringkv and for Redis, closed or open
//! loop, with coordinated-omission-corrected latencies; and `ringkv bench-engine`
//! (one shard's engine alone, db_bench style) and `ringkv bench-disk`.
//!
//! # Layout
//!
//! - [`target`]   `ringkv://` (the Rust client, its routing) or `redis://` ([`resp`]),
//!   behind one read/write [`target::Store`]
//! - [`resp`]     a pipelined RESP2 client on glommio: GET/SET, checked reply parsing
//! - [`workload`] YCSB core workloads A, B, C, D, F and write-only as operation mixes
//! - [`keys`]     record choice: uniform, scrambled zipfian (Gray et al., as YCSB),
//!   latest
//! - `driver`     one client thread: its connections, request loops and histograms
//! - [`report`]   summary table, HdrHistogram percentile distribution, JSON
//! - [`plot`]     the SVG: latency by percentile; throughput vs latency for a sweep
//!
//! # Load models
//!
//! - **Closed loop** (default): `connections × pipeline` request loops, each sending its
//!   next request when the last is answered. It measures service time, and it hides
//!   stalls: while the system is stuck, only the requests in flight wait, and the loop
//!   sends nothing that could record the wait (coordinated omission).
//! - **Open loop** (`--rate R`): requests are scheduled at R ops/s over all connections,
//!   evenly spaced, whatever the system does; each request's latency runs from its
//!   *intended* send time, so a request that had to wait behind a stall (in the server
//!   or in the generator) counts the wait. If fewer loops are running than R × latency
//!   needs, the generator itself falls behind and that shows as latency too, as it
//!   would for users arriving at R/s; `unsent` counts requests still unsent 2 s after
//!   the end.
//! - **Sweep** (`--sweep START:STEP:MAX`): open-loop runs at START, START + STEP, ...
//!   up to MAX ops/s, each `--warmup` + `--duration` long, stopping after the first
//!   step that saturates: achieved throughput under 90% of offered, p99 over
//!   `--sweep-p99-ms`, or errors.
//!
//! Client executors run unpinned (`Placement::Unbound`) on `threads` threads; each
//! thread owns its connections, key chooser, contexts and histograms (nothing shared
//! while running), and the histograms are merged when the threads end. On ringkv,
//! writes carry the context of the last answer this thread saw for the key (a blind
//! write would be concurrent with everything stored and pile up siblings), so a key
//! holds at most as many siblings as writers raced on it; read-modify-write (F) reads,
//! then writes with that read's context.

pub mod disk_bench;
mod driver;
pub mod engine_bench;
pub mod keys;
pub mod plot;
pub mod report;
pub mod resp;
pub mod target;
pub mod workload;

use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use serde_json::json;

use crate::runtime::watchdog::{self, Liveness};
use driver::{ThreadPlan, ThreadResult};
use keys::{Distribution, KeyChooser};
use report::{new_histogram, BenchReport, RunReport, Stats, SweepOutcome};
use target::{RingkvOptions, Target};
use workload::Workload;

/// A sweep step saturates when it achieves less than this share of its offered rate.
pub const SWEEP_ACHIEVED_MIN: f64 = 0.9;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub target: Target,
    /// Routing and consistency, for a ringkv target.
    pub ringkv: RingkvOptions,
    pub connections: usize,
    /// Requests outstanding per connection (request loops per connection).
    pub pipeline: usize,
    /// Keys are `key-NNNNNNNNNN` for N in `0..records` (plus inserts, workload D).
    pub records: u64,
    pub value_size: usize,
    pub workload: Workload,
    pub distribution: Distribution,
    pub load: Load,
    /// Run this long before recording (per sweep step).
    pub warmup: Duration,
    /// Record for this long (per sweep step)...
    pub duration: Option<Duration>,
    /// ...or for this many operations (duration wins if both).
    pub ops: Option<u64>,
    pub threads: usize,
    /// Write every record once before measuring, so reads find values.
    pub prefill: bool,
    /// Samples at or over this latency are counted per operation.
    pub slow: Duration,
    /// Print a progress line on stderr about once a second.
    pub progress: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Load {
    Closed,
    Open { ops_per_sec: f64 },
    Sweep(Sweep),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    pub start_ops_per_sec: f64,
    pub step_ops_per_sec: f64,
    pub max_ops_per_sec: f64,
    /// A step whose p99 is over this saturates.
    pub p99_bound: Duration,
}

impl Sweep {
    /// `START:STEP:MAX` in ops/s, e.g. `1000:1000:20000`.
    pub fn parse(text: &str, p99_bound: Duration) -> Result<Sweep, String> {
        let parts: Vec<f64> = text
            .split(':')
            .map(|p| p.parse::<f64>().map_err(|_| format!("{p:?} is not a rate")))
            .collect::<Result<_, _>>()?;
        let [start, step, max] = parts[..] else {
            return Err(format!("--sweep {text:?}: expected START:STEP:MAX (ops/s)"));
        };
        if !(start > 0.0 && step > 0.0 && max >= start) {
            return Err(format!(
                "--sweep {text:?}: need START > 0, STEP > 0, MAX >= START"
            ));
        }
        Ok(Sweep {
            start_ops_per_sec: start,
            step_ops_per_sec: step,
            max_ops_per_sec: max,
            p99_bound,
        })
    }

    /// The offered rates, in order.
    pub fn rates(&self) -> Vec<f64> {
        let steps = ((self.max_ops_per_sec - self.start_ops_per_sec) / self.step_ops_per_sec + 1e-9)
            .floor() as usize;
        (0..=steps)
            .map(|i| self.start_ops_per_sec + i as f64 * self.step_ops_per_sec)
            .collect()
    }
}

/// Why a sweep step counts as saturated, or `None` if it kept up.
pub fn saturation(sweep: &Sweep, run: &RunReport) -> Option<String> {
    let offered = run.offered_ops_per_sec.expect("a sweep step is open loop");
    let achieved = run.throughput();
    let p99 = Duration::from_nanos(run.stats.all().value_at_quantile(0.99));
    if run.stats.errors > 0 {
        return Some(format!("{} errors at {offered:.0} ops/s", run.stats.errors));
    }
    if achieved < SWEEP_ACHIEVED_MIN * offered {
        return Some(format!(
            "achieved {achieved:.0} ops/s of {offered:.0} offered (< {:.0}%)",
            SWEEP_ACHIEVED_MIN * 100.0
        ));
    }
    if p99 > sweep.p99_bound {
        return Some(format!(
            "p99 {:.2} ms over {:.2} ms at {offered:.0} ops/s",
            p99.as_secs_f64() * 1e3,
            sweep.p99_bound.as_secs_f64() * 1e3
        ));
    }
    None
}

pub fn run(options: &BenchOptions) -> Result<BenchReport, String> {
    assert!(options.connections > 0 && options.pipeline > 0 && options.threads > 0);
    assert!(options.records > 0);
    if options.duration.is_none() && options.ops.is_none() {
        return Err("give --duration or --ops".into());
    }
    if matches!(options.load, Load::Sweep(_)) && options.duration.is_none() {
        return Err("a sweep runs each step for --duration seconds; --ops is not enough".into());
    }
    if options.prefill {
        prefill(options)?;
    }
    let mut runs = Vec::new();
    let mut sweep_outcome = None;
    match &options.load {
        Load::Closed => runs.push(run_once(options, None, String::new())?),
        Load::Open { ops_per_sec } => {
            runs.push(run_once(options, Some(*ops_per_sec), String::new())?)
        }
        Load::Sweep(sweep) => {
            let rates = sweep.rates();
            let mut stopped = None;
            for (i, rate) in rates.iter().enumerate() {
                let label = format!("step {}/{} at {rate:.0} ops/s: ", i + 1, rates.len());
                let step = run_once(options, Some(*rate), label)?;
                stopped = saturation(sweep, &step);
                runs.push(step);
                if stopped.is_some() {
                    break;
                }
            }
            sweep_outcome = Some(SweepOutcome {
                p99_bound: sweep.p99_bound,
                stopped,
            });
        }
    }
    Ok(BenchReport {
        setup: setup(options),
        runs,
        slow: options.slow,
        in_flight: options.connections * options.pipeline,
        sweep: sweep_outcome,
    })
}

fn setup(options: &BenchOptions) -> Vec<(&'static str, serde_json::Value)> {
    let load = match &options.load {
        Load::Closed => "closed",
        Load::Open { .. } => "open",
        Load::Sweep(_) => "sweep",
    };
    vec![
        ("target", json!(options.target.url())),
        ("workload", json!(options.workload.name())),
        ("distribution", json!(options.distribution.name())),
        ("load", json!(load)),
        ("records", json!(options.records)),
        ("value_size", json!(options.value_size)),
        ("connections", json!(options.connections)),
        ("pipeline", json!(options.pipeline)),
        ("threads", json!(options.threads)),
        ("warmup_s", json!(options.warmup.as_secs_f64())),
        (
            "duration_s",
            json!(options.duration.map(|d| d.as_secs_f64())),
        ),
        ("ops", json!(options.ops)),
        ("routing", json!(format!("{:?}", options.ringkv.routing))),
        (
            "consistency",
            json!(format!("{:?}", options.ringkv.consistency)),
        ),
        (
            "latency_from",
            json!(if load == "closed" {
                "send"
            } else {
                "intended send"
            }),
        ),
    ]
}

/// Writes every record once, with all connections, before the measured run.
fn prefill(options: &BenchOptions) -> Result<(), String> {
    let fill = BenchOptions {
        duration: None,
        warmup: Duration::ZERO,
        progress: false,
        ..options.clone()
    };
    let (stats, _) = run_threads(&fill, None, true, String::new())?;
    if stats.errors > 0 {
        return Err(format!(
            "prefill: {} errors, first: {:?}",
            stats.errors, stats.first_error
        ));
    }
    Ok(())
}

fn run_once(options: &BenchOptions, rate: Option<f64>, label: String) -> Result<RunReport, String> {
    let (stats, elapsed) = run_threads(options, rate, false, label)?;
    Ok(RunReport {
        offered_ops_per_sec: rate,
        elapsed,
        stats,
    })
}

/// `total` split into `parts` shares as even as can be; share `i`.
fn share(total: u64, parts: u64, i: u64) -> u64 {
    total / parts + u64::from(i < total % parts)
}

/// Runs one phase on `threads` client executors and merges what they measured.
fn run_threads(
    options: &BenchOptions,
    rate: Option<f64>,
    load_phase: bool,
    label: String,
) -> Result<(Stats, Duration), String> {
    let threads = options.threads.min(options.connections) as u64;
    let connections = options.connections as u64;
    let workers = connections * options.pipeline as u64;
    // Summing ζ for the latest distribution is O(records): once, then copied.
    let chooser = KeyChooser::new(options.distribution, options.records);
    let (progress_tx, progress) = match options.progress && !load_phase {
        true => {
            let (tx, rx) = flume::unbounded();
            let printer = std::thread::spawn(move || print_progress(rx, threads, label));
            (Some(tx), Some(printer))
        }
        false => (None, None),
    };
    let mut handles = Vec::new();
    let mut guarded: Vec<(watchdog::Tick, Arc<Liveness>)> = Vec::new();
    let mut first_worker = 0;
    for t in 0..threads {
        let mine = share(connections, threads, t);
        let plan = ThreadPlan {
            thread: t,
            threads,
            connections: mine as usize,
            first_worker,
            workers,
            ops: match load_phase {
                true => Some(share(options.records, threads, t)),
                false => options.ops.map(|ops| share(ops, threads, t)),
            },
            rate,
            load_phase,
            chooser: chooser.clone(),
            progress: progress_tx.clone(),
        };
        first_worker += mine * options.pipeline as u64;
        let (tick_tx, ticks) = flume::bounded::<()>(1);
        let live = Arc::new(Liveness::default());
        guarded.push((watchdog::tick_over(tick_tx, || ()), live.clone()));
        let options = options.clone();
        let handle = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("bench-{t}"))
            .io_memory(1 << 20)
            .spawn(move || async move {
                live.running();
                let watched = glommio::spawn_local(async move {
                    while ticks.recv_async().await.is_ok() {
                        live.tick();
                    }
                });
                let result = driver::run_thread(options, plan).await;
                drop(watched);
                result
            })
            .map_err(|e| format!("starting a client executor: {e}"))?;
        handles.push(handle);
    }
    drop(progress_tx);
    watchdog::start("bench executor", guarded);
    let mut stats = Stats::default();
    let mut elapsed = Duration::ZERO;
    let mut failure = None;
    for handle in handles {
        match handle.join().map_err(|e| format!("client executor: {e}")) {
            Ok(Ok(ThreadResult {
                stats: mine,
                elapsed: e,
            })) => {
                stats.merge(mine);
                elapsed = elapsed.max(e);
            }
            Ok(Err(e)) | Err(e) => failure = failure.or(Some(e)),
        }
    }
    if let Some(printer) = progress {
        let _ = printer.join();
    }
    match failure {
        Some(e) => Err(e),
        None => Ok((stats, elapsed)),
    }
}

/// The progress line: the ops/s and p99 of the last second, printed once every client
/// thread has sent its histogram of that second (or 1.5 s after the last line), until
/// every thread has ended. On a terminal the line is rewritten in place.
fn print_progress(rx: flume::Receiver<Histogram<u64>>, threads: u64, label: String) {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut window = new_histogram();
    let mut ticks = 0;
    let mut printed = Instant::now();
    loop {
        let due = printed + Duration::from_millis(1500);
        match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Ok(h) => {
                window.add(&h).expect("same bounds");
                ticks += 1;
            }
            Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => break,
        }
        if ticks < threads && Instant::now() < due {
            continue;
        }
        // Each thread's histogram covers one second.
        let seconds = (ticks as f64 / threads as f64).max(1.0);
        let line = format!(
            "{label}{:>6.1} s {:>9.0} ops/s  p99 {:>8.3} ms",
            started.elapsed().as_secs_f64(),
            window.len() as f64 / seconds,
            window.value_at_quantile(0.99) as f64 / 1e6
        );
        let mut err = std::io::stderr().lock();
        let _ = match tty {
            true => write!(err, "\r\x1b[2K{line}"),
            false => writeln!(err, "{line}"),
        };
        let _ = err.flush();
        window.reset();
        ticks = 0;
        printed = Instant::now();
    }
    if tty {
        let _ = writeln!(std::io::stderr());
    }
}

/// The bench's key for record `n`.
pub fn key_name(n: u64) -> Vec<u8> {
    format!("key-{n:010}").into_bytes()
}

pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use report::record_ns;

    #[test]
    fn sweep_rates_run_from_start_to_max() {
        let sweep = Sweep::parse("1000:500:3000", Duration::from_millis(10)).unwrap();
        assert_eq!(sweep.rates(), vec![1000.0, 1500.0, 2000.0, 2500.0, 3000.0]);
        let odd = Sweep::parse("100:300:800", Duration::from_millis(10)).unwrap();
        assert_eq!(odd.rates(), vec![100.0, 400.0, 700.0]);
        for bad in ["1000", "1:2", "0:1:5", "5:1:2", "a:b:c", "1:0:5"] {
            assert!(Sweep::parse(bad, Duration::ZERO).is_err(), "{bad}");
        }
    }

    fn step(offered: f64, ops: u64, latency: Duration, errors: u64) -> RunReport {
        let mut stats = Stats::default();
        for _ in 0..ops {
            record_ns(&mut stats.latencies[0], latency);
        }
        stats.errors = errors;
        RunReport {
            offered_ops_per_sec: Some(offered),
            elapsed: Duration::from_secs(1),
            stats,
        }
    }

    #[test]
    fn a_sweep_step_saturates_on_throughput_latency_or_errors() {
        let sweep = Sweep::parse("1000:1000:5000", Duration::from_millis(10)).unwrap();
        let ms = Duration::from_millis;
        assert_eq!(saturation(&sweep, &step(1000.0, 995, ms(1), 0)), None);
        let behind = saturation(&sweep, &step(1000.0, 850, ms(1), 0)).unwrap();
        assert!(behind.contains("achieved 850"), "{behind}");
        let slow = saturation(&sweep, &step(1000.0, 1000, ms(20), 0)).unwrap();
        assert!(slow.contains("p99"), "{slow}");
        let failing = saturation(&sweep, &step(1000.0, 1000, ms(1), 3)).unwrap();
        assert!(failing.contains("3 errors"), "{failing}");
    }

    #[test]
    fn shares_add_up() {
        for (total, parts) in [(10, 3), (3, 5), (0, 2), (100_000, 7)] {
            assert_eq!(
                (0..parts).map(|i| share(total, parts, i)).sum::<u64>(),
                total
            );
        }
    }
}
