//! GET, SET, DEL, EXISTS, MGET and MSET as the binary protocol's requests, through the
//! same routing and coordinator ([`dispatch::run`]; writes through [`dispatch::write`],
//! the same path without a response frame), with the node's default consistency.
//!
//! A Redis client has no causal context, so:
//!
//! - GET answers one value: of the siblings a read meets, the newest by write timestamp
//!   (ties: the larger value, so that every node picks the same one).
//! - SET is an overwrite ([`CONTEXT_OVERWRITE`]): the coordinating replica supersedes
//!   every version it stores for the key, read under the key's lock, so SETs through
//!   one coordinator never leave siblings and cost one request, no read first. Versions
//!   other replicas hold that the coordinator has not merged yet (a concurrent SET
//!   coordinated by another replica, a write it missed) stay siblings; the next GET
//!   picks the newest and the next SET coordinated where they met supersedes them.
//!   Under `--conflicts lww` contexts are ignored anyway.
//! - DEL reads the key likewise and deletes with that context, counting keys that had a
//!   value.
//!
//! Multi-key commands run one request per key, at most [`KEYS_IN_FLIGHT_MAX`] at once:
//! MSET is not atomic (a failure leaves the keys before it written), and a key named
//! twice in MSET or DEL counts once (MSET writes its last value). The first failure
//! is the command's reply.

use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

use bytes::Bytes;

use crate::protocol::resp::Reply;
use crate::protocol::{Consistency, QuorumMode, Request, Response, ResponseBody, Status};
use crate::version::CONTEXT_OVERWRITE;

use super::super::coordinator::Written;
use super::super::dispatch;
use super::{Access, Shard};

/// Keys of one multi-key command whose requests are in flight at once: enough to keep
/// the replicas busy, few enough that one MGET does not take every shard permit.
const KEYS_IN_FLIGHT_MAX: usize = 64;

/// A command that reads or writes the store.
pub enum Op {
    Get(Bytes),
    Set(Bytes, Bytes),
    Del(Vec<Bytes>),
    Exists(Vec<Bytes>),
    MGet(Vec<Bytes>),
    MSet(Vec<(Bytes, Bytes)>),
}

impl Op {
    /// The keys the operation touches, and whether it writes them.
    pub fn access(&self) -> Access {
        let (keys, writes) = match self {
            Op::Get(key) => (vec![key.clone()], false),
            Op::Set(key, _) => (vec![key.clone()], true),
            Op::Del(keys) => (distinct(keys.clone()), true),
            Op::Exists(keys) | Op::MGet(keys) => (keys.clone(), false),
            Op::MSet(pairs) => (
                distinct(pairs.iter().map(|(k, _)| k.clone()).collect()),
                true,
            ),
        };
        Access { keys, writes }
    }
}

/// `keys` without repeats, in first-seen order.
fn distinct(keys: Vec<Bytes>) -> Vec<Bytes> {
    let mut seen = std::collections::HashSet::new();
    keys.into_iter()
        .filter(|k| seen.insert(k.clone()))
        .collect()
}

/// The last value of each key, in the order the keys first appear.
fn last_values(pairs: Vec<(Bytes, Bytes)>) -> Vec<(Bytes, Bytes)> {
    let mut index: HashMap<Bytes, usize> = HashMap::new();
    let mut out: Vec<(Bytes, Bytes)> = Vec::new();
    for (key, value) in pairs {
        match index.get(&key) {
            Some(&i) => out[i].1 = value,
            None => {
                index.insert(key.clone(), out.len());
                out.push((key, value));
            }
        }
    }
    out
}

/// The reply to `op` when it needs no await: a GET that the binary protocol would also
/// answer inline ([`dispatch::get_at_once`]: this node is the key's only replica and
/// memory has the answer). `None`: it has to [`run`].
pub fn at_once(shard: &Shard, op: &Op) -> Option<Reply> {
    let Op::Get(key) = op else {
        return None;
    };
    let request = Request::Get {
        consistency: Consistency::Default,
        key: key.clone(),
    };
    if let Err(reply) = check(shard, &request) {
        return Some(reply);
    }
    if dispatch::route(shard, &request) != dispatch::Route::Here {
        return None;
    }
    let newest = dispatch::get_at_once(shard, key, Consistency::Default, |versions| {
        let values = versions.into_iter().flat_map(|v| v.values());
        newest(values.filter_map(|v| v.value.as_ref().map(|value| (v.timestamp_us, value))))
    })?;
    Some(match newest {
        Ok(newest) => newest.map_or(Reply::Null, Reply::Bulk),
        Err(message) => store_error(Status::Unavailable, &message),
    })
}

pub async fn run(shard: &Rc<Shard>, op: Op) -> Reply {
    let result = match op {
        Op::Get(key) => read(shard.clone(), key)
            .await
            .map(|read| read.newest.map_or(Reply::Null, Reply::Bulk)),
        Op::Set(key, value) => set(shard.clone(), (key, value)).await.map(|()| Reply::OK),
        Op::MSet(pairs) => each(shard, last_values(pairs), set)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, Reply>>()
            .map(|_| Reply::OK),
        Op::Del(keys) => count(each(shard, distinct(keys), delete).await),
        Op::Exists(keys) => count(each(shard, keys, exists).await),
        Op::MGet(keys) => each(shard, keys, read)
            .await
            .into_iter()
            .map(|read| read.map(|read| read.newest.map_or(Reply::Null, Reply::Bulk)))
            .collect::<Result<Vec<Reply>, Reply>>()
            .map(Reply::Array),
    };
    result.unwrap_or_else(|error| error)
}

fn count(results: Vec<Result<bool, Reply>>) -> Result<Reply, Reply> {
    let mut count = 0;
    for result in results {
        count += i64::from(result?);
    }
    Ok(Reply::Integer(count))
}

/// Runs `f` on every item, at most [`KEYS_IN_FLIGHT_MAX`] at once; results in order.
async fn each<T, R, F, Fut>(shard: &Rc<Shard>, items: Vec<T>, f: F) -> Vec<R>
where
    F: Fn(Rc<Shard>, T) -> Fut,
    Fut: Future<Output = R> + 'static,
    R: 'static,
{
    let mut results = Vec::with_capacity(items.len());
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let tasks: Vec<_> = items
            .by_ref()
            .take(KEYS_IN_FLIGHT_MAX)
            .map(|item| glommio::spawn_local(f(shard.clone(), item)))
            .collect();
        for task in tasks {
            results.push(task.await);
        }
    }
    results
}

/// What a read found: the value a Redis client sees, and the context to write with.
struct Read {
    newest: Option<Bytes>,
    context: Bytes,
}

async fn read(shard: Rc<Shard>, key: Bytes) -> Result<Read, Reply> {
    let request = Request::Get {
        consistency: Consistency::Default,
        key,
    };
    let Response {
        status,
        message,
        body,
    } = send(&shard, request).await?;
    match (status, body) {
        (Status::Ok | Status::NotFound, ResponseBody::Get { context, values }) => Ok(Read {
            newest: newest(values.iter().map(|v| (v.timestamp_us, &v.value))),
            context,
        }),
        (status, _) => Err(store_error(status, &message)),
    }
}

/// The sibling a Redis client sees, of `(write timestamp, value)` pairs: the newest
/// write, the larger value on a tie (so that every node picks the same one).
fn newest<'a>(values: impl IntoIterator<Item = (u64, &'a Bytes)>) -> Option<Bytes> {
    values.into_iter().max().map(|(_, value)| value.clone())
}

async fn exists(shard: Rc<Shard>, key: Bytes) -> Result<bool, Reply> {
    Ok(read(shard, key).await?.newest.is_some())
}

/// An overwrite: the coordinating replica supersedes what it stores (no read first).
async fn set(shard: Rc<Shard>, (key, value): (Bytes, Bytes)) -> Result<(), Reply> {
    let request = Request::Put {
        consistency: Consistency::Default,
        quorum: QuorumMode::Sloppy,
        key,
        context: Bytes::from_static(&[CONTEXT_OVERWRITE]),
        value,
    };
    write(&shard, request).await
}

/// Deletes a key that has a value, with the context of the read that found it.
async fn delete(shard: Rc<Shard>, key: Bytes) -> Result<bool, Reply> {
    let read = read(shard.clone(), key.clone()).await?;
    if read.newest.is_none() {
        return Ok(false);
    }
    let request = Request::Delete {
        consistency: Consistency::Default,
        quorum: QuorumMode::Sloppy,
        key,
        context: read.context,
    };
    write(&shard, request).await.map(|()| true)
}

/// Checks a PUT or DELETE as a binary connection's decoder would, then runs it.
async fn write(shard: &Rc<Shard>, request: Request) -> Result<(), Reply> {
    check(shard, &request)?;
    match dispatch::write(shard, request).await {
        Written::Stored(_) => Ok(()),
        Written::Answer(response) => written(response),
    }
}

fn written(response: Response) -> Result<(), Reply> {
    match response.status {
        Status::Ok => Ok(()),
        status => Err(store_error(status, &response.message)),
    }
}

fn check(shard: &Shard, request: &Request) -> Result<(), Reply> {
    request
        .validate(&shard.limits)
        .map_err(|e| Reply::err(e.message))
}

/// Checks `request` as a binary connection's decoder would, then runs it.
async fn send(shard: &Rc<Shard>, request: Request) -> Result<Response, Reply> {
    check(shard, &request)?;
    Ok(dispatch::run(shard, request).await)
}

/// A store failure as a Redis error: its code says which, the message is the store's.
fn store_error(status: Status, message: &str) -> Reply {
    match status {
        Status::Unavailable => Reply::error("UNAVAILABLE", message),
        Status::Overloaded => Reply::error("OVERLOADED", message),
        Status::TooLarge => Reply::err(format!("too large: {message}")),
        Status::BadRequest => Reply::err(message),
        Status::Internal => Reply::err(format!("internal error: {message}")),
        Status::Ok | Status::NotFound => Reply::err(format!("unexpected {status:?}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::WireValue;

    fn value(timestamp_us: u64, value: &'static [u8]) -> WireValue {
        WireValue {
            timestamp_us,
            value: Bytes::from_static(value),
        }
    }

    /// `newest` of replicas' answers, as `read` takes them.
    fn newest_of(values: Vec<WireValue>) -> Option<Bytes> {
        newest(values.iter().map(|v| (v.timestamp_us, &v.value)))
    }

    #[test]
    fn a_redis_read_sees_the_newest_sibling() {
        assert_eq!(newest_of(vec![]), None);
        let siblings = vec![value(5, b"b"), value(9, b"a"), value(1, b"z")];
        assert_eq!(newest_of(siblings).as_deref(), Some(&b"a"[..]));
        // A tie goes to the larger value, whatever order the replicas answered in.
        assert_eq!(
            newest_of(vec![value(3, b"x"), value(3, b"y")]).as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(
            newest_of(vec![value(3, b"y"), value(3, b"x")]).as_deref(),
            Some(&b"y"[..])
        );
    }

    #[test]
    fn a_key_named_twice_is_written_once_with_its_last_value() {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let pairs = vec![(b("k"), b("1")), (b("j"), b("2")), (b("k"), b("3"))];
        assert_eq!(last_values(pairs), vec![(b("k"), b("3")), (b("j"), b("2"))]);
        assert_eq!(distinct(vec![b("k"), b("j"), b("k")]), vec![b("k"), b("j")]);
    }
}
