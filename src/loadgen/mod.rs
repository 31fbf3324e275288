//! `ringkv bench`: a closed-loop load generator.
//!
//! `connections` clients (each shard-aware unless told otherwise) run `pipeline`
//! request loops each, so `connections × pipeline` requests are outstanding at any
//! time. Every request's latency goes into an HdrHistogram (nanoseconds, 3 significant
//! digits) per operation type. Client executors run on `threads` threads, unpinned.
//! Writes carry the context of the last answer this thread saw for the key (a blind
//! write would be concurrent with everything stored and pile up siblings, as in any
//! DVV store), so a key holds at most as many siblings as writers raced on it.
//! Closed loop measures service time, not the latency a user at a fixed arrival rate
//! would see (coordinated omission): the open-loop mode arrives with the full load
//! generator.

pub mod disk_bench;
pub mod engine_bench;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use std::sync::Arc;

use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use crate::client::{Client, ClientError, ClientOptions, Routing};
use crate::runtime::watchdog::{self, Liveness};

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub host: String,
    pub port: u16,
    pub connections: usize,
    pub pipeline: usize,
    /// Keys are `key-NNNNNNNNNN` for N uniform in `0..keys`.
    pub keys: u64,
    pub value_size: usize,
    /// Fraction of operations that are GETs, in [0, 1].
    pub read_ratio: f64,
    /// Stop after this long...
    pub duration: Option<Duration>,
    /// ...or after this many operations (whichever is given; duration wins if both).
    pub ops: Option<u64>,
    pub routing: Routing,
    /// R and W of every request.
    pub consistency: crate::protocol::Consistency,
    pub threads: usize,
    /// Write every key once before measuring, so reads find values.
    pub prefill: bool,
}

/// Latencies and counts of one run.
pub struct BenchReport {
    pub elapsed: Duration,
    pub gets: Histogram<u64>,
    pub puts: Histogram<u64>,
    pub errors: u64,
    pub not_found: u64,
    pub first_error: Option<String>,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

impl BenchReport {
    pub fn total_ops(&self) -> u64 {
        self.gets.len() + self.puts.len()
    }

    pub fn throughput(&self) -> f64 {
        self.total_ops() as f64 / self.elapsed.as_secs_f64()
    }

    /// Human-readable summary: throughput, then percentiles per operation type (µs).
    pub fn summary(&self) -> String {
        let mut all = self.gets.clone();
        all.add(&self.puts).expect("same bounds");
        let mut out = format!(
            "{} ops in {:.2} s: {:.0} ops/s ({} errors, {} not found)\n",
            self.total_ops(),
            self.elapsed.as_secs_f64(),
            self.throughput(),
            self.errors,
            self.not_found
        );
        out.push_str("op       count        p50 µs     p90 µs     p99 µs   p99.9 µs     max µs\n");
        for (name, h) in [("get", &self.gets), ("put", &self.puts), ("all", &all)] {
            if h.is_empty() {
                continue;
            }
            let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            out.push_str(&format!(
                "{name:<5}{:>10} {:>13.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}\n",
                h.len(),
                us(0.5),
                us(0.9),
                us(0.99),
                us(0.999),
                h.max() as f64 / 1000.0
            ));
        }
        if let Some(e) = &self.first_error {
            out.push_str(&format!("first error: {e}\n"));
        }
        out
    }
}

/// What one client thread measured.
struct ThreadResult {
    gets: Histogram<u64>,
    puts: Histogram<u64>,
    errors: u64,
    not_found: u64,
    first_error: Option<String>,
}

pub fn run(options: &BenchOptions) -> Result<BenchReport, String> {
    assert!(options.connections > 0 && options.pipeline > 0 && options.threads > 0);
    if options.duration.is_none() && options.ops.is_none() {
        return Err("give --duration or --ops".into());
    }
    if options.prefill {
        prefill(options)?;
    }
    let threads = options.threads.min(options.connections);
    let start = Instant::now();
    let mut handles = Vec::new();
    let mut guarded: Vec<(watchdog::Tick, Arc<Liveness>)> = Vec::new();
    for t in 0..threads {
        let (tick_tx, ticks) = flume::bounded::<()>(1);
        let live = Arc::new(Liveness::default());
        guarded.push((watchdog::tick_over(tick_tx, || ()), live.clone()));
        let mut mine = options.clone();
        // Spread connections and operations over the threads.
        mine.connections =
            options.connections / threads + usize::from(t < options.connections % threads);
        mine.ops = options
            .ops
            .map(|ops| ops / threads as u64 + u64::from((t as u64) < ops % threads as u64));
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
                let result = run_thread(mine, t as u64).await;
                drop(watched);
                result
            })
            .map_err(|e| format!("starting a client executor: {e}"))?;
        handles.push(handle);
    }
    watchdog::start("bench executor", guarded);
    let mut report = BenchReport {
        elapsed: Duration::ZERO,
        gets: new_histogram(),
        puts: new_histogram(),
        errors: 0,
        not_found: 0,
        first_error: None,
    };
    for handle in handles {
        let result = handle
            .join()
            .map_err(|e| format!("client executor: {e}"))??;
        report.gets.add(&result.gets).expect("same bounds");
        report.puts.add(&result.puts).expect("same bounds");
        report.errors += result.errors;
        report.not_found += result.not_found;
        report.first_error = report.first_error.or(result.first_error);
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Writes every key once, with all connections, before the measured run.
fn prefill(options: &BenchOptions) -> Result<(), String> {
    let mut fill = options.clone();
    fill.read_ratio = 0.0;
    fill.prefill = false;
    fill.duration = None;
    fill.ops = Some(options.keys);
    let report = run(&BenchOptions {
        // Sequential keys: every key exactly once.
        keys: u64::MAX,
        ..fill
    })?;
    if report.errors > 0 {
        return Err(format!(
            "prefill: {} errors, first: {:?}",
            report.errors, report.first_error
        ));
    }
    Ok(())
}

async fn run_thread(options: BenchOptions, thread: u64) -> Result<ThreadResult, String> {
    let client_options = ClientOptions {
        routing: options.routing,
        consistency: options.consistency,
        ..ClientOptions::default()
    };
    let mut clients = Vec::new();
    for _ in 0..options.connections {
        let client = Client::connect(&options.host, options.port, client_options.clone())
            .await
            .map_err(|e| format!("connecting to {}:{}: {e}", options.host, options.port))?;
        clients.push(Rc::new(client));
    }
    let state = Rc::new(LoopState {
        deadline: options.duration.map(|d| Instant::now() + d),
        ops_left: Cell::new(options.ops.unwrap_or(u64::MAX)),
        next_sequential: Cell::new(thread << 40),
        gets: RefCell::new(new_histogram()),
        puts: RefCell::new(new_histogram()),
        errors: Cell::new(0),
        not_found: Cell::new(0),
        first_error: RefCell::new(None),
        contexts: RefCell::new(ahash::AHashMap::new()),
    });
    let value = vec![b'v'; options.value_size];
    let value = Rc::new(value);
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        for p in 0..options.pipeline {
            let seed = (thread << 32) ^ ((c as u64) << 16) ^ p as u64;
            let worker = Worker {
                client: client.clone(),
                state: state.clone(),
                value: value.clone(),
                rng: Cell::new(splitmix(seed ^ 0x5EED)),
                keys: options.keys,
                read_ratio: options.read_ratio,
            };
            tasks.push(glommio::spawn_local(async move { worker.run().await }));
        }
    }
    for task in tasks {
        task.await;
    }
    let state = Rc::try_unwrap(state).map_err(|_| "bench state still shared".to_string())?;
    Ok(ThreadResult {
        gets: state.gets.into_inner(),
        puts: state.puts.into_inner(),
        errors: state.errors.get(),
        not_found: state.not_found.get(),
        first_error: state.first_error.into_inner(),
    })
}

/// What the request loops of one thread share.
struct LoopState {
    deadline: Option<Instant>,
    ops_left: Cell<u64>,
    /// Next key when keys are written in sequence (prefill).
    next_sequential: Cell<u64>,
    gets: RefCell<Histogram<u64>>,
    puts: RefCell<Histogram<u64>>,
    errors: Cell<u64>,
    not_found: Cell<u64>,
    first_error: RefCell<Option<String>>,
    /// The newest context this thread was given for each key index.
    contexts: RefCell<ahash::AHashMap<u64, bytes::Bytes>>,
}

impl LoopState {
    /// Takes one operation from the budget; false when the run is over.
    fn take_op(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) || self.ops_left.get() == 0 {
            return false;
        }
        self.ops_left.set(self.ops_left.get() - 1);
        true
    }

    /// Counts an error; false if the connection is gone and this loop should stop
    /// (retrying a dead connection would only count the same failure millions of times).
    fn record_error(&self, e: ClientError) -> bool {
        self.errors.set(self.errors.get() + 1);
        let fatal = matches!(e, ClientError::Closed(_) | ClientError::Io { .. });
        self.first_error
            .borrow_mut()
            .get_or_insert_with(|| e.to_string());
        !fatal
    }
}

struct Worker {
    client: Rc<Client>,
    state: Rc<LoopState>,
    value: Rc<Vec<u8>>,
    rng: Cell<u64>,
    keys: u64,
    read_ratio: f64,
}

impl Worker {
    fn next_random(&self) -> u64 {
        let x = splitmix(self.rng.get());
        self.rng.set(x);
        x
    }

    fn next_key(&self) -> u64 {
        if self.keys == u64::MAX {
            let n = self.state.next_sequential.get();
            self.state.next_sequential.set(n + 1);
            n & ((1 << 40) - 1)
        } else {
            self.next_random() % self.keys
        }
    }

    async fn run(self) {
        while self.state.take_op() {
            let n = self.next_key();
            let key = key_name(n);
            let draw = (self.next_random() >> 11) as f64 / (1u64 << 53) as f64;
            let read = draw < self.read_ratio;
            let started = Instant::now();
            if read {
                match self.client.get(&key).await {
                    Ok(result) => {
                        record(&self.state.gets, started);
                        if result.values.is_empty() {
                            self.state.not_found.set(self.state.not_found.get() + 1);
                        }
                        self.state.contexts.borrow_mut().insert(n, result.context);
                    }
                    Err(e) => {
                        if !self.state.record_error(e) {
                            return;
                        }
                    }
                }
            } else {
                let context = self
                    .state
                    .contexts
                    .borrow()
                    .get(&n)
                    .cloned()
                    .unwrap_or_default();
                match self.client.put(&key, &self.value, &context).await {
                    Ok(context) => {
                        record(&self.state.puts, started);
                        self.state.contexts.borrow_mut().insert(n, context);
                    }
                    Err(e) => {
                        if !self.state.record_error(e) {
                            return;
                        }
                    }
                }
            }
            glommio::yield_if_needed().await;
        }
    }
}

fn record(histogram: &RefCell<Histogram<u64>>, started: Instant) {
    let ns = started.elapsed().as_nanos().clamp(1, 60_000_000_000) as u64;
    histogram.borrow_mut().saturating_record(ns);
}

/// The bench's key for index `n`.
pub fn key_name(n: u64) -> Vec<u8> {
    format!("key-{n:010}").into_bytes()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
