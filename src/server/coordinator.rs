//! The coordinator: a client's GET, PUT or DELETE over the key's N replicas.
//!
//! A write goes to the key's preferred replicas the failure detector does not hold
//! Down and, under sloppy quorum, a stand-in for each Down one
//! ([`crate::replication::placement::plan_write`]). It is coordinated by one of those
//! targets, so that the new version's dot is its own: a node that is not one forwards
//! the client's request to the first target that answers. The coordinating shard
//! writes locally (which makes the dot and stores the new set), sends the set to the
//! other replicas as REPLICA_WRITE and to the stand-ins as HINT_WRITE, and answers after
//! W acknowledgements, its own included; then it keeps hints for the preferred
//! replicas nobody acknowledged for ([`super::handoff`]). A read may be coordinated
//! anywhere: REPLICA_READ to every replica not held Down (the local one read
//! directly), answer after R with the merge of what came back, then, once every
//! replica answered or timed out, write that merge to the replicas that were behind
//! (read repair).
//!
//! The counting is [`crate::replication::quorum`]'s; this module only moves bytes.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::membership::Snapshot;
use crate::protocol::QuorumMode;
use crate::protocol::{
    encode_error_response, encode_response, Request, Response, ResponseBody, Status,
};
use crate::replication::placement::{owed_hints, plan_write, WritePlan};
use crate::replication::quorum::{Progress, ReadQuorum, WriteQuorum};
use crate::replication::{needed, Consistency};
use crate::ring::cluster::{NodeId, Replica};
use crate::ring::token as token_of;
use crate::version::{now_us, Context, Pruning, Supersedes, VersionSet};

use super::dispatch::encode_versions;
use super::Shard;

/// A replica's answer to a coordinator.
type ReadAnswer = (NodeId, Result<Option<VersionSet>, String>);

/// The key's replicas and how many must answer; or the Unavailable message.
pub(super) fn plan(
    shard: &Shard,
    key: &[u8],
    consistency: Consistency,
) -> Result<(Vec<Replica>, usize), String> {
    let snapshot = shard.snapshot();
    let replicas = snapshot.ring.replicas_of_key(key).to_vec();
    let n = replicas.len();
    let count = needed(consistency, shard.default_consistency, n);
    if count > n {
        return Err(format!(
            "{count} replicas requested but the key has {n} (replication factor {}, {} nodes)",
            snapshot.ring.replication_factor(),
            snapshot.members.len()
        ));
    }
    Ok((replicas, count))
}

/// The clock entries a set of this key may lose (`version::Pruning`): those of nodes
/// other than `replicas` that stopped changing `after` ago.
pub(super) fn pruning(replicas: &[NodeId], after: Duration) -> Pruning<'_> {
    Pruning::older_than(replicas, now_us(), after.as_micros() as u64)
}

/// The engine's clock pruning rule ([`crate::storage::Engine::set_clock_pruning`]):
/// the key's replicas in the current snapshot are kept.
pub(super) fn clock_pruning(
    snapshot: Rc<RefCell<Arc<Snapshot>>>,
    after: Duration,
) -> crate::storage::ClockPruning {
    Box::new(move |key, versions| {
        let rule = pruning(&[], after);
        // Most sets hold only replicas' entries, or entries with values: no ring walk.
        if !versions.may_prune(&rule) {
            return 0;
        }
        let snapshot = snapshot.borrow().clone();
        let ids: Vec<NodeId> = snapshot
            .ring
            .replicas_of_key(key)
            .iter()
            .map(|r| r.node_id)
            .collect();
        versions.prune(&Pruning {
            replicas: &ids,
            ..rule
        })
    })
}

/// The host and shard port of a replica, from the current snapshot.
fn address(shard: &Shard, replica: &Replica) -> Option<(String, u16)> {
    let snapshot = shard.snapshot();
    let member = snapshot.members.get(replica.node_id)?;
    Some((member.host.clone(), member.shard_port(replica.shard)))
}

/// Sends `request` to a replica's owning shard.
pub(super) async fn send(
    shard: &Shard,
    replica: &Replica,
    request: &Request,
) -> Result<Response, String> {
    let Some((host, port)) = address(shard, replica) else {
        return Err(format!(
            "node {:016x} is not in the member table",
            replica.node_id
        ));
    };
    shard
        .net
        .request(
            Some(replica.node_id),
            &host,
            port,
            request,
            shard.replica_timeout,
        )
        .await
}

/// GET: read the replicas, answer with the merge at R, repair the stale ones after.
pub async fn get(
    shard: &Rc<Shard>,
    request_id: u32,
    opcode: u8,
    key: Bytes,
    consistency: Consistency,
    out: &mut Vec<u8>,
) {
    let (replicas, r) = match plan(shard, &key, consistency) {
        Ok(plan) => plan,
        Err(message) => {
            encode_error_response(opcode, request_id, Status::Unavailable, &message, out);
            return;
        }
    };
    let ids: Vec<NodeId> = replicas.iter().map(|r| r.node_id).collect();
    let ids_for_pruning = ids.clone();
    let (tx, rx) = flume::unbounded::<ReadAnswer>();
    let health = shard.health();
    for replica in replicas.iter().copied() {
        // A replica the detector holds Down is not asked: it counts as failed at once
        // (and is not repaired by this read; its hints and anti-entropy do that).
        if replica.node_id != shard.node_id && !health.is_up(replica.node_id) {
            let down = format!("node {:016x} is Down", replica.node_id);
            let _ = tx.send((replica.node_id, Err(down)));
            continue;
        }
        let (shard, key, tx) = (shard.clone(), key.clone(), tx.clone());
        glommio::spawn_local(async move {
            let answer = if replica.node_id == shard.node_id && shard.antientropy.is_filling() {
                Err("this node still fills from the other replicas (--replace)".to_string())
            } else if replica.node_id == shard.node_id {
                shard.engine.get(&key).await.map_err(|e| e.to_string())
            } else {
                read_remote(&shard, &replica, key).await
            };
            let _ = tx.send((replica.node_id, answer));
        })
        .detach();
    }
    drop(tx);
    // Every answer is pruned as the replicas prune what they store, so that one that
    // dropped an entry and one that has not yet are not taken for different versions
    // (read repair would rewrite the entry forever).
    let after = shard.prune_clocks_after;
    let pruned = move |answer: Result<Option<VersionSet>, String>| {
        answer.map(|set| {
            let mut set = set.unwrap_or_default();
            set.prune(&pruning(&ids_for_pruning, after));
            set
        })
    };
    let mut quorum = ReadQuorum::new(&ids, r);
    while quorum.progress() == Progress::Waiting {
        let Ok((node, answer)) = rx.recv_async().await else {
            break;
        };
        quorum.record(node, pruned(answer));
    }
    if quorum.progress() != Progress::Succeeded {
        let message = quorum.unavailable().to_string();
        encode_error_response(opcode, request_id, Status::Unavailable, &message, out);
        return;
    }
    let merged = quorum.merged();
    encode_versions(request_id, (!merged.is_empty()).then_some(&merged), out);
    // Read repair, once every replica answered (or timed out).
    let (shard, key) = (shard.clone(), key.clone());
    glommio::spawn_local(async move {
        while !quorum.all_answered() {
            let Ok((node, answer)) = rx.recv_async().await else {
                break;
            };
            quorum.record(node, pruned(answer));
        }
        let merged = quorum.merged();
        if merged.is_empty() {
            return;
        }
        for node in quorum.stale(&merged) {
            let Some(replica) = replicas.iter().find(|r| r.node_id == node).copied() else {
                continue;
            };
            if node == shard.node_id {
                if let Err(e) = shard.engine.merge(&key, &merged).await {
                    eprintln!("ringkv: read repair of the local replica: {e}");
                }
            } else {
                let request = Request::ReplicaWrite {
                    key: key.clone(),
                    versions: merged.encode().into(),
                };
                let _ = send(&shard, &replica, &request).await;
            }
        }
    })
    .detach();
}

async fn read_remote(
    shard: &Shard,
    replica: &Replica,
    key: Bytes,
) -> Result<Option<VersionSet>, String> {
    let response = send(shard, replica, &Request::ReplicaRead { key }).await?;
    match (response.status, response.body) {
        (Status::Ok, ResponseBody::Versions { versions }) => match VersionSet::decode(&versions) {
            Ok((set, used)) if used == versions.len() => Ok(Some(set)),
            Ok(_) => Err("version set with trailing bytes".into()),
            Err(e) => Err(format!("version set does not decode: {e}")),
        },
        (Status::NotFound, _) => Ok(None),
        (status, _) => Err(format!("{status:?}: {}", response.message)),
    }
}

/// What a PUT or DELETE came to.
pub enum Written {
    /// W replicas hold it: the context of the set this node stored (pruned as the
    /// replicas got it).
    Stored(Context),
    /// Anything else, as the client is to be answered: a refusal, a failure, or the
    /// answer of the replica that coordinated it instead of this node.
    Answer(Response),
}

/// PUT or DELETE: coordinated by a replica, answered after W.
pub async fn write(
    shard: &Rc<Shard>,
    request_id: u32,
    opcode: u8,
    request: Request,
    out: &mut Vec<u8>,
) {
    let response = match write_typed(shard, &request).await {
        Written::Stored(context) => Response::ok(ResponseBody::Written {
            context: context.encode().into(),
        }),
        Written::Answer(response) => response,
    };
    encode_response(opcode, request_id, &response, out);
}

/// [`write`] for a front end that wants the outcome rather than a frame (RESP).
///
/// Where the write goes is [`plan_write`]'s decision over the failure detector's view:
/// the Up preferred replicas and, under sloppy quorum, a stand-in for each Down one.
/// This node coordinates if it is one of those targets, else it forwards the request
/// to them in order.
pub async fn write_typed(shard: &Rc<Shard>, request: &Request) -> Written {
    let (key, context, value, consistency, mode) = match request {
        Request::Put {
            key,
            context,
            value,
            consistency,
            quorum,
        } => (
            key.clone(),
            context.clone(),
            Some(value.clone()),
            *consistency,
            *quorum,
        ),
        Request::Delete {
            key,
            context,
            consistency,
            quorum,
        } => (key.clone(), context.clone(), None, *consistency, *quorum),
        _ => unreachable!("only PUT and DELETE are writes"),
    };
    let (preferred, w) = match plan(shard, &key, consistency) {
        Ok(plan) => plan,
        Err(message) => return Written::Answer(Response::error(Status::Unavailable, message)),
    };
    let health = shard.health();
    // Stand-ins are looked for only when a preferred replica is Down.
    let fallbacks =
        if mode == QuorumMode::Sloppy && !preferred.iter().all(|r| health.is_up(r.node_id)) {
            shard.snapshot().ring.fallbacks(token_of(&key))
        } else {
            Vec::new()
        };
    let is_up = |node| health.is_up(node);
    let targets = match plan_write(shard.node_id, &preferred, &fallbacks, is_up, mode, w) {
        WritePlan::Coordinate { targets } => targets,
        WritePlan::Forward { to } => {
            return Written::Answer(forward_to_a_replica(shard, request, &to).await)
        }
        WritePlan::Unavailable { reachable, needed } => {
            let message = format!(
                "{needed} acknowledgements needed but only {reachable} of the key's replicas \
                 are Up{}",
                if mode == QuorumMode::Strict {
                    " (strict quorum: stand-ins do not count)"
                } else {
                    ""
                }
            );
            return Written::Answer(Response::error(Status::Unavailable, message));
        }
    };
    let supersedes = match Supersedes::decode(&context) {
        Ok(context) => context,
        Err(e) => {
            let message = format!("context is not one ringkv gave out: {e}");
            return Written::Answer(Response::error(Status::BadRequest, message));
        }
    };
    let ids: Vec<NodeId> = preferred.iter().map(|r| r.node_id).collect();
    let stands_in_for = targets
        .iter()
        .find(|t| t.replica.node_id == shard.node_id)
        .and_then(|t| t.hint_for);
    // A key this node alone replicates, all Up, needs no channel and no encoded set.
    let alone = targets.len() == 1 && preferred.len() == 1 && stands_in_for.is_none();
    let rule = pruning(&ids, shard.prune_clocks_after);
    // What the client gets (the context) and the other replicas (the set, encoded):
    // the entries the ring still needs.
    let given_out = |stored: &VersionSet| {
        let pruned;
        let set = if stored.may_prune(&rule) {
            let mut copy = stored.clone();
            copy.prune(&rule);
            pruned = copy;
            &pruned
        } else {
            stored
        };
        let encoded = (!alone).then(|| Bytes::from(set.encode()));
        (set.context(), encoded)
    };
    let (context, encoded) = match shard
        .engine
        .write_over_with(&key, &supersedes, value.as_deref(), now_us(), given_out)
        .await
    {
        Ok(given_out) => given_out,
        Err(e) => {
            let message = format!("node {:016x} shard {}: {e}", shard.node_id, shard.id);
            return Written::Answer(Response::error(e.status(), message));
        }
    };
    let Some(encoded) = encoded else {
        return Written::Stored(context);
    };
    // A stand-in coordinating keeps the hint for the replica it stands in for before
    // its own acknowledgement counts.
    if let Some(owner) = stands_in_for {
        if let Err(e) = keep_hint(shard, owner, &key, &encoded, true).await {
            return Written::Answer(Response::error(Status::Unavailable, e));
        }
    }
    let target_ids: Vec<NodeId> = targets.iter().map(|t| t.replica.node_id).collect();
    let mut quorum = WriteQuorum::new(&target_ids, w);
    quorum.record(shard.node_id, Ok(()));
    let (tx, rx) = flume::unbounded::<(NodeId, Result<(), String>)>();
    for target in targets
        .iter()
        .filter(|t| t.replica.node_id != shard.node_id)
    {
        let (shard, tx) = (shard.clone(), tx.clone());
        let request = match target.hint_for {
            None => Request::ReplicaWrite {
                key: key.clone(),
                versions: encoded.clone(),
            },
            Some(owner) => Request::HintWrite {
                target: owner,
                key: key.clone(),
                versions: encoded.clone(),
            },
        };
        let replica = target.replica;
        glommio::spawn_local(async move {
            let result = match send(&shard, &replica, &request).await {
                Ok(response) if response.status == Status::Ok => Ok(()),
                Ok(response) => Err(format!("{:?}: {}", response.status, response.message)),
                Err(e) => Err(e),
            };
            let _ = tx.send((replica.node_id, result));
        })
        .detach();
    }
    drop(tx);
    let mut acked = vec![shard.node_id];
    while quorum.progress() == Progress::Waiting {
        let Ok((node, result)) = rx.recv_async().await else {
            break;
        };
        if result.is_ok() {
            acked.push(node);
        }
        quorum.record(node, result);
    }
    let outcome = if quorum.progress() == Progress::Succeeded {
        Written::Stored(context)
    } else {
        let message = format!(
            "the write is stored on {} replica(s), not the {w} asked for: {}",
            quorum.unavailable().succeeded,
            quorum.unavailable()
        );
        Written::Answer(Response::error(Status::Unavailable, message))
    };
    // Once every target answered or timed out: hints for the preferred replicas that
    // neither took the write nor had a stand-in take it.
    let shard = shard.clone();
    glommio::spawn_local(async move {
        while let Ok((node, result)) = rx.recv_async().await {
            if result.is_ok() {
                acked.push(node);
            }
        }
        let owed = owed_hints(&preferred, &targets, |node| acked.contains(&node));
        for owner in owed {
            // Counts toward nothing: W came from elsewhere, or was not reached.
            if let Err(e) = keep_hint(&shard, owner, &key, &encoded, false).await {
                if let Some(count) = shard.handoff.failure_to_log() {
                    eprintln!(
                        "ringkv: shard {}: no hint for {owner:016x}: {e} ({count} hints not \
                         kept since start; logged at 1, 2, 4, …)",
                        shard.id
                    );
                }
            }
        }
    })
    .detach();
    outcome
}

/// Keeps a hint of a write for `owner` on this shard ([`super::handoff::Handoff::keep`]),
/// judged by the failure detector's current view of it.
async fn keep_hint(
    shard: &Shard,
    owner: NodeId,
    key: &Bytes,
    encoded: &Bytes,
    counted: bool,
) -> Result<(), String> {
    let down_since = shard.health().down_since_us(owner);
    shard
        .handoff
        .keep(owner, key.clone(), encoded.clone(), down_since, counted)
        .await
}

/// This node is not a target of the write: the first target that answers coordinates.
async fn forward_to_a_replica(shard: &Shard, request: &Request, replicas: &[Replica]) -> Response {
    let mut failures = Vec::new();
    for replica in replicas {
        match send(shard, replica, request).await {
            Ok(response) => return response,
            Err(e) => failures.push(format!("node {:016x}: {e}", replica.node_id)),
        }
    }
    let message = format!(
        "no replica of the key could take the write: {}",
        failures.join("; ")
    );
    Response::error(Status::Unavailable, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{MemberInfo, MemberTable};
    use crate::version::Versioned;

    fn member(node_id: NodeId, token: u64) -> MemberInfo {
        MemberInfo {
            node_id,
            generation: 1,
            host: "127.0.0.1".into(),
            port: 7000,
            shards: 1,
            dc: "dc1".into(),
            rack: "rack1".into(),
            replication_factor: 2,
            conflicts: "dvv".into(),
            tokens: vec![(token, 0)],
        }
    }

    fn write(stored: &VersionSet, node: NodeId, fresh: u64) -> VersionSet {
        let versioned = Versioned {
            timestamp_us: fresh,
            value: Some(Bytes::from_static(b"v")),
        };
        VersionSet::coordinate(stored, &stored.context(), versioned, node, fresh)
    }

    #[test]
    fn the_engine_rule_keeps_the_key_replicas_entries_and_drops_old_others() {
        let table = MemberTable::new([
            member(1, 0),
            member(3, 1 << 62),
            member(5, 2 << 62),
            member(7, 3 << 62),
        ]);
        let snapshot = Arc::new(Snapshot::new(table, 2).unwrap());
        let key = b"some key";
        let replicas: Vec<NodeId> = snapshot
            .ring
            .replicas_of_key(key)
            .iter()
            .map(|r| r.node_id)
            .collect();
        let outsider = [1, 3, 5, 7]
            .into_iter()
            .find(|n| !replicas.contains(n))
            .unwrap();
        // Every node wrote in turn (old counters), the last replica last.
        let mut set = VersionSet::empty();
        for (i, node) in [outsider, replicas[0], replicas[1]].into_iter().enumerate() {
            set = write(&set, node, 10 + i as u64);
        }
        let rule = clock_pruning(Rc::new(RefCell::new(snapshot)), Duration::from_secs(60));
        let before = set.context();
        assert_eq!(rule(key, &mut set), 1);
        assert_eq!(set.counter_of(outsider), 0);
        assert_eq!(set.counter_of(replicas[0]), before.counter(replicas[0]));
        assert_eq!(set.live_values().count(), 1);
        // Entries younger than `after` stay, whoever they belong to.
        let mut young = write(&VersionSet::empty(), outsider, now_us());
        young = write(&young, replicas[0], now_us());
        assert_eq!(rule(key, &mut young), 0);
    }
}
