//! Failure detection: phi-accrual suspicion per peer, confirmed by a second source
//! before a peer is called Down.
//!
//! This is the "decide" half: plain synchronous state driven by the caller's clock
//! (microseconds, any origin), so a test or the simulator can run it without glommio.
//! The control plane feeds it what it sees and acts on the transitions it returns.
//!
//! ## Suspicion (phi accrual)
//!
//! For each peer the detector keeps the last [`DetectorConfig::window`] intervals
//! between fresh heartbeats (a heartbeat is fresh when the peer's counter, or its
//! generation, moved past what was known). Given the time since the last one, `phi` is
//! how unlikely it is that the heartbeat is merely late:
//! `phi = -log10(P(interval > elapsed))`, with the intervals taken as normally
//! distributed (the mean and standard deviation of the window; the deviation is at
//! least [`DetectorConfig::min_std_dev_us`], so that perfectly regular heartbeats do
//! not make a peer suspect at the first jitter). phi 1 means a 10% chance of being
//! wrong, phi 8 one in 10^8. Above [`DetectorConfig::threshold`] the peer is Suspect.
//!
//! ## Confirmation
//!
//! A Suspect peer becomes Down only when a second source agrees, after it became
//! suspect:
//!
//! - another node's gossip carries the peer's heartbeat no newer than ours (that node
//!   has not heard from it either), or
//! - an indirect probe through another node failed.
//!
//! So one node's own slow network, or a pause of its own, does not declare the rest of
//! the cluster dead. A fresh heartbeat, seen directly or through anyone's gossip, makes
//! a Suspect or Down peer Up again.
//!
//! ## Defaults and detection time
//!
//! Heartbeats go out every gossip interval (`--membership-interval-ms`, 1 000 ms) and
//! reach a peer directly or through gossip. With the defaults (threshold 8, window
//! 100, deviation floor 250 ms) a peer that stops is Suspect about 2.3 s after its last
//! heartbeat when heartbeats had been arriving every second (mean 1 s, deviation at the
//! floor: phi passes 8 at 5.2 deviations past the mean), and Down at the next
//! confirmation, one gossip round later: about 3.3 s in all. Irregular heartbeats
//! widen the margin (a deviation of 0.5 s gives about 3.6 s to Suspect). The test
//! `detection_time_with_the_defaults` pins those figures.

use std::collections::{BTreeMap, VecDeque};

use crate::ring::cluster::NodeId;

/// The detector's tuning; see the module doc for what the defaults give.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    /// phi above which a peer is Suspect.
    pub threshold: f64,
    /// Intervals kept per peer.
    pub window: usize,
    /// The least standard deviation assumed, µs.
    pub min_std_dev_us: u64,
    /// The interval assumed before a peer has sent two heartbeats (µs): the gossip
    /// interval.
    pub first_interval_us: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            threshold: 8.0,
            window: 100,
            min_std_dev_us: 250_000,
            first_interval_us: 1_000_000,
        }
    }
}

/// What the detector believes of a peer.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Status {
    /// Heartbeats arrive as expected.
    Up,
    /// phi is above the threshold; not yet confirmed by a second source.
    Suspect,
    /// Suspect and confirmed.
    Down,
}

/// A peer's heartbeat as gossip carries it: the generation (bumped by a restart), then
/// the counter within it. Ordered: a larger one is newer.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Heartbeat {
    pub generation: u64,
    pub counter: u64,
}

/// A change of a peer's status, for the caller to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub node: NodeId,
    pub from: Status,
    pub to: Status,
}

/// The intervals between one peer's fresh heartbeats.
#[derive(Clone, Debug, Default)]
struct ArrivalWindow {
    intervals: VecDeque<u64>,
    sum: f64,
    sum_of_squares: f64,
    last_us: Option<u64>,
}

impl ArrivalWindow {
    fn record(&mut self, now_us: u64, window: usize) {
        if let Some(last) = self.last_us {
            let interval = now_us.saturating_sub(last);
            self.intervals.push_back(interval);
            self.sum += interval as f64;
            self.sum_of_squares += (interval as f64).powi(2);
            while self.intervals.len() > window.max(1) {
                let old = self.intervals.pop_front().unwrap_or(0) as f64;
                self.sum -= old;
                self.sum_of_squares -= old * old;
            }
        }
        self.last_us = Some(now_us.max(self.last_us.unwrap_or(0)));
    }

    fn phi(&self, now_us: u64, config: &DetectorConfig) -> f64 {
        let Some(last) = self.last_us else {
            return 0.0;
        };
        let elapsed = now_us.saturating_sub(last) as f64;
        let (mean, variance) = match self.intervals.len() {
            0 => (config.first_interval_us as f64, 0.0),
            n => {
                let mean = self.sum / n as f64;
                (
                    mean,
                    (self.sum_of_squares / n as f64 - mean * mean).max(0.0),
                )
            }
        };
        let std_dev = variance.sqrt().max(config.min_std_dev_us as f64).max(1.0);
        phi(elapsed, mean, std_dev)
    }
}

/// `-log10(P(X > elapsed))` for X normal with this mean and deviation, by the logistic
/// approximation of the normal CDF (error below 1.4e-4; the one Akka's detector uses).
/// Large when the interval has gone on far longer than the peer's heartbeats usually
/// take; near 0 while it is shorter than usual.
fn phi(elapsed: f64, mean: f64, std_dev: f64) -> f64 {
    let y = (elapsed - mean) / std_dev;
    let exponent = y * (1.5976 + 0.070566 * y * y);
    let e = (-exponent).exp();
    if elapsed > mean {
        // P(X > elapsed) = e / (1 + e); in logarithms, so that it stays finite when e
        // underflows after a long silence.
        exponent / std::f64::consts::LN_10 + e.ln_1p() / std::f64::consts::LN_10
    } else {
        -(1.0 - 1.0 / (1.0 + e)).log10()
    }
}

#[derive(Clone, Debug)]
struct Peer {
    heartbeat: Heartbeat,
    arrivals: ArrivalWindow,
    status: Status,
    /// When the peer last became Suspect (confirmations must come after it).
    suspect_since_us: Option<u64>,
}

/// The failure detector of one node: every peer's heartbeats, phi and status.
#[derive(Clone, Debug, Default)]
pub struct Detector {
    config: DetectorConfig,
    peers: BTreeMap<NodeId, Peer>,
}

impl Detector {
    pub fn new(config: DetectorConfig) -> Detector {
        Detector {
            config,
            peers: BTreeMap::new(),
        }
    }

    /// The peer's heartbeat as seen at `now_us`, directly or in anyone's gossip. A
    /// newer one than known is fresh: it is recorded, and the peer is Up (the returned
    /// transition says if that changed anything). A new peer starts Up.
    pub fn heartbeat(
        &mut self,
        node: NodeId,
        heartbeat: Heartbeat,
        now_us: u64,
    ) -> Option<Transition> {
        let window = self.config.window;
        let peer = self.peers.entry(node).or_insert_with(|| Peer {
            heartbeat,
            arrivals: ArrivalWindow::default(),
            status: Status::Up,
            suspect_since_us: None,
        });
        if heartbeat > peer.heartbeat || peer.arrivals.last_us.is_none() {
            if heartbeat.generation > peer.heartbeat.generation {
                // A restart: the old incarnation's rhythm says nothing of the new one.
                peer.arrivals = ArrivalWindow::default();
            }
            peer.heartbeat = heartbeat;
            peer.arrivals.record(now_us, window);
            return set_status(node, peer, Status::Up, now_us);
        }
        None
    }

    /// Another node's gossip showed `node`'s heartbeat as `seen` (what that node knows
    /// of it). Fresh, it is a heartbeat; not newer than ours, it confirms a suspicion
    /// that began before `now_us`.
    pub fn gossip_from(
        &mut self,
        from: NodeId,
        node: NodeId,
        seen: Heartbeat,
        now_us: u64,
    ) -> Option<Transition> {
        if from == node {
            return self.heartbeat(node, seen, now_us);
        }
        let Some(peer) = self.peers.get(&node) else {
            return self.heartbeat(node, seen, now_us); // a peer first heard of here
        };
        if seen > peer.heartbeat {
            return self.heartbeat(node, seen, now_us);
        }
        self.confirm(node, now_us)
    }

    /// An indirect probe of `node` through another node failed at `now_us`.
    pub fn probe_failed(&mut self, node: NodeId, now_us: u64) -> Option<Transition> {
        self.confirm(node, now_us)
    }

    fn confirm(&mut self, node: NodeId, now_us: u64) -> Option<Transition> {
        let peer = self.peers.get_mut(&node)?;
        match (peer.status, peer.suspect_since_us) {
            (Status::Suspect, Some(since)) if since <= now_us => {
                set_status(node, peer, Status::Down, now_us)
            }
            _ => None,
        }
    }

    /// Re-evaluates every Up peer's phi at `now_us`: those above the threshold become
    /// Suspect. Call it every gossip round (and whenever a decision needs fresh status).
    pub fn tick(&mut self, now_us: u64) -> Vec<Transition> {
        let config = &self.config;
        let mut changes = Vec::new();
        for (&node, peer) in self.peers.iter_mut() {
            if peer.status == Status::Up && peer.arrivals.phi(now_us, config) > config.threshold {
                changes.extend(set_status(node, peer, Status::Suspect, now_us));
            }
        }
        changes
    }

    /// The peer's phi at `now_us` (0 for a peer never heard of).
    pub fn phi(&self, node: NodeId, now_us: u64) -> f64 {
        self.peers
            .get(&node)
            .map_or(0.0, |peer| peer.arrivals.phi(now_us, &self.config))
    }

    /// The peer's status (`None`: never heard of).
    pub fn status(&self, node: NodeId) -> Option<Status> {
        self.peers.get(&node).map(|peer| peer.status)
    }

    /// The newest heartbeat known of the peer.
    pub fn known_heartbeat(&self, node: NodeId) -> Option<Heartbeat> {
        self.peers.get(&node).map(|peer| peer.heartbeat)
    }

    /// Forgets a peer (it left the cluster).
    pub fn remove(&mut self, node: NodeId) {
        self.peers.remove(&node);
    }
}

fn set_status(node: NodeId, peer: &mut Peer, to: Status, now_us: u64) -> Option<Transition> {
    let from = peer.status;
    if from == to {
        return None;
    }
    peer.status = to;
    peer.suspect_since_us = (to == Status::Suspect).then_some(now_us);
    Some(Transition { node, from, to })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;
    const PEER: NodeId = 3;
    const OTHER: NodeId = 5;

    fn beat(counter: u64) -> Heartbeat {
        Heartbeat {
            generation: 1,
            counter,
        }
    }

    /// A detector that has seen `PEER` beat every `interval` µs, `count` times, the
    /// last at the returned time.
    fn steady(interval: u64, count: u64) -> (Detector, u64) {
        let mut detector = Detector::new(DetectorConfig::default());
        for i in 0..count {
            detector.heartbeat(PEER, beat(i + 1), i * interval);
        }
        (detector, (count - 1) * interval)
    }

    /// When, after the last heartbeat, `PEER` turns Suspect (checked every 10 ms).
    fn suspected_after(detector: &mut Detector, last: u64) -> u64 {
        let mut now = last;
        loop {
            now += 10_000;
            if !detector.tick(now).is_empty() {
                return now - last;
            }
            assert!(now - last < 60 * SECOND, "never suspected");
        }
    }

    #[test]
    fn phi_grows_with_the_silence_and_is_small_while_heartbeats_are_on_time() {
        let (detector, last) = steady(SECOND, 20);
        let on_time = detector.phi(PEER, last + SECOND);
        let late = detector.phi(PEER, last + 2 * SECOND);
        let later = detector.phi(PEER, last + 3 * SECOND);
        assert!(on_time < 1.0, "phi {on_time} for a heartbeat on time");
        assert!(on_time < late && late < later, "{on_time} {late} {later}");
        assert!(later > 8.0, "three intervals of silence: phi {later}");
    }

    #[test]
    fn detection_time_with_the_defaults() {
        // The module doc's figures: heartbeats every second, Suspect ~2.3 s after the
        // last one.
        let (mut detector, last) = steady(SECOND, 50);
        let suspected = suspected_after(&mut detector, last);
        assert!(
            (2_200_000..=2_450_000).contains(&suspected),
            "suspected after {suspected} µs"
        );
        // Down at the next confirmation: one gossip round later.
        let t = detector.gossip_from(OTHER, PEER, beat(50), last + suspected + SECOND);
        assert_eq!(t.map(|t| t.to), Some(Status::Down));
    }

    #[test]
    fn jittery_heartbeats_widen_the_margin() {
        // Intervals alternating 0.5 s and 1.5 s: same mean, a deviation of 0.5 s.
        let mut detector = Detector::new(DetectorConfig::default());
        let mut now = 0;
        for i in 0..50 {
            detector.heartbeat(PEER, beat(i + 1), now);
            now += if i % 2 == 0 { 500_000 } else { 1_500_000 };
        }
        let last = now - 1_500_000;
        let (mut steady_detector, steady_last) = steady(SECOND, 50);
        let jittery = suspected_after(&mut detector, last);
        assert!(jittery > suspected_after(&mut steady_detector, steady_last));
        // The module doc's figure for a deviation of 0.5 s.
        assert!(
            (3_300_000..=3_900_000).contains(&jittery),
            "suspected after {jittery} µs"
        );
    }

    #[test]
    fn suspicion_needs_a_second_source_before_down() {
        let (mut detector, last) = steady(SECOND, 20);
        let changes = detector.tick(last + 4 * SECOND);
        assert_eq!(
            changes,
            [Transition {
                node: PEER,
                from: Status::Up,
                to: Status::Suspect
            }]
        );
        // More silence alone does not make it Down.
        assert!(detector.tick(last + 30 * SECOND).is_empty());
        assert_eq!(detector.status(PEER), Some(Status::Suspect));
        // Another node's gossip with nothing newer confirms it.
        let t = detector.gossip_from(OTHER, PEER, beat(20), last + 31 * SECOND);
        assert_eq!(
            t.map(|t| (t.from, t.to)),
            Some((Status::Suspect, Status::Down))
        );
    }

    #[test]
    fn a_failed_indirect_probe_confirms_too() {
        let (mut detector, last) = steady(SECOND, 20);
        assert!(
            detector.probe_failed(PEER, last).is_none(),
            "not suspect yet"
        );
        detector.tick(last + 4 * SECOND);
        let t = detector.probe_failed(PEER, last + 4 * SECOND);
        assert_eq!(t.map(|t| t.to), Some(Status::Down));
    }

    #[test]
    fn a_confirmation_from_before_the_suspicion_does_not_count() {
        let (mut detector, last) = steady(SECOND, 20);
        detector.tick(last + 4 * SECOND);
        // Gossip that reached us before the suspicion began (an older timestamp).
        assert!(detector
            .gossip_from(OTHER, PEER, beat(20), last + SECOND)
            .is_none());
        assert_eq!(detector.status(PEER), Some(Status::Suspect));
    }

    #[test]
    fn fresh_gossip_about_a_suspect_peer_makes_it_up_instead() {
        // Our link to the peer is down but another node still hears it: not Down.
        let (mut detector, last) = steady(SECOND, 20);
        detector.tick(last + 4 * SECOND);
        let t = detector.gossip_from(OTHER, PEER, beat(24), last + 4 * SECOND);
        assert_eq!(
            t.map(|t| (t.from, t.to)),
            Some((Status::Suspect, Status::Up))
        );
        // The second-hand heartbeat restarted the clock: not suspect right after it.
        assert!(detector.tick(last + 5 * SECOND).is_empty());
    }

    #[test]
    fn a_down_peer_is_up_on_a_fresh_heartbeat_and_a_stale_one_changes_nothing() {
        let (mut detector, last) = steady(SECOND, 20);
        detector.tick(last + 4 * SECOND);
        detector.probe_failed(PEER, last + 4 * SECOND);
        assert_eq!(detector.status(PEER), Some(Status::Down));
        assert!(detector
            .heartbeat(PEER, beat(20), last + 5 * SECOND)
            .is_none());
        assert_eq!(detector.status(PEER), Some(Status::Down));
        let t = detector.heartbeat(PEER, beat(21), last + 6 * SECOND);
        assert_eq!(t.map(|t| (t.from, t.to)), Some((Status::Down, Status::Up)));
    }

    #[test]
    fn a_restart_is_fresh_even_with_a_lower_counter_and_starts_a_new_rhythm() {
        let (mut detector, last) = steady(SECOND, 20);
        detector.tick(last + 4 * SECOND);
        detector.probe_failed(PEER, last + 4 * SECOND);
        let restarted = Heartbeat {
            generation: 2,
            counter: 1,
        };
        let t = detector.heartbeat(PEER, restarted, last + 10 * SECOND);
        assert_eq!(t.map(|t| t.to), Some(Status::Up));
        assert_eq!(detector.known_heartbeat(PEER), Some(restarted));
        // The 10 s gap of the restart is not taken as an interval of the new rhythm.
        assert!(detector.phi(PEER, last + 11 * SECOND) < 1.0);
    }

    #[test]
    fn a_peer_heard_of_once_is_judged_by_the_first_interval() {
        let mut detector = Detector::new(DetectorConfig::default());
        detector.heartbeat(PEER, beat(1), 0);
        assert!(detector.tick(SECOND).is_empty());
        assert_eq!(detector.tick(10 * SECOND).len(), 1);
    }

    #[test]
    fn phi_matches_the_normal_tail() {
        // Against known tail probabilities: P(Z > 1) = 0.1587, P(Z > 3) = 0.00135. The
        // approximation's error is absolute, so in logarithms it grows down the tail:
        // still 0.04 at three deviations (it only moves where phi crosses the
        // threshold, which the detection-time tests pin).
        assert!((phi(1.0, 0.0, 1.0) - -(0.1587f64).log10()).abs() < 0.01);
        assert!((phi(3.0, 0.0, 1.0) - -(0.00135f64).log10()).abs() < 0.05);
        assert!((phi(0.0, 0.0, 1.0) - -(0.5f64).log10()).abs() < 1e-9);
        assert!(phi(100.0, 0.0, 1.0).is_finite());
    }
}
