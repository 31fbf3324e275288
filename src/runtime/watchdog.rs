//! A watchdog for glommio executors that fall asleep with work pending.
//!
//! Why a watchdog: under pipelined load, glommio 0.9 executors were seen (Linux 6.18, a
//! 2-core VM) asleep in `io_uring_enter` on their main ring while socket reads, timers
//! and foreign wake-ups went unnoticed, for 10 s and more, until an unrelated
//! completion came. The cause found: glommio had mis-probed the disk as supporting
//! polled I/O (see `prime_direct_reads` in the storage engine, which now prevents
//! it), so commit-log writes went to its poll ring, whose completions nothing polls
//! while the executor sleeps. With the probe fixed no stall was seen in 46 pipelined
//! runs; the watchdog stays as a guard against any other way for an executor to sleep
//! through its work: an executor that has not taken a tick for [`WATCHDOG_KICK_AFTER`]
//! gets a signal, which interrupts the wait, and the executor then drains every ring.
//! A healthy executor costs one channel message per tick and is never signalled.
//!
//! The same watchdog guards the server's shards, the load generator's client
//! executors, `bench-engine` and the crate's tests ([`guarded`]): each executor runs a
//! task that takes ticks and bumps its [`Liveness`]. A second way to sleep through
//! work was seen later, with no poll ring involved: `bench-engine` (then unguarded)
//! asleep for minutes in its read phase after a compaction, three requests in flight
//! on the main ring (fdinfo), the io-wq worker idle. Not understood; guarded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the watchdog ticks every executor it guards.
pub const WATCHDOG_TICK: Duration = Duration::from_millis(5);

/// How long an executor may leave ticks untaken before the watchdog signals its thread.
pub const WATCHDOG_KICK_AFTER: Duration = Duration::from_millis(20);

/// The signal that wakes a stuck executor (its handler does nothing; the interruption
/// is the point).
const KICK_SIGNAL: i32 = libc::SIGUSR1;

/// Sends one tick to an executor; false once the executor is gone.
pub type Tick = Box<dyn Fn() -> bool + Send>;

/// A [`Tick`] that sends `message()` down `channel` (a full channel is fine: the
/// executor has ticks waiting already).
pub fn tick_over<T: Send + 'static>(channel: flume::Sender<T>, message: fn() -> T) -> Tick {
    Box::new(move || {
        !matches!(
            channel.try_send(message()),
            Err(flume::TrySendError::Disconnected(_))
        )
    })
}

/// What the watchdog knows of one executor, written by the executor and read by the
/// watchdog thread (a counter and an id: nothing of the data path).
#[derive(Default)]
pub struct Liveness {
    /// Ticks the executor has taken.
    pub ticks: AtomicU64,
    /// The executor's `pthread_t` once it runs (0 before).
    pub thread: AtomicU64,
    /// Times the watchdog had to signal the executor.
    pub kicks: AtomicU64,
}

impl Liveness {
    /// Called on the executor's thread once it runs: from now on it may be signalled.
    pub fn running(&self) {
        self.thread
            .store(unsafe { libc::pthread_self() } as u64, Ordering::Release);
    }

    /// Called by the executor for every tick it takes.
    pub fn tick(&self) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `future` on the current executor under a watchdog of its own (for executors
/// that run one job: a benchmark, a test). The watchdog thread ends with the future.
pub async fn guarded<T>(kind: &'static str, future: impl std::future::Future<Output = T>) -> T {
    let (tick_tx, ticks) = flume::bounded::<()>(1);
    let live = Arc::new(Liveness::default());
    live.running();
    start(kind, vec![(tick_over(tick_tx, || ()), live.clone())]);
    let watched = glommio::spawn_local(async move {
        while ticks.recv_async().await.is_ok() {
            live.tick();
        }
    });
    let output = future.await;
    // Cancels the task; its receiver goes, the next tick fails, the watchdog ends.
    drop(watched);
    output
}

/// Starts the watchdog thread over `targets`; it ends when every target is gone.
pub fn start(kind: &'static str, targets: Vec<(Tick, Arc<Liveness>)>) {
    install_kick_handler();
    std::thread::Builder::new()
        .name("ringkv-watchdog".into())
        .spawn(move || watch(kind, targets))
        .expect("spawning the watchdog thread");
}

fn watch(kind: &str, targets: Vec<(Tick, Arc<Liveness>)>) {
    let mut seen: Vec<(u64, Instant)> = vec![(0, Instant::now()); targets.len()];
    let mut gone = vec![false; targets.len()];
    while gone.iter().any(|g| !g) {
        std::thread::sleep(WATCHDOG_TICK);
        for (i, (tick, live)) in targets.iter().enumerate() {
            if gone[i] || !tick() {
                gone[i] = true;
                continue;
            }
            let ticks = live.ticks.load(Ordering::Relaxed);
            if ticks != seen[i].0 {
                seen[i] = (ticks, Instant::now());
                continue;
            }
            let thread = live.thread.load(Ordering::Acquire);
            if thread == 0 || seen[i].1.elapsed() < WATCHDOG_KICK_AFTER {
                continue;
            }
            // SAFETY: the id came from pthread_self() of a thread that still runs (it
            // still takes ticks: `tick()` above found it connected).
            unsafe { libc::pthread_kill(thread as libc::pthread_t, KICK_SIGNAL) };
            let kicks = live.kicks.fetch_add(1, Ordering::Relaxed) + 1;
            seen[i].1 = Instant::now();
            if kicks.is_power_of_two() {
                eprintln!(
                    "ringkv: {kind} {i} took no tick for {} ms; signalled its thread to wake \
                     it ({kicks} times so far)",
                    WATCHDOG_KICK_AFTER.as_millis()
                );
            }
        }
    }
}

/// A handler that does nothing, with SA_RESTART so that other syscalls carry on.
fn install_kick_handler() {
    extern "C" fn ignore(_: i32) {}
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as extern "C" fn(i32) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(KICK_SIGNAL, &action, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::{LocalExecutorBuilder, Placement};

    #[test]
    fn an_executor_that_takes_no_ticks_is_signalled_and_one_that_does_is_ticked() {
        let (tick_tx, ticks) = flume::bounded::<()>(1);
        let live = Arc::new(Liveness::default());
        start(
            "test executor",
            vec![(tick_over(tick_tx, || ()), live.clone())],
        );
        let inside = live.clone();
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 16)
            .spawn(move || async move {
                inside.running();
                let taker = glommio::spawn_local({
                    let inside = inside.clone();
                    async move {
                        while ticks.recv_async().await.is_ok() {
                            inside.tick();
                        }
                    }
                });
                glommio::timer::sleep(Duration::from_millis(100)).await;
                assert!(inside.ticks.load(Ordering::Relaxed) > 0, "no tick arrived");
                // Block the executor: no tick can be taken, so the watchdog must signal.
                std::thread::sleep(Duration::from_millis(200));
                drop(taker);
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            live.kicks.load(Ordering::Relaxed) >= 1,
            "a stuck executor was never signalled"
        );
    }
}
