//! One client thread's share of a run: its connections, its request loops, and what
//! they measured. Nothing here is shared with another thread; the caller merges the
//! [`Stats`] at the end.
//!
//! Each connection runs `pipeline` request loops ("workers"). A closed-loop worker
//! sends its next request when the previous one is answered. An open-loop worker owns
//! one slot of the schedule: worker `w` of `W` sends its k-th request at
//! `start + (w / W + k) × W / rate`, so the workers of all threads together send at
//! `rate` evenly spaced; it sleeps until that intended time, or sends at once if it is
//! late, and its latency is counted from the intended time, not from when it went out:
//! a stall makes every request scheduled during it wait, and each of those waits is
//! recorded (coordinated-omission correction, as in wrk2).

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::keys::KeyChooser;
use super::report::{new_histogram, record_ns, Stats};
use super::target::{OpError, Store};
use super::workload::{Mix, Operation};
use super::{key_name, splitmix, BenchOptions};

/// How long past the end of the run an open-loop worker that is behind its schedule
/// keeps sending before it gives up and counts the rest as unsent.
const LATE_GRACE: Duration = Duration::from_secs(2);

/// What one thread does in one run.
pub struct ThreadPlan {
    pub thread: u64,
    pub threads: u64,
    pub connections: usize,
    /// Global index of this thread's first worker, and workers over all threads.
    pub first_worker: u64,
    pub workers: u64,
    /// Measured operations for this thread (`None`: until the deadline).
    pub ops: Option<u64>,
    /// Open loop: total ops/s over all threads. `None`: closed loop.
    pub rate: Option<f64>,
    /// Prefill: write this thread's share of the records once each, in order.
    pub load_phase: bool,
    pub chooser: KeyChooser,
    /// Interval latency histograms for the progress line, about once a second.
    pub progress: Option<flume::Sender<Histogram<u64>>>,
}

/// What a thread hands back.
pub struct ThreadResult {
    pub stats: Stats,
    /// From the end of the warm-up to the last completion.
    pub elapsed: Duration,
}

pub async fn run_thread(options: BenchOptions, plan: ThreadPlan) -> Result<ThreadResult, String> {
    let mut stores = Vec::new();
    for _ in 0..plan.connections {
        stores.push(Rc::new(
            Store::connect(&options.target, options.ringkv).await?,
        ));
    }
    let start = Instant::now();
    let warmup = if plan.load_phase {
        Duration::ZERO
    } else {
        options.warmup
    };
    let measure_from = start + warmup;
    let per_thread_ops = plan.ops.unwrap_or(u64::MAX);
    let state = Rc::new(ThreadState {
        measure_from,
        deadline: options.duration.map(|d| measure_from + d),
        ops_left: Cell::new(per_thread_ops),
        mix: options.workload.mix(),
        records: options.records,
        thread: plan.thread,
        threads: plan.threads,
        next_load_key: Cell::new(plan.thread),
        load_phase: plan.load_phase,
        chooser: RefCell::new(plan.chooser),
        inserts_issued: Cell::new(0),
        inserts_acked: Cell::new(0),
        acked_ahead: RefCell::default(),
        contexts: RefCell::new(ahash::AHashMap::new()),
        keep_contexts: options.target.has_contexts(),
        stats: RefCell::new(Stats::default()),
        interval: RefCell::new(new_histogram()),
        last_completion: Cell::new(measure_from),
    });
    let ticker = plan
        .progress
        .map(|tx| glommio::spawn_local(tick_progress(Rc::downgrade(&state), tx)));
    let value = Rc::new(vec![b'v'; options.value_size]);
    let interval = plan
        .rate
        .map(|rate| Duration::from_secs_f64(plan.workers as f64 / rate));
    let mut tasks = Vec::new();
    let mut worker_index = plan.first_worker;
    for store in &stores {
        for _ in 0..options.pipeline {
            let pace = match interval {
                None => Pace::Closed,
                Some(interval) => Pace::Open {
                    first: start + interval.mul_f64(worker_index as f64 / plan.workers as f64),
                    interval,
                },
            };
            let worker = Worker {
                store: store.clone(),
                state: state.clone(),
                value: value.clone(),
                rng: Cell::new(splitmix(worker_index ^ 0x5EED_0000)),
                pace,
            };
            tasks.push(glommio::spawn_local(worker.run()));
            worker_index += 1;
        }
    }
    for task in tasks {
        task.await;
    }
    drop(ticker);
    let elapsed = state
        .last_completion
        .get()
        .saturating_duration_since(measure_from);
    let state = Rc::try_unwrap(state).map_err(|_| "bench state still shared".to_string())?;
    Ok(ThreadResult {
        stats: state.stats.into_inner(),
        elapsed,
    })
}

/// Sends the latencies of the last second, every second, until the run is over.
/// It holds the state weakly: a cancelled task may be dropped later than the run ends.
async fn tick_progress(state: Weak<ThreadState>, tx: flume::Sender<Histogram<u64>>) {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let Some(state) = state.upgrade() else {
            return;
        };
        let interval = std::mem::replace(&mut *state.interval.borrow_mut(), new_histogram());
        if tx.send(interval).is_err() {
            return;
        }
    }
}

/// What the workers of one thread share.
struct ThreadState {
    /// End of the warm-up: requests (intended to be) sent earlier are not recorded.
    measure_from: Instant,
    /// No request is sent (or, open loop, intended) at or after this.
    deadline: Option<Instant>,
    /// Measured operations left.
    ops_left: Cell<u64>,
    mix: Mix,
    records: u64,
    thread: u64,
    threads: u64,
    /// Prefill: the next record this thread writes (thread, thread + threads, ...).
    next_load_key: Cell<u64>,
    load_phase: bool,
    chooser: RefCell<KeyChooser>,
    /// Records this thread inserted past `records` (workload D), sent and answered.
    inserts_issued: Cell<u64>,
    /// How many of them, counted from the first, are all answered: reads choose only
    /// among those (inserts on several connections are answered out of order, and a
    /// read of one still in flight would find nothing).
    inserts_acked: Cell<u64>,
    /// Inserts answered past the first unanswered one.
    acked_ahead: RefCell<std::collections::BTreeSet<u64>>,
    /// The newest context this thread was given for each record (ringkv only).
    contexts: RefCell<ahash::AHashMap<u64, Bytes>>,
    keep_contexts: bool,
    stats: RefCell<Stats>,
    /// Latencies since the last progress tick.
    interval: RefCell<Histogram<u64>>,
    last_completion: Cell<Instant>,
}

impl ThreadState {
    /// Takes a closed-loop slot: the send time, or `None` when the run is over.
    fn closed_slot(&self) -> Option<Instant> {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            return None;
        }
        self.take_budget(now).then_some(now)
    }

    /// Takes the open-loop slot intended for `at`; `false` when the run is over.
    fn open_slot(&self, at: Instant, interval: Duration) -> bool {
        if let Some(deadline) = self.deadline {
            if at >= deadline {
                return false;
            }
            if Instant::now() > deadline + LATE_GRACE {
                let left = (deadline - at).as_secs_f64() / interval.as_secs_f64();
                self.stats.borrow_mut().unsent += left.ceil() as u64;
                return false;
            }
        }
        self.take_budget(at)
    }

    /// Warm-up requests are free; measured ones come out of the budget.
    fn take_budget(&self, at: Instant) -> bool {
        if at < self.measure_from {
            return true;
        }
        let left = self.ops_left.get();
        if left == 0 {
            return false;
        }
        self.ops_left.set(left - 1);
        true
    }

    /// The wire index of the record at `logical` in this thread's view of the key
    /// space: the shared records, then this thread's own inserts (interleaved with
    /// the other threads' so no two threads insert the same key).
    fn record_index(&self, logical: u64) -> u64 {
        if logical < self.records {
            logical
        } else {
            self.records + (logical - self.records) * self.threads + self.thread
        }
    }

    /// Insert number `n` of this thread was answered.
    fn insert_answered(&self, n: u64) {
        let mut ahead = self.acked_ahead.borrow_mut();
        ahead.insert(n);
        let mut acked = self.inserts_acked.get();
        while ahead.remove(&acked) {
            acked += 1;
        }
        self.inserts_acked.set(acked);
    }

    /// A record to read or update, under the key distribution.
    fn choose_record(&self, u: f64) -> u64 {
        let known = self.records + self.inserts_acked.get();
        let logical = self.chooser.borrow_mut().choose(u, known);
        self.record_index(logical)
    }

    fn context(&self, record: u64) -> Bytes {
        self.contexts
            .borrow()
            .get(&record)
            .cloned()
            .unwrap_or_default()
    }

    fn keep_context(&self, record: u64, context: Bytes) {
        if self.keep_contexts {
            self.contexts.borrow_mut().insert(record, context);
        }
    }

    fn record(&self, op: Operation, sent: Instant, found: bool) {
        let now = Instant::now();
        if sent < self.measure_from {
            return;
        }
        let mut stats = self.stats.borrow_mut();
        record_ns(&mut stats.latencies[op.index()], now - sent);
        record_ns(&mut self.interval.borrow_mut(), now - sent);
        if !found {
            stats.not_found += 1;
        }
        self.last_completion.set(now);
    }

    /// Counts an error; false if the connection is gone and the worker should stop.
    fn record_error(&self, sent: Instant, e: OpError) -> bool {
        if sent >= self.measure_from {
            let mut stats = self.stats.borrow_mut();
            stats.errors += 1;
            stats.first_error.get_or_insert(e.message);
            self.last_completion.set(Instant::now());
        }
        !e.fatal
    }
}

enum Pace {
    Closed,
    /// The k-th request is intended for `first + k × interval`.
    Open {
        first: Instant,
        interval: Duration,
    },
}

struct Worker {
    store: Rc<Store>,
    state: Rc<ThreadState>,
    value: Rc<Vec<u8>>,
    rng: Cell<u64>,
    pace: Pace,
}

impl Worker {
    fn uniform(&self) -> f64 {
        let x = splitmix(self.rng.get());
        self.rng.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next send time (waiting for it, open loop), or `None` when the run is over.
    async fn next_slot(&self, sent: u64) -> Option<Instant> {
        match self.pace {
            Pace::Closed => self.state.closed_slot(),
            Pace::Open { first, interval } => {
                let at = first + interval * u32::try_from(sent).unwrap_or(u32::MAX);
                if !self.state.open_slot(at, interval) {
                    return None;
                }
                let now = Instant::now();
                if at > now {
                    glommio::timer::sleep(at - now).await;
                }
                Some(at)
            }
        }
    }

    async fn run(self) {
        let mut sent = 0u64;
        while let Some(at) = self.next_slot(sent).await {
            sent += 1;
            let op = if self.state.load_phase {
                Operation::Insert
            } else {
                self.state.mix.choose(self.uniform())
            };
            let outcome = self.execute(op).await;
            let keep_going = match outcome {
                Ok(found) => {
                    self.state.record(op, at, found);
                    true
                }
                Err(e) => self.state.record_error(at, e),
            };
            if !keep_going {
                return;
            }
            glommio::yield_if_needed().await;
        }
    }

    /// Runs one operation; `Ok(found)` (false: a read found no value).
    async fn execute(&self, op: Operation) -> Result<bool, OpError> {
        let state = &self.state;
        match op {
            Operation::Read => {
                let record = state.choose_record(self.uniform());
                let read = self.store.read(&key_name(record)).await?;
                state.keep_context(record, read.context);
                Ok(read.found)
            }
            Operation::Update => {
                let record = state.choose_record(self.uniform());
                self.write(record, state.context(record)).await?;
                Ok(true)
            }
            Operation::Insert if state.load_phase => {
                let record = state.next_load_key.get();
                state.next_load_key.set(record + state.threads);
                self.write(record, Bytes::new()).await?;
                Ok(true)
            }
            Operation::Insert => {
                let logical = state.records + state.inserts_issued.get();
                state.inserts_issued.set(state.inserts_issued.get() + 1);
                self.write(state.record_index(logical), Bytes::new())
                    .await?;
                state.insert_answered(logical - state.records);
                Ok(true)
            }
            Operation::ReadModifyWrite => {
                let record = state.choose_record(self.uniform());
                let read = self.store.read(&key_name(record)).await?;
                self.write(record, read.context).await?;
                Ok(read.found)
            }
        }
    }

    async fn write(&self, record: u64, context: Bytes) -> Result<(), OpError> {
        let new = self
            .store
            .write(&key_name(record), &self.value, &context)
            .await?;
        self.state.keep_context(record, new);
        Ok(())
    }
}
