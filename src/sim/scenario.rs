//! One seeded run from start to verdict: warm up, clients under a random fault
//! schedule, heal and restart everything, settle, final reads at R = N, checks.
//!
//! The faults stay within what the design promises to survive (DESIGN.md §1, §6, §8):
//! no disk is ever lost (a crash loses only what was not synced), and the hint window
//! is longer than any outage, so no hint expires. Under those, no acknowledged write
//! may be lost, whatever the mix.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::{Event, FinalReads, NetConfig, Sim, SimConfig, Stats, WorkloadConfig};
use crate::history::{History, Kind, OpId, Outcome};
use crate::protocol::Consistency;
use crate::replication::placement::QuorumMode;
use crate::ring::cluster::NodeId;

/// One fault of a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9`, restarted at the end of the fault.
    Crash(NodeId),
    /// Several nodes lose power at the same instant (a rack, a building).
    PowerLoss(Vec<NodeId>),
    /// SIGSTOP, then SIGCONT.
    Pause(NodeId),
    /// These nodes are cut off from the rest.
    Partition(Vec<NodeId>),
    /// The network drops and delays far more.
    Storm,
}

/// How faults are drawn. Weights are relative; 0 turns a kind off.
#[derive(Clone, Debug)]
pub struct FaultMix {
    pub crash: u32,
    pub power_loss: u32,
    pub pause: u32,
    pub partition: u32,
    pub storm: u32,
    /// Time between the starts of two faults (µs, uniform): faults overlap when an
    /// outage is longer.
    pub gap_us: (u64, u64),
    /// How long one fault lasts (µs, uniform).
    pub outage_us: (u64, u64),
    /// The network during a storm.
    pub storm_net: NetConfig,
}

impl FaultMix {
    pub fn none() -> FaultMix {
        FaultMix {
            crash: 0,
            power_loss: 0,
            pause: 0,
            partition: 0,
            storm: 0,
            ..FaultMix::default()
        }
    }

    fn is_none(&self) -> bool {
        self.crash + self.power_loss + self.pause + self.partition + self.storm == 0
    }
}

impl Default for FaultMix {
    fn default() -> Self {
        FaultMix {
            crash: 6,
            power_loss: 2,
            pause: 3,
            partition: 3,
            storm: 1,
            gap_us: (1_000_000, 6_000_000),
            outage_us: (1_000_000, 15_000_000),
            storm_net: NetConfig {
                drop: 0.25,
                delay_us: (1_000, 400_000),
            },
        }
    }
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub sim: SimConfig,
    pub workload: WorkloadConfig,
    pub faults: FaultMix,
    /// Before the clients start (membership converges).
    pub warmup_us: u64,
    /// The clients run, under faults, this long.
    pub clients_us: u64,
    /// After the clients stop, before everything is healed: what is in flight ends.
    pub drain_us: u64,
    /// After the heal and the restart of every node: detection and hint replay.
    pub settle_us: u64,
    /// The final reads must be done within this.
    pub final_us_max: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            sim: SimConfig::default(),
            workload: WorkloadConfig::default(),
            faults: FaultMix::default(),
            warmup_us: 5_000_000,
            clients_us: 60_000_000,
            drain_us: 4_000_000,
            settle_us: 20_000_000,
            final_us_max: 60_000_000,
        }
    }
}

impl Scenario {
    /// Strict quorum, R + W > N for every pair of levels the clients use, no faults but
    /// the network's ordinary drops and delays: reads must see acknowledged writes.
    pub fn strict_without_faults() -> Scenario {
        let mut s = Scenario::default();
        s.sim.quorum = QuorumMode::Strict;
        s.faults = FaultMix::none();
        s.workload.write_levels = vec![Consistency::Quorum, Consistency::Quorum, Consistency::All];
        s.workload.read_levels = vec![Consistency::Quorum, Consistency::Quorum, Consistency::All];
        s
    }
}

/// A scheduled fault: from `start_us` to `end_us`.
#[derive(Clone, Debug)]
struct Scheduled {
    start_us: u64,
    end_us: u64,
    fault: Fault,
}

/// Draws the faults of a run from their own RNG (so a change in the cluster's use of
/// randomness does not move them). A node has one fault at a time; one partition and
/// one storm at a time.
fn schedule(seed: u64, scenario: &Scenario, nodes: &[NodeId]) -> Vec<Scheduled> {
    let mix = &scenario.faults;
    if mix.is_none() {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17_5eed);
    let start = scenario.warmup_us;
    let end = start + scenario.clients_us;
    let weights = [
        mix.crash,
        mix.power_loss,
        mix.pause,
        mix.partition,
        mix.storm,
    ];
    let kinds: Vec<usize> = (0..weights.len()).collect();
    let mut busy_until: BTreeMap<NodeId, u64> = BTreeMap::new();
    let (mut partition_until, mut storm_until) = (0, 0);
    let mut faults = Vec::new();
    let mut t = start + rng.gen_range(0..=mix.gap_us.1);
    while t < end {
        let kind = *kinds
            .choose_weighted(&mut rng, |&k| weights[k])
            .expect("some weight");
        let outage = rng.gen_range(mix.outage_us.0..=mix.outage_us.1);
        let mut free: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|n| !busy_until.get(n).is_some_and(|&u| u > t))
            .collect();
        free.shuffle(&mut rng);
        let fault = match kind {
            0 | 2 if !free.is_empty() => {
                let node = free[0];
                busy_until.insert(node, t + outage);
                Some(if kind == 0 {
                    Fault::Crash(node)
                } else {
                    Fault::Pause(node)
                })
            }
            1 if free.len() >= 2 => {
                let count = rng.gen_range(2..=free.len());
                let mut hit: Vec<NodeId> = free[..count].to_vec();
                hit.sort_unstable();
                hit.iter().for_each(|&n| {
                    busy_until.insert(n, t + outage);
                });
                Some(Fault::PowerLoss(hit))
            }
            3 if partition_until <= t => {
                partition_until = t + outage;
                let mut side: Vec<NodeId> = nodes.to_vec();
                side.shuffle(&mut rng);
                side.truncate(rng.gen_range(1..=2));
                side.sort_unstable();
                Some(Fault::Partition(side))
            }
            4 if storm_until <= t => {
                storm_until = t + outage;
                Some(Fault::Storm)
            }
            _ => None,
        };
        if let Some(fault) = fault {
            faults.push(Scheduled {
                start_us: t,
                end_us: t + outage,
                fault,
            });
        }
        t += rng.gen_range(mix.gap_us.0..=mix.gap_us.1);
    }
    faults
}

/// Crashes wait up to this long for a moment when they lose an unsynced record.
const CRASH_AIM_US: u64 = 1_000_000;

fn begin(sim: &mut Sim, fault: &Fault, storm: &NetConfig) {
    match fault {
        Fault::Crash(node) => sim.crash_when_unsynced(&[*node], CRASH_AIM_US),
        Fault::PowerLoss(nodes) => sim.crash_when_unsynced(nodes, CRASH_AIM_US),
        Fault::Pause(node) => sim.pause(*node),
        Fault::Partition(side) => sim.partition(side),
        Fault::Storm => sim.set_net(storm.clone()),
    }
}

fn end(sim: &mut Sim, fault: &Fault, net: &NetConfig) {
    match fault {
        Fault::Crash(node) => sim.restart(*node),
        Fault::PowerLoss(nodes) => nodes.iter().for_each(|&n| sim.restart(n)),
        Fault::Pause(node) => sim.resume(*node),
        Fault::Partition(_) => sim.heal(),
        Fault::Storm => sim.set_net(net.clone()),
    }
}

/// What a run came to.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub history: History,
    /// Each key as the final read at R = N returned it.
    pub final_reads: FinalReads,
    /// `History::lost_writes`.
    pub lost: Vec<OpId>,
    /// `History::lost_writes_by_value`.
    pub lost_by_value: Vec<OpId>,
    /// `History::stale_reads` (meaningful for the strict scenario only).
    pub stale: Vec<(OpId, OpId)>,
    /// The final reads could not finish: why.
    pub stuck: Option<String>,
    /// Hints still kept when the final reads began.
    pub hints_left: usize,
    pub faults: Vec<String>,
    pub stats: Stats,
    pub trace: Vec<Event>,
}

impl Report {
    /// Whether an acknowledged write was lost, by either check.
    pub fn lost_any(&self) -> bool {
        !self.lost.is_empty() || !self.lost_by_value.is_empty()
    }

    /// Acknowledged writes, failed or refused ones, timed-out ones.
    pub fn write_outcomes(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for op in self.history.ops() {
            if !matches!(op.kind, Kind::Write { .. }) {
                continue;
            }
            match op.outcome {
                Outcome::Ok => counts.0 += 1,
                Outcome::Fail(_) => counts.1 += 1,
                Outcome::Timeout | Outcome::Pending => counts.2 += 1,
            }
        }
        counts
    }

    /// The lost writes, each with what the final read of its key returned, and the
    /// faults of the run: what a failing seed's message shows.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let mut lost: Vec<OpId> = self.lost.clone();
        lost.extend(
            self.lost_by_value
                .iter()
                .filter(|id| !self.lost.contains(id)),
        );
        for id in lost {
            let op = &self.history.ops()[id];
            let finals = self.final_reads.get(&op.key);
            out.push_str(&format!(
                "\n  lost op {id}: {op:?}\n    final read: {finals:?}"
            ));
        }
        if let Some(stuck) = &self.stuck {
            out.push_str(&format!("\n  stuck: {stuck}"));
        }
        out.push_str(&format!(
            "\n  hints left before the final reads: {}",
            self.hints_left
        ));
        out.push_str(&format!("\n  stats: {:?}", self.stats));
        out.push_str("\n  faults:");
        for f in &self.faults {
            out.push_str(&format!("\n    {f}"));
        }
        out
    }
}

/// Runs `scenario` from `seed`.
pub fn run(seed: u64, scenario: &Scenario) -> Report {
    let mut sim = Sim::with_config(seed, scenario.sim.clone());
    let faults = schedule(seed, scenario, &sim.node_ids());
    let mut steps: Vec<(u64, bool, usize)> = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        steps.push((f.start_us, true, i));
        steps.push((f.end_us, false, i));
    }
    steps.sort_unstable();
    sim.run_until(scenario.warmup_us);
    sim.start_workload(scenario.workload.clone());
    let clients_end = scenario.warmup_us + scenario.clients_us;
    let storm = &scenario.faults.storm_net;
    let net = &scenario.sim.net;
    let mut log = Vec::new();
    for (at_us, starts, i) in steps {
        // Every fault ends by the heal, at the latest.
        let at_us = at_us.min(clients_end);
        sim.run_until(at_us);
        let fault = &faults[i].fault;
        if starts {
            log.push(format!(
                "{:>9} µs {fault:?} for {} µs",
                at_us,
                faults[i].end_us - at_us
            ));
            begin(&mut sim, fault, storm);
        } else {
            end(&mut sim, fault, net);
        }
    }
    sim.run_until(clients_end);
    conclude(sim, scenario, log)
}

/// The end of every run: the clients stop and what they had in flight drains; every
/// fault is healed and every node restarted (all state rebuilt from disk); the cluster
/// settles (detection, hint replay); every key is read at R = N; the checks run.
pub fn conclude(mut sim: Sim, scenario: &Scenario, faults: Vec<String>) -> Report {
    let net = &scenario.sim.net;
    sim.stop_workload();
    let drained = sim.now_us() + scenario.drain_us;
    sim.run_until(drained);
    sim.heal();
    sim.set_net(net.clone());
    for node in sim.node_ids() {
        sim.resume(node);
        sim.restart(node);
    }
    let settled = sim.now_us() + scenario.settle_us;
    sim.run_until(settled);
    let hints_left = sim.hints_outstanding();
    sim.start_final_reads();
    let deadline = settled + scenario.final_us_max;
    while sim.final_reads().is_none() && sim.now_us() < deadline {
        let next = sim.now_us() + 1_000_000;
        sim.run_until(next);
    }
    let (final_reads, stuck) = match sim.final_reads() {
        Some(Ok(reads)) => (reads.clone(), None),
        Some(Err(why)) => (BTreeMap::new(), Some(why)),
        None => (
            BTreeMap::new(),
            Some("final reads did not finish in time".into()),
        ),
    };
    let history = sim.history();
    Report {
        seed: sim.seed(),
        lost: history.lost_writes(&final_reads),
        lost_by_value: history.lost_writes_by_value(&final_reads),
        stale: history.stale_reads(),
        history,
        final_reads,
        stuck,
        hints_left,
        faults,
        stats: sim.stats.clone(),
        trace: std::mem::take(&mut sim.trace),
    }
}
