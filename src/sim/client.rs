//! Simulated clients: a few closed loops of reads and writes of unique values over a
//! small key set, each operation sent to a random node and recorded in a [`History`];
//! then the final reads at R = N that the checks compare the history with.
//!
//! A client writes with the context of its last read of the key (or none): writes of
//! different clients that did not see each other become siblings, which is allowed.

use std::collections::BTreeMap;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::wire::{Answer, Msg, Put};
use crate::history::{History, OpId, Outcome};
use crate::protocol::Consistency;
use crate::ring::cluster::NodeId;
use crate::version::Context;

/// What the final reads returned: each key's live values and context.
pub type FinalReads = BTreeMap<Bytes, (Vec<Bytes>, Context)>;

/// What the clients do.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub clients: u32,
    pub keys: usize,
    /// Share of operations that are writes.
    pub write_share: f64,
    /// Levels a write picks from, uniformly.
    pub write_levels: Vec<Consistency>,
    pub read_levels: Vec<Consistency>,
    /// Pause between an operation's end and the next one (µs, uniform).
    pub think_us: (u64, u64),
    /// A client gives up on an operation after this long: the outcome is unknown.
    pub timeout_us: u64,
    /// Attempts per key of the final read before the run is declared stuck.
    pub final_attempts_max: u32,
    /// These keys instead of `keys` generated ones (a test that aims at placement).
    pub only_keys: Option<Vec<Bytes>>,
    /// Clients talk to these nodes only (default: every node).
    pub only_nodes: Option<Vec<NodeId>>,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            clients: 8,
            keys: 8,
            write_share: 0.5,
            write_levels: vec![
                Consistency::Quorum,
                Consistency::Quorum,
                Consistency::Quorum,
                Consistency::One,
                Consistency::All,
            ],
            read_levels: vec![
                Consistency::Quorum,
                Consistency::Quorum,
                Consistency::One,
                Consistency::All,
            ],
            think_us: (2_000, 40_000),
            timeout_us: 1_500_000,
            final_attempts_max: 200,
            only_keys: None,
            only_nodes: None,
        }
    }
}

/// A client's timers.
#[derive(Clone, Copy, Debug)]
pub(super) enum ClientTimer {
    Next,
    Timeout(u64),
}

/// What the workload asks the world to do.
#[derive(Debug, Default)]
pub(super) struct Out {
    pub sends: Vec<(u32, NodeId, Msg)>,
    pub timers: Vec<(u64, u32, ClientTimer)>,
}

#[derive(Debug)]
struct InFlight {
    req: u64,
    op: Option<OpId>,
    key: Bytes,
}

#[derive(Debug, Default)]
struct Client {
    in_flight: Option<InFlight>,
    /// The context of the client's last read of each key.
    contexts: BTreeMap<Bytes, Context>,
    writes: u64,
}

/// The final reads: every key at R = N, in turn, retried until it succeeds.
#[derive(Debug, Default)]
struct Finals {
    next_key: usize,
    attempts: u32,
    results: FinalReads,
    stuck: Option<String>,
}

pub(super) struct Workload {
    rng: StdRng,
    config: WorkloadConfig,
    nodes: Vec<NodeId>,
    keys: Vec<Bytes>,
    clients: Vec<Client>,
    pub history: History,
    running: bool,
    next_req: u64,
    finals: Option<Finals>,
}

impl Workload {
    pub fn new(seed: u64, config: WorkloadConfig, nodes: Vec<NodeId>) -> Workload {
        let keys = config.only_keys.clone().unwrap_or_else(|| {
            (0..config.keys)
                .map(|i| Bytes::from(format!("key-{i}")))
                .collect()
        });
        let nodes = config.only_nodes.clone().unwrap_or(nodes);
        // One more client than configured: the final reader.
        let clients = (0..=config.clients).map(|_| Client::default()).collect();
        Workload {
            rng: StdRng::seed_from_u64(seed ^ 0x5eed_c11e),
            config,
            nodes,
            keys,
            clients,
            history: History::new(),
            running: false,
            next_req: 0,
            finals: None,
        }
    }

    /// Every client starts its loop at a random moment within the next think time.
    pub fn start(&mut self, now_us: u64, out: &mut Out) {
        self.running = true;
        for client in 0..self.config.clients {
            let at = now_us + self.think();
            out.timers.push((at, client, ClientTimer::Next));
        }
    }

    /// No operation starts after this; those in flight finish or time out.
    pub fn stop(&mut self) {
        self.running = false;
    }

    fn think(&mut self) -> u64 {
        let (lo, hi) = self.config.think_us;
        self.rng.gen_range(lo..=hi.max(lo))
    }

    fn final_reader(&self) -> u32 {
        self.config.clients
    }

    pub fn on_timer(&mut self, client: u32, timer: ClientTimer, now_us: u64, out: &mut Out) {
        match timer {
            ClientTimer::Next if client == self.final_reader() => self.final_read(now_us, out),
            ClientTimer::Next if self.running => self.issue(client, now_us, out),
            ClientTimer::Next => {}
            ClientTimer::Timeout(req) => {
                let c = &mut self.clients[client as usize];
                if c.in_flight.as_ref().is_some_and(|f| f.req == req) {
                    let f = c.in_flight.take().expect("checked");
                    self.finished(client, f, Err(Outcome::Timeout), now_us, out);
                }
            }
        }
    }

    /// Sends request `req` to a random node, and gives up on it after the timeout.
    fn send(&mut self, client: u32, req: u64, msg: Msg, now_us: u64, out: &mut Out) {
        let node = *self.nodes.choose(&mut self.rng).expect("nodes");
        out.sends.push((client, node, msg));
        let at = now_us + self.config.timeout_us;
        out.timers.push((at, client, ClientTimer::Timeout(req)));
    }

    fn issue(&mut self, client: u32, now_us: u64, out: &mut Out) {
        let key = self.keys.choose(&mut self.rng).expect("keys").clone();
        self.next_req += 1;
        let req = self.next_req;
        let c = &mut self.clients[client as usize];
        let msg = if self.rng.gen_bool(self.config.write_share) {
            c.writes += 1;
            let value = Bytes::from(format!("c{client}-w{}", c.writes));
            let seen = c.contexts.get(&key).cloned().unwrap_or_else(Context::empty);
            let context = if seen.is_empty() {
                Bytes::new()
            } else {
                Bytes::from(seen.encode())
            };
            let op =
                self.history
                    .invoke_write_seen(client, key.clone(), value.clone(), seen, now_us);
            c.in_flight = Some(InFlight {
                req,
                op: Some(op),
                key: key.clone(),
            });
            let consistency = *self
                .config
                .write_levels
                .choose(&mut self.rng)
                .expect("levels");
            let put = Put {
                key,
                value,
                context,
                consistency,
            };
            Msg::Put { req, put }
        } else {
            let op = self.history.invoke_read(client, key.clone(), now_us);
            c.in_flight = Some(InFlight {
                req,
                op: Some(op),
                key: key.clone(),
            });
            let consistency = *self
                .config
                .read_levels
                .choose(&mut self.rng)
                .expect("levels");
            Msg::Get {
                req,
                key,
                consistency,
            }
        };
        self.send(client, req, msg, now_us, out);
    }

    /// A node's answer to `client`.
    pub fn on_answer(&mut self, client: u32, req: u64, answer: Answer, now_us: u64, out: &mut Out) {
        let c = &mut self.clients[client as usize];
        if !c.in_flight.as_ref().is_some_and(|f| f.req == req) {
            return; // late: the client gave up on it
        }
        let f = c.in_flight.take().expect("checked");
        let result = match answer {
            Answer::Refused(why) => Err(Outcome::Fail(why)),
            answer => Ok(answer),
        };
        self.finished(client, f, result, now_us, out);
    }

    fn finished(
        &mut self,
        client: u32,
        f: InFlight,
        result: Result<Answer, Outcome>,
        now_us: u64,
        out: &mut Out,
    ) {
        if client == self.final_reader() {
            return self.final_answer(f, result, now_us, out);
        }
        let op = f.op.expect("a client operation is recorded");
        match result {
            Ok(Answer::Written(context)) => self.history.write_ok(op, context, now_us),
            Ok(Answer::Read(set)) => {
                let set = set.unwrap_or_default();
                let values = set.live_values().filter_map(|v| v.value.clone()).collect();
                let context = set.context();
                self.clients[client as usize]
                    .contexts
                    .insert(f.key, context.clone());
                self.history.read_ok(op, values, context, now_us);
            }
            Ok(Answer::Refused(_)) => unreachable!("taken apart by on_answer"),
            Err(outcome) => self.history.complete(op, outcome, now_us),
        }
        let at = now_us + self.think();
        out.timers.push((at, client, ClientTimer::Next));
    }

    /// Starts the final reads (the clients must be stopped).
    pub fn start_final_reads(&mut self, now_us: u64, out: &mut Out) {
        assert!(!self.running, "final reads run after the clients stopped");
        self.finals = Some(Finals::default());
        out.timers
            .push((now_us, self.final_reader(), ClientTimer::Next));
    }

    fn final_read(&mut self, now_us: u64, out: &mut Out) {
        let Some(finals) = &self.finals else {
            return;
        };
        let Some(key) = self.keys.get(finals.next_key).cloned() else {
            return;
        };
        self.next_req += 1;
        let req = self.next_req;
        let reader = self.final_reader();
        self.clients[reader as usize].in_flight = Some(InFlight {
            req,
            op: None,
            key: key.clone(),
        });
        let consistency = Consistency::All;
        let msg = Msg::Get {
            req,
            key,
            consistency,
        };
        self.send(reader, req, msg, now_us, out);
    }

    fn final_answer(
        &mut self,
        f: InFlight,
        result: Result<Answer, Outcome>,
        now_us: u64,
        out: &mut Out,
    ) {
        let attempts_max = self.config.final_attempts_max;
        let finals = self.finals.as_mut().expect("final reads started");
        match result {
            Ok(Answer::Read(set)) => {
                let set = set.unwrap_or_default();
                let values = set.live_values().filter_map(|v| v.value.clone()).collect();
                finals.results.insert(f.key, (values, set.context()));
                finals.next_key += 1;
                finals.attempts = 0;
            }
            other => {
                finals.attempts += 1;
                if finals.attempts >= attempts_max {
                    let key = String::from_utf8_lossy(&f.key).into_owned();
                    finals.stuck = Some(format!("final read of {key}: {other:?}"));
                    return;
                }
            }
        }
        // Retries back off a little, so that a cluster still settling gets time.
        let at = now_us + 50_000;
        out.timers
            .push((at, self.final_reader(), ClientTimer::Next));
    }

    /// The final reads, once every key was read (`Err`: they could not finish).
    pub fn final_reads(&self) -> Option<Result<&FinalReads, String>> {
        let finals = self.finals.as_ref()?;
        if let Some(stuck) = &finals.stuck {
            return Some(Err(stuck.clone()));
        }
        (finals.next_key == self.keys.len()).then_some(Ok(&finals.results))
    }
}
