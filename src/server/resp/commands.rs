//! What each command is: checked arguments and either the reply at once or the store
//! operation to run. Decide only: nothing here awaits.
//!
//! Commands that need no store (PING, ECHO, HELLO, CLIENT, CONFIG GET, COMMAND, INFO,
//! SELECT, QUIT, RESET) are answered here from the connection's [`Session`] and the
//! shard's settings; GET, SET, DEL, EXISTS, MGET and MSET become a [`store::Op`].

use bytes::Bytes;

use crate::protocol::resp::{Reply, Version};

use super::store::Op;
use super::{Session, Shard};

/// What the reader does with a command.
pub enum Action {
    /// Answer with this.
    Reply(Reply),
    /// Answer with this, then close the connection (QUIT).
    Quit(Reply),
    /// Run this against the store; its reply comes later.
    Store(Op),
}

/// Every command ringkv answers (COMMAND COUNT).
const COMMANDS: [&str; 19] = [
    "GET", "SET", "DEL", "UNLINK", "EXISTS", "MGET", "MSET", "PING", "ECHO", "INFO", "DBSIZE",
    "COMMAND", "CLIENT", "CONFIG", "SELECT", "HELLO", "AUTH", "QUIT", "RESET",
];

/// SET options Redis has; each is refused by name (ringkv keeps no expiry and no
/// conditional writes), anything else is a syntax error, as in Redis.
const SET_OPTIONS: [&str; 8] = ["EX", "PX", "EXAT", "PXAT", "NX", "XX", "KEEPTTL", "GET"];

/// `CONFIG GET` answers: what redis-benchmark asks for. ringkv's commit log is
/// durable (fdatasync'd before acknowledging under `--sync batch`), no snapshots.
const CONFIG: [(&str, &str); 2] = [("save", ""), ("appendonly", "yes")];

pub fn decide(shard: &Shard, session: &mut Session, args: Vec<Bytes>) -> Action {
    let mut args = args.into_iter();
    let name = args.next().expect("the parser gives at least one argument");
    let args: Vec<Bytes> = args.collect();
    let upper = name.to_ascii_uppercase();
    let reply = match &upper[..] {
        b"GET" => return store(exactly(&name, &args, 1).map(|()| Op::Get(args[0].clone()))),
        b"SET" => return store(set(&name, args)),
        b"DEL" | b"UNLINK" => return store(at_least(&name, &args, 1).map(|()| Op::Del(args))),
        b"EXISTS" => return store(at_least(&name, &args, 1).map(|()| Op::Exists(args))),
        b"MGET" => return store(at_least(&name, &args, 1).map(|()| Op::MGet(args))),
        b"MSET" => return store(mset(&name, args)),
        b"QUIT" => return Action::Quit(Reply::OK),
        b"PING" => ping(&name, args),
        b"ECHO" => exactly(&name, &args, 1).map(|()| Reply::Bulk(args[0].clone())),
        b"INFO" => Ok(info(shard, &args)),
        b"DBSIZE" => Err(Reply::err(
            "ringkv does not support DBSIZE: counting keys would read every shard of every node",
        )),
        b"COMMAND" => command(&args),
        b"CLIENT" => client(session, &args),
        b"CONFIG" => config(&args),
        b"SELECT" => select(&name, &args),
        b"HELLO" => hello(shard, session, &args),
        b"AUTH" => Err(Reply::err(
            "ringkv has no users or passwords: AUTH is not supported",
        )),
        b"RESET" => {
            session.version = Version::Resp2;
            session.name = None;
            Ok(Reply::Simple("RESET".into()))
        }
        _ => Err(unknown_command(&name, &args)),
    };
    Action::Reply(reply.unwrap_or_else(|error| error))
}

fn store(op: Result<Op, Reply>) -> Action {
    match op {
        Ok(op) => Action::Store(op),
        Err(reply) => Action::Reply(reply),
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn arity_error(name: &[u8]) -> Reply {
    Reply::err(format!(
        "wrong number of arguments for '{}' command",
        lossy(&name.to_ascii_lowercase())
    ))
}

fn exactly(name: &[u8], args: &[Bytes], count: usize) -> Result<(), Reply> {
    if args.len() == count {
        Ok(())
    } else {
        Err(arity_error(name))
    }
}

fn at_least(name: &[u8], args: &[Bytes], count: usize) -> Result<(), Reply> {
    if args.len() >= count {
        Ok(())
    } else {
        Err(arity_error(name))
    }
}

/// Redis's wording, so that clients that match on it understand.
fn unknown_command(name: &[u8], args: &[Bytes]) -> Reply {
    let name: String = lossy(name).chars().take(128).collect();
    let beginning: String = args
        .iter()
        .take(16)
        .map(|arg| format!("'{}' ", lossy(arg).chars().take(128).collect::<String>()))
        .collect();
    Reply::err(format!(
        "unknown command '{name}', with args beginning with: {beginning}"
    ))
}

fn subcommand_error(command: &str, sub: &[u8]) -> Reply {
    Reply::err(format!(
        "unknown subcommand '{}'. Try {command} HELP.",
        lossy(sub)
    ))
}

/// `SET key value`, and nothing more: options are refused by name, never ignored.
fn set(name: &[u8], args: Vec<Bytes>) -> Result<Op, Reply> {
    at_least(name, &args, 2)?;
    if let Some(option) = args.get(2) {
        let option = lossy(&option.to_ascii_uppercase());
        if SET_OPTIONS.contains(&option.as_str()) {
            return Err(Reply::err(format!(
                "ringkv does not support SET option {option}"
            )));
        }
        return Err(Reply::err("syntax error"));
    }
    let mut args = args.into_iter();
    let (key, value) = (args.next().unwrap(), args.next().unwrap());
    Ok(Op::Set(key, value))
}

fn mset(name: &[u8], args: Vec<Bytes>) -> Result<Op, Reply> {
    if args.is_empty() || args.len() % 2 != 0 {
        return Err(arity_error(name));
    }
    let mut args = args.into_iter();
    let mut pairs = Vec::new();
    while let (Some(key), Some(value)) = (args.next(), args.next()) {
        pairs.push((key, value));
    }
    Ok(Op::MSet(pairs))
}

fn ping(name: &[u8], args: Vec<Bytes>) -> Result<Reply, Reply> {
    match args.len() {
        0 => Ok(Reply::Simple("PONG".into())),
        1 => Ok(Reply::Bulk(args[0].clone())),
        _ => Err(arity_error(name)),
    }
}

fn parse_int(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

fn select(name: &[u8], args: &[Bytes]) -> Result<Reply, Reply> {
    exactly(name, args, 1)?;
    match parse_int(&args[0]) {
        Some(0) => Ok(Reply::OK),
        Some(_) => Err(Reply::err(
            "DB index is out of range (ringkv has database 0 only)",
        )),
        None => Err(Reply::err("value is not an integer or out of range")),
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`: switches the protocol and
/// answers with the server's description.
fn hello(shard: &Shard, session: &mut Session, args: &[Bytes]) -> Result<Reply, Reply> {
    let mut args = args.iter();
    let mut version = session.version;
    if let Some(protover) = args.next() {
        version = match parse_int(protover) {
            Some(2) => Version::Resp2,
            Some(3) => Version::Resp3,
            Some(_) => return Err(Reply::error("NOPROTO", "unsupported protocol version")),
            None => {
                return Err(Reply::err(
                    "Protocol version is not an integer or out of range",
                ))
            }
        };
    }
    let mut name = None;
    while let Some(option) = args.next() {
        match &option.to_ascii_uppercase()[..] {
            b"AUTH" => {
                return Err(Reply::err(
                    "ringkv has no users or passwords: HELLO AUTH is not supported",
                ))
            }
            b"SETNAME" => match args.next() {
                Some(value) => name = Some(value.clone()),
                None => return Err(Reply::err("syntax error in HELLO SETNAME")),
            },
            _ => {
                return Err(Reply::err(format!(
                    "syntax error in HELLO option '{}'",
                    lossy(option)
                )))
            }
        }
    }
    session.version = version;
    if name.is_some() {
        session.name = name;
    }
    let text = |s: &str| Reply::text(s.to_string());
    Ok(Reply::Map(vec![
        (text("server"), text("ringkv")),
        (text("version"), text(REDIS_VERSION)),
        (text("ringkv_version"), text(env!("CARGO_PKG_VERSION"))),
        (text("proto"), Reply::Integer(version.number())),
        (text("id"), Reply::Integer(session.id as i64)),
        (text("mode"), text("standalone")),
        (text("role"), text("master")),
        (text("modules"), Reply::Array(Vec::new())),
        (text("shard"), Reply::Integer(shard.id as i64)),
    ]))
}

/// The Redis version ringkv answers as: the command set and replies of Redis 7.0,
/// for clients that check.
const REDIS_VERSION: &str = "7.0.0";

fn client(session: &mut Session, args: &[Bytes]) -> Result<Reply, Reply> {
    let Some(sub) = args.first() else {
        return Err(arity_error(b"client"));
    };
    match &sub.to_ascii_uppercase()[..] {
        // LIB-NAME and LIB-VER, sent by redis-py and others on connect: noted, unused.
        b"SETINFO" if args.len() == 3 => Ok(Reply::OK),
        b"SETNAME" if args.len() == 2 => {
            session.name = (!args[1].is_empty()).then(|| args[1].clone());
            Ok(Reply::OK)
        }
        b"GETNAME" => Ok(session.name.clone().map_or(Reply::Null, Reply::Bulk)),
        b"ID" => Ok(Reply::Integer(session.id as i64)),
        b"INFO" => Ok(Reply::text(format!(
            "id={} name={} resp={}\n",
            session.id,
            lossy(session.name.as_deref().unwrap_or_default()),
            session.version.number()
        ))),
        b"SETINFO" | b"SETNAME" => Err(arity_error(b"client")),
        _ => Err(subcommand_error("CLIENT", sub)),
    }
}

fn command(args: &[Bytes]) -> Result<Reply, Reply> {
    let Some(sub) = args.first() else {
        // No command table: clients then assume nothing about commands.
        return Ok(Reply::Array(Vec::new()));
    };
    match &sub.to_ascii_uppercase()[..] {
        b"COUNT" => Ok(Reply::Integer(COMMANDS.len() as i64)),
        b"DOCS" => Ok(Reply::Map(Vec::new())),
        b"INFO" => Ok(Reply::Array(vec![Reply::Null; args.len() - 1])),
        b"LIST" => Ok(Reply::Array(
            COMMANDS
                .iter()
                .map(|c| Reply::text(c.to_ascii_lowercase()))
                .collect(),
        )),
        _ => Err(subcommand_error("COMMAND", sub)),
    }
}

fn config(args: &[Bytes]) -> Result<Reply, Reply> {
    let Some(sub) = args.first() else {
        return Err(arity_error(b"config"));
    };
    match &sub.to_ascii_uppercase()[..] {
        b"GET" if args.len() >= 2 => {
            let patterns = &args[1..];
            let pairs = CONFIG
                .iter()
                .filter(|(name, _)| patterns.iter().any(|p| glob_match(p, name.as_bytes())))
                .map(|(name, value)| (Reply::text(*name), Reply::text(*value)))
                .collect();
            Ok(Reply::Map(pairs))
        }
        b"GET" => Err(arity_error(b"config|get")),
        b"SET" | b"RESETSTAT" | b"REWRITE" => Err(Reply::err(format!(
            "ringkv does not support CONFIG {}: its settings are `ringkv server` flags",
            lossy(&sub.to_ascii_uppercase())
        ))),
        _ => Err(subcommand_error("CONFIG", sub)),
    }
}

/// Redis-style glob (`*`, `?`), ASCII case-insensitive: what CONFIG GET matches with.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.split_first(), text.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            glob_match(rest, text) || (!text.is_empty() && glob_match(pattern, &text[1..]))
        }
        (Some((b'?', rest)), Some((_, text_rest))) => glob_match(rest, text_rest),
        (Some((p, rest)), Some((t, text_rest))) if p.eq_ignore_ascii_case(t) => {
            glob_match(rest, text_rest)
        }
        _ => false,
    }
}

/// INFO [section ...]: `# Server`, `# Clients` and `# Replication`, with the fields
/// clients parse (`redis_version`, `role`).
fn info(shard: &Shard, args: &[Bytes]) -> Reply {
    let wanted = |section: &str| {
        args.is_empty()
            || args.iter().any(|arg| {
                let arg = arg.to_ascii_lowercase();
                arg == section.as_bytes() || matches!(&arg[..], b"all" | b"everything" | b"default")
            })
    };
    let mut text = String::new();
    if wanted("server") {
        text.push_str(&format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nringkv_version:{}\r\n\
             redis_mode:standalone\r\nos:{}\r\narch_bits:{}\r\nprocess_id:{}\r\n\
             tcp_port:{}\r\nnode_id:{:016x}\r\nshard:{}\r\nshards:{}\r\nconflicts:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            usize::BITS,
            std::process::id(),
            shard.resp.port.unwrap_or_default(),
            shard.node_id,
            shard.id,
            shard.shard_ports.len(),
            shard.engine.conflicts().name(),
        ));
    }
    if wanted("clients") {
        text.push_str(&format!(
            "# Clients\r\nshard_connected_clients:{}\r\n\r\n",
            shard.resp.connections.get()
        ));
    }
    if wanted("replication") {
        text.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n");
    }
    // Sections end with an empty line, the last one without (as in Redis); an unknown
    // section is an empty reply.
    if text.is_empty() {
        return Reply::text(text);
    }
    Reply::text(text.trim_end().to_string() + "\r\n")
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn config_patterns_match_like_redis() {
        assert!(glob_match(b"save", b"save"));
        assert!(glob_match(b"SAVE", b"save"));
        assert!(glob_match(b"*", b"appendonly"));
        assert!(glob_match(b"append*", b"appendonly"));
        assert!(glob_match(b"s?ve", b"save"));
        assert!(!glob_match(b"sav", b"save"));
        assert!(!glob_match(b"maxmemory", b"save"));
    }
}
