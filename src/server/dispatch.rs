//! What a request does: decide where it runs, run it, encode its response.
//!
//! A request for a key is executed on the shard that owns the key's token; any other
//! shard forwards it ([`forward`]). Requests that need no await — PING, SHARD_MAP and a
//! GET on the owning shard that memory answers (a memtable holds the key, or no table's
//! filter admits it) — are answered inline by the connection's reader
//! ([`answer_at_once`]); writes, and reads that go to the tables, run as their own task.
//! A front end that wants a typed answer instead of a frame (RESP) goes the same way
//! through [`run`].

use crate::protocol::{
    decode_response, encode_error_response, encode_get_response, encode_response, FrameHeader,
    Request, Response, ResponseBody, ShardMap as WireShardMap, Status, HEADER_LEN,
};
use std::rc::Rc;

use bytes::Bytes;

use crate::runtime::ShardMsg;
use crate::version::VersionSet;

use super::{coordinator, Shard};

/// Where a request runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Here,
    Shard(usize),
}

pub fn route(shard: &Shard, request: &Request) -> Route {
    let key = match request {
        Request::Get { key, .. }
        | Request::Put { key, .. }
        | Request::Delete { key, .. }
        | Request::ReplicaWrite { key, .. }
        | Request::HintWrite { key, .. }
        | Request::ReplicaRead { key } => key,
        Request::Ping | Request::ShardMap | Request::NodeStatus => return Route::Here,
        // The member table, gossip and the faults in force live on shard 0, the
        // control plane.
        Request::Members { .. } | Request::ClusterStatus | Request::Fault { .. }
            if shard.id == 0 =>
        {
            return Route::Here
        }
        Request::Members { .. } | Request::ClusterStatus | Request::Fault { .. } => {
            return Route::Shard(0)
        }
        // Steps name the shard whose trees they compare; a bad one is refused there.
        Request::Sync { shard: to, .. }
        | Request::Repair { shard: to }
        | Request::Compact { shard: to } => {
            let to = usize::from(*to);
            return if to != shard.id && to < shard.peers.len() {
                Route::Shard(to)
            } else {
                Route::Here
            };
        }
    };
    let owner = *shard.shard_map.owner_of_key(key) as usize;
    if owner == shard.id {
        Route::Here
    } else {
        Route::Shard(owner)
    }
}

/// Whether `request`, run on this shard, needs no await (so the reader answers it at
/// once, in the same poll: nothing can change in between).
pub fn answers_at_once(shard: &Shard, request: &Request) -> bool {
    match request {
        Request::Ping
        | Request::ShardMap
        | Request::Members { .. }
        | Request::ClusterStatus
        | Request::Fault { .. } => true,
        Request::Get { key, .. } => {
            only_replica_is_here(shard, key)
                && !shard.antientropy.is_filling()
                && shard.engine.read_now(key, |_| ()).is_some()
        }
        Request::ReplicaRead { key } => {
            !shard.antientropy.is_filling() && shard.engine.read_now(key, |_| ()).is_some()
        }
        Request::Put { .. }
        | Request::Delete { .. }
        | Request::ReplicaWrite { .. }
        | Request::HintWrite { .. }
        | Request::NodeStatus
        | Request::Sync { .. }
        | Request::Repair { .. }
        | Request::Compact { .. } => false,
    }
}

/// Answers a request for which [`answers_at_once`] holds.
pub fn answer_at_once(
    shard: &Shard,
    request_id: u32,
    opcode: u8,
    request: &Request,
    out: &mut Vec<u8>,
) {
    match request {
        Request::Ping => {
            encode_response(opcode, request_id, &Response::ok(ResponseBody::Empty), out);
        }
        Request::ShardMap => {
            let map = WireShardMap {
                node_id: shard.node_id,
                ports: shard.shard_ports.clone(),
                vnodes: shard.shard_map.vnodes().to_vec(),
            };
            encode_response(
                opcode,
                request_id,
                &Response::ok(ResponseBody::ShardMap(map)),
                out,
            );
        }
        // This node is the key's only replica (`answers_at_once`): the coordinator's
        // plan, then the local answer.
        Request::Get { key, consistency } => match coordinator::plan(shard, key, *consistency) {
            Ok(_) => encode_get(shard, request_id, key, out),
            Err(message) => {
                encode_error_response(opcode, request_id, Status::Unavailable, &message, out)
            }
        },
        Request::Members { table } => {
            let control = shard
                .control
                .as_ref()
                .expect("MEMBERS is routed to shard 0");
            match control.exchange(shard, table) {
                Ok(table) => {
                    let body = ResponseBody::Members {
                        table: table.into(),
                    };
                    encode_response(opcode, request_id, &Response::ok(body), out);
                }
                Err(message) => {
                    encode_error_response(opcode, request_id, Status::BadRequest, &message, out)
                }
            }
        }
        Request::ReplicaRead { key } => {
            shard
                .engine
                .read_now(key, |versions| {
                    encode_replica_set(request_id, versions, out)
                })
                .expect("answers_at_once said memory answers this read");
        }
        Request::ClusterStatus => {
            let control = shard.control.as_ref().expect("routed to shard 0");
            let body = ResponseBody::ClusterStatus {
                view: control.view().encode().into(),
            };
            encode_response(opcode, request_id, &Response::ok(body), out);
        }
        Request::Fault { spec } => match super::faults::FaultChange::decode(spec) {
            Ok(change) => {
                let mut faults = shard.net.faults.borrow().clone();
                faults.apply(&change);
                eprintln!(
                    "ringkv: node {:016x} faults now: drop to {:x?}, delay {:?}",
                    shard.node_id, faults.drop_to, faults.delay
                );
                for inbox in &shard.peers {
                    let _ = inbox.try_send(ShardMsg::Faults(faults.clone()));
                }
                *shard.net.faults.borrow_mut() = faults;
                encode_response(opcode, request_id, &Response::ok(ResponseBody::Empty), out);
            }
            Err(message) => {
                encode_error_response(opcode, request_id, Status::BadRequest, &message, out)
            }
        },
        Request::Put { .. }
        | Request::Delete { .. }
        | Request::ReplicaWrite { .. }
        | Request::HintWrite { .. }
        | Request::NodeStatus
        | Request::Sync { .. }
        | Request::Repair { .. }
        | Request::Compact { .. } => {
            unreachable!("a write, a sync or a disk walk is never answered at once")
        }
    }
}

/// A GET on this shard answered at once if it can be, for a front end that wants the
/// stored versions rather than a frame: when this node is the key's only replica (as
/// [`answers_at_once`] asks), the coordinator's plan, then `f` on what memory has, in
/// one memtable probe. `None`: the tables must be read (run it); `Some(Err)`: the plan's
/// refusal (too few replicas for the consistency).
pub fn get_at_once<T>(
    shard: &Shard,
    key: &[u8],
    consistency: crate::protocol::Consistency,
    f: impl FnOnce(Option<&VersionSet>) -> T,
) -> Option<Result<T, String>> {
    if !only_replica_is_here(shard, key) {
        return None;
    }
    if let Err(message) = coordinator::plan(shard, key, consistency) {
        return Some(Err(message));
    }
    shard.engine.read_now(key, f).map(Ok)
}

/// Runs `request` on this shard (which must own its key) and encodes the response:
/// client requests through the coordinator, replica requests on the local engine.
pub async fn execute_local(
    shard: &Rc<Shard>,
    request_id: u32,
    opcode: u8,
    request: Request,
    out: &mut Vec<u8>,
) {
    match request {
        Request::Get { key, consistency } => {
            coordinator::get(shard, request_id, opcode, key, consistency, out).await
        }
        Request::Put { .. } | Request::Delete { .. } => {
            coordinator::write(shard, request_id, opcode, request, out).await
        }
        Request::ReplicaRead { .. } if shard.antientropy.is_filling() => {
            let message = format!(
                "shard {} fills from the other replicas (--replace) and answers no reads yet",
                shard.id
            );
            encode_error_response(opcode, request_id, Status::Unavailable, &message, out);
        }
        Request::ReplicaRead { key } => match shard.engine.get(&key).await {
            Ok(versions) => encode_replica_set(request_id, versions.as_ref(), out),
            Err(e) => {
                let message = format!("shard {}: {e}", shard.id);
                encode_error_response(opcode, request_id, e.status(), &message, out);
            }
        },
        Request::ReplicaWrite { key, versions } => {
            replica_write(shard, request_id, &key, &versions, out).await
        }
        Request::HintWrite {
            target,
            key,
            versions,
        } => hint_write(shard, request_id, target, key, versions, out).await,
        Request::NodeStatus => {
            // Walking the data dir blocks: off the executor thread.
            let dir = shard.data_dir.clone();
            let data_bytes = glommio::executor()
                .spawn_blocking(move || dir_bytes(&dir))
                .await;
            let body = ResponseBody::NodeStatus { data_bytes };
            encode_response(opcode, request_id, &Response::ok(body), out);
        }
        Request::Sync { shard: to, body } => {
            if usize::from(to) != shard.id {
                let message = format!("no shard {to} on this node");
                encode_error_response(opcode, request_id, Status::BadRequest, &message, out);
                return;
            }
            match super::antientropy::answer(shard, body).await {
                Ok(body) => {
                    let body = ResponseBody::Sync { body: body.into() };
                    encode_response(opcode, request_id, &Response::ok(body), out);
                }
                Err((status, message)) => {
                    encode_error_response(opcode, request_id, status, &message, out)
                }
            }
        }
        Request::Repair { shard: to } => {
            let all = to == crate::protocol::REPAIR_ALL_SHARDS;
            if !all && usize::from(to) >= shard.peers.len() {
                let message = format!("no shard {to} on this node");
                encode_error_response(opcode, request_id, Status::BadRequest, &message, out);
                return;
            }
            let report = super::antientropy::repair(shard, to).await;
            let body = ResponseBody::Repair {
                report: report.encode().into(),
            };
            encode_response(opcode, request_id, &Response::ok(body), out);
        }
        Request::Compact { shard: to } => {
            let all = to == crate::protocol::REPAIR_ALL_SHARDS;
            let result = if all {
                compact_every_shard(shard).await
            } else if usize::from(to) == shard.id {
                compact_here(shard).await
            } else {
                Err(format!("no shard {to} on this node"))
            };
            match result {
                Ok(()) => {
                    encode_response(opcode, request_id, &Response::ok(ResponseBody::Empty), out)
                }
                Err(message) => {
                    encode_error_response(opcode, request_id, Status::Unavailable, &message, out)
                }
            }
        }
        other => answer_at_once(shard, request_id, opcode, &other, out),
    }
}

/// COMPACT on this shard: flush the memtables, then merge every table into one.
async fn compact_here(shard: &Shard) -> Result<(), String> {
    let e = |e: crate::storage::StorageError| format!("shard {}: {e}", shard.id);
    shard.engine.flush().await.map_err(e)?;
    shard.engine.compact_all().await.map_err(e)
}

/// COMPACT on every shard of the node, one after another.
async fn compact_every_shard(shard: &Rc<Shard>) -> Result<(), String> {
    for s in 0..shard.peers.len() {
        if s == shard.id {
            compact_here(shard).await?;
            continue;
        }
        let request = Request::Compact { shard: s as u16 };
        let opcode = request.opcode();
        let response = decode_own_frame(forward(shard, s, 0, opcode, request).await, opcode);
        if response.status != Status::Ok {
            return Err(response.message);
        }
    }
    Ok(())
}

/// Runs `request` as a binary-protocol connection runs it (a shard permit, then here
/// or on the owning shard, through the coordinator) and decodes the answer. The frame
/// in between is what keeps this the same path as the binary protocol's; decoding it
/// costs a copy of nothing but the small fields (values stay slices of the frame).
pub async fn run(shard: &Rc<Shard>, request: Request) -> Response {
    if shard.permits.acquire(1).await.is_err() {
        return Response::error(Status::Unavailable, "the shard is shutting down");
    }
    let opcode = request.opcode();
    let mut frame = Vec::new();
    match route(shard, &request) {
        Route::Here if answers_at_once(shard, &request) => {
            answer_at_once(shard, 0, opcode, &request, &mut frame)
        }
        Route::Here => execute_local(shard, 0, opcode, request, &mut frame).await,
        Route::Shard(owner) => frame = forward(shard, owner, 0, opcode, request).await,
    }
    shard.permits.signal(1);
    decode_own_frame(frame, opcode)
}

/// A PUT or DELETE run as [`run`] runs it, for a front end that needs the outcome only
/// (RESP): a write this shard coordinates builds no response frame.
pub async fn write(shard: &Rc<Shard>, request: Request) -> coordinator::Written {
    if shard.permits.acquire(1).await.is_err() {
        let response = Response::error(Status::Unavailable, "the shard is shutting down");
        return coordinator::Written::Answer(response);
    }
    let written = match route(shard, &request) {
        Route::Here => coordinator::write_typed(shard, &request).await,
        Route::Shard(owner) => {
            let opcode = request.opcode();
            let frame = forward(shard, owner, 0, opcode, request).await;
            coordinator::Written::Answer(decode_own_frame(frame, opcode))
        }
    };
    shard.permits.signal(1);
    written
}

/// Decodes a response frame this node encoded; one that does not decode is a bug,
/// answered as Internal rather than taking the shard down.
pub(super) fn decode_own_frame(frame: Vec<u8>, opcode: u8) -> Response {
    let mut frame = Bytes::from(frame);
    let decoded = frame
        .first_chunk::<HEADER_LEN>()
        .ok_or_else(|| "a response frame shorter than its header".to_string())
        .and_then(|header| FrameHeader::decode(header).map_err(|e| e.to_string()))
        .and_then(|header| {
            let body = frame.split_off(HEADER_LEN);
            decode_response(&header, body, opcode).map_err(|e| e.to_string())
        });
    decoded.unwrap_or_else(|e| {
        debug_assert!(false, "a response frame this node encoded: {e}");
        Response::error(
            Status::Internal,
            format!("a response frame this node encoded: {e}"),
        )
    })
}

/// Bytes of every file under `dir` (unreadable entries count 0).
pub(super) fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Whether the ring gives `key` one replica, this node (a cluster of one): then a GET
/// that memory answers needs no coordinator.
fn only_replica_is_here(shard: &Shard, key: &[u8]) -> bool {
    let snapshot = shard.snapshot();
    let replicas = snapshot.ring.replicas_of_key(key);
    replicas.len() == 1 && replicas[0].node_id == shard.node_id
}

/// Sends `request` to the shard that owns its key and waits for the encoded response.
pub async fn forward(
    shard: &Shard,
    owner: usize,
    request_id: u32,
    opcode: u8,
    request: Request,
) -> Vec<u8> {
    let (reply, response) = flume::bounded(1);
    let message = ShardMsg::Forward {
        request_id,
        opcode,
        request,
        reply,
    };
    if shard.peers[owner].send_async(message).await.is_ok() {
        if let Ok(frame) = response.recv_async().await {
            return frame;
        }
    }
    let mut frame = Vec::new();
    let message = format!("shard {owner}, which owns the key, is not running");
    encode_error_response(
        opcode,
        request_id,
        Status::Unavailable,
        &message,
        &mut frame,
    );
    frame
}

/// Merges a peer's version set into this replica's copy of the key.
async fn replica_write(
    shard: &Shard,
    request_id: u32,
    key: &[u8],
    encoded: &Bytes,
    out: &mut Vec<u8>,
) {
    let op = crate::protocol::opcode::REPLICA_WRITE;
    let versions = match VersionSet::decode(encoded) {
        Ok((versions, used)) if used == encoded.len() => versions,
        Ok((_, used)) => {
            let message = format!(
                "version set of {} bytes has {} trailing",
                encoded.len(),
                encoded.len() - used
            );
            encode_error_response(op, request_id, Status::BadRequest, &message, out);
            return;
        }
        Err(e) => {
            let message = format!("version set does not decode: {e}");
            encode_error_response(op, request_id, Status::BadRequest, &message, out);
            return;
        }
    };
    match shard.engine.merge(key, &versions).await {
        Ok(_) => encode_response(op, request_id, &Response::ok(ResponseBody::Empty), out),
        Err(e) => {
            let message = format!("shard {}: {e}", shard.id);
            encode_error_response(op, request_id, e.status(), &message, out);
        }
    }
}

/// HINT_WRITE: this shard stands in for `target` (sloppy quorum). The set is checked
/// as a replica would check it, then kept in the hint log; the answer, which counts
/// toward the coordinator's W, waits for the log's fdatasync.
async fn hint_write(
    shard: &Shard,
    request_id: u32,
    target: u64,
    key: Bytes,
    encoded: Bytes,
    out: &mut Vec<u8>,
) {
    let op = crate::protocol::opcode::HINT_WRITE;
    match VersionSet::decode(&encoded) {
        Ok((_, used)) if used == encoded.len() => {}
        Ok(_) | Err(_) => {
            let message = "the hinted version set does not decode whole";
            encode_error_response(op, request_id, Status::BadRequest, message, out);
            return;
        }
    }
    let down_since = shard.health().down_since_us(target);
    // A stand-in's hint: its acknowledgement counts toward the coordinator's W.
    match shard
        .handoff
        .keep(target, key, encoded, down_since, true)
        .await
    {
        Ok(()) => encode_response(op, request_id, &Response::ok(ResponseBody::Empty), out),
        Err(message) => encode_error_response(op, request_id, Status::Unavailable, &message, out),
    }
}

/// A REPLICA_READ answer: the whole set (tombstones and all), or NotFound.
fn encode_replica_set(request_id: u32, versions: Option<&VersionSet>, out: &mut Vec<u8>) {
    let op = crate::protocol::opcode::REPLICA_READ;
    match versions {
        Some(versions) => {
            let body = ResponseBody::Versions {
                versions: versions.encode().into(),
            };
            encode_response(op, request_id, &Response::ok(body), out);
        }
        None => encode_error_response(op, request_id, Status::NotFound, "", out),
    }
}

/// Answers a GET from memory; the caller checked that memory can
/// ([`answers_at_once`]): this node is the key's only replica. Clock entries of other
/// nodes are pruned as the coordinator prunes them (`coordinator::get`).
fn encode_get(shard: &Shard, request_id: u32, key: &[u8], out: &mut Vec<u8>) {
    let replicas = [shard.node_id];
    let rule = super::coordinator::pruning(&replicas, shard.prune_clocks_after);
    shard
        .engine
        .read_now(key, |versions| match versions {
            Some(stored) if stored.may_prune(&rule) => {
                let mut pruned = stored.clone();
                pruned.prune(&rule);
                encode_versions(request_id, Some(&pruned), out)
            }
            _ => encode_versions(request_id, versions, out),
        })
        .expect("answers_at_once said memory answers this read");
}

pub(super) fn encode_versions(request_id: u32, versions: Option<&VersionSet>, out: &mut Vec<u8>) {
    let Some(versions) = versions else {
        encode_get_response(request_id, Status::NotFound, &[], std::iter::empty(), out);
        return;
    };
    let context = versions.context().encode();
    let values: Vec<(u64, &[u8])> = versions
        .values()
        .filter_map(|v| v.value.as_deref().map(|bytes| (v.timestamp_us, bytes)))
        .collect();
    let status = if values.is_empty() {
        Status::NotFound
    } else {
        Status::Ok
    };
    encode_get_response(request_id, status, &context, values.into_iter(), out);
}
