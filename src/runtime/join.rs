//! Joining a cluster at start-up, before any shard runs (blocking is fine here).
//!
//! A node's tokens are fixed the first time it starts: alone (no `--seeds`), the even
//! tokens of its `node.meta`; through seeds, tokens from the balanced allocator against
//! the ring the first answering seed knows, stored in `DATA/tokens` before the node
//! serves. On every start with seeds it also fetches their member table, so that it
//! routes with the whole ring from its first request; the control plane's exchanges
//! (`crate::server::control`) keep it current afterwards.

use std::time::Duration;

use crate::client::blocking::BlockingClient;
use crate::config::ServerConfig;
use crate::error::StartupError;
use crate::membership::{MemberInfo, MemberTable};
use crate::protocol::{Request, ResponseBody, Status};
use crate::ring::allocate::{balanced_tokens, deal_to_shards};
use crate::ring::{even_shard_tokens, Token};
use crate::storage::node_meta::NodeMeta;
use crate::storage::node_tokens;

/// What a starting node knows of the cluster.
pub struct Joined {
    /// This node as it announces itself.
    pub me: MemberInfo,
    /// Every member known at start, this node included.
    pub table: MemberTable,
}

/// Splits `host:port`.
pub fn parse_addr(addr: &str) -> Result<(String, u16), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("seed {addr:?} is not host:port"))?;
    let port = port
        .parse()
        .map_err(|_| format!("seed {addr:?}: {port:?} is not a port"))?;
    Ok((host.to_string(), port))
}

/// Asks one node for its member table.
pub fn fetch_table(host: &str, port: u16, timeout: Duration) -> Result<MemberTable, String> {
    let mut client = BlockingClient::connect(host, port, timeout).map_err(|e| e.to_string())?;
    let response = client
        .request(&Request::Members {
            table: Default::default(),
        })
        .map_err(|e| e.to_string())?;
    match (response.status, response.body) {
        (Status::Ok, ResponseBody::Members { table }) => {
            crate::membership::Exchange::decode(&table).map(|exchange| exchange.table)
        }
        (status, _) => Err(format!("answered {status:?}: {}", response.message)),
    }
}

/// Fixes this node's tokens (joining through the seeds the first time) and gathers the
/// member table it starts with.
pub fn join(config: &ServerConfig, meta: &NodeMeta) -> Result<Joined, StartupError> {
    let timeout = Duration::from_millis(config.replica_timeout_ms.max(1000));
    // What this node knew when it last ran, then what the seeds know now.
    let mut seen = crate::storage::node_members::load(&config.data_dir);
    let mut failures = Vec::new();
    for seed in &config.seeds {
        let (host, port) = parse_addr(seed).map_err(StartupError::Environment)?;
        if host == config.host && port == config.port {
            continue; // a node listed among its own seeds
        }
        match fetch_table(&host, port, timeout) {
            Ok(table) => {
                seen.merge(&table);
            }
            Err(e) => failures.push(format!("{seed}: {e}")),
        }
    }
    if let Some(other) = seen.members().find(|m| {
        m.node_id != meta.node_id && usize::from(m.replication_factor) != config.replication_factor
    }) {
        return Err(StartupError::Environment(format!(
            "node {:016x} at {}:{} runs with --replication-factor {}, this node with {}: every \
             node of a cluster must use the same, or they disagree on where keys live",
            other.node_id,
            other.host,
            other.port,
            other.replication_factor,
            config.replication_factor
        )));
    }
    if let Some(other) = seen
        .members()
        .find(|m| m.node_id != meta.node_id && m.conflicts != config.conflicts.name())
    {
        return Err(StartupError::Environment(format!(
            "node {:016x} at {}:{} runs with --conflicts {}, this node with {}: one \
             cluster keeps one kind of version",
            other.node_id,
            other.host,
            other.port,
            other.conflicts,
            config.conflicts.name()
        )));
    }
    let stored = node_tokens::load(&config.data_dir, meta.shards)?;
    let replacing = match (config.replace, &stored) {
        (Some(old), None) => Some(replaced_member(config, meta, &seen, old)?),
        _ => None,
    };
    let tokens = match stored {
        Some(tokens) => tokens,
        None if replacing.is_some() => {
            let old = replacing.as_ref().expect("checked");
            // The dead node's tokens, dealt to this node's shards.
            let tokens: Vec<(Token, u16)> = old
                .tokens
                .iter()
                .map(|&(token, shard)| (token, shard % meta.shards))
                .collect();
            std::fs::write(
                config.data_dir.join(REPLACING_FILE),
                format!("{:016x}\n", old.node_id),
            )
            .map_err(|e| {
                StartupError::Environment(format!(
                    "{}: {e}",
                    config.data_dir.join(REPLACING_FILE).display()
                ))
            })?;
            node_tokens::store(&config.data_dir, &tokens)?;
            tokens
        }
        None if config.seeds.is_empty() => {
            even_shard_tokens(meta.shards, meta.vnodes_per_shard, meta.token_offset)
        }
        None => {
            let others: Vec<(Token, u64)> = seen
                .vnodes()
                .into_iter()
                .filter(|&(_, node)| node != meta.node_id)
                .collect();
            if others.is_empty() {
                return Err(StartupError::Environment(format!(
                    "no seed answered, so this node cannot pick its tokens (it joins the \
                     ring the seeds know): {}",
                    failures.join("; ")
                )));
            }
            let count = usize::from(meta.shards) * usize::from(meta.vnodes_per_shard);
            let chosen = balanced_tokens(&others, meta.node_id, count, config.replication_factor);
            let tokens = deal_to_shards(&chosen, meta.shards);
            node_tokens::store(&config.data_dir, &tokens)?;
            let mut sorted = tokens;
            sorted.sort_unstable_by_key(|&(t, _)| t);
            sorted
        }
    };
    let mut tokens = tokens;
    tokens.sort_unstable_by_key(|&(t, _)| t);
    for failure in &failures {
        eprintln!("ringkv: seed {failure} (the node learns the cluster from the others)");
    }
    let me = MemberInfo {
        node_id: meta.node_id,
        generation: crate::version::now_us(),
        host: config.host.clone(),
        port: config.port,
        shards: meta.shards,
        dc: config.dc.clone(),
        rack: config.rack.clone(),
        replication_factor: config.replication_factor as u8,
        conflicts: config.conflicts.name().to_string(),
        tokens,
    };
    let mut table = seen;
    match &replacing {
        Some(old) => table.replace(old.node_id, me.clone()),
        None => {
            // A node restarted while it still fills keeps telling the cluster whom it
            // replaced (the seeds may not have heard yet).
            if let Some(old) = replaced_by_file(&config.data_dir) {
                table.replace(old, me.clone());
            } else {
                table.insert(me.clone());
            }
        }
    }
    Ok(Joined { me, table })
}

/// `DATA/replacing`: written when a node takes over another's tokens
/// (`--replace`), naming the node it replaced. Its shards fill from the other
/// replicas before they serve reads (`server::antientropy`).
pub const REPLACING_FILE: &str = "replacing";

fn replaced_by_file(data_dir: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(data_dir.join(REPLACING_FILE)).ok()?;
    u64::from_str_radix(text.trim(), 16).ok()
}

/// The member `--replace NODE_ID` names, checked: known to the seeds, not this node.
fn replaced_member(
    config: &ServerConfig,
    meta: &NodeMeta,
    seen: &MemberTable,
    old: u64,
) -> Result<MemberInfo, StartupError> {
    let fail = |why: String| {
        Err(StartupError::Environment(format!(
            "--replace {old:016x}: {why}"
        )))
    };
    if config.seeds.is_empty() {
        return fail("needs --seeds, to learn the node's tokens from the cluster".into());
    }
    if old == meta.node_id {
        return fail("that is this node".into());
    }
    match seen.get(old) {
        Some(member) => Ok(member.clone()),
        None => fail(format!(
            "no seed knows that node (known: {})",
            seen.members()
                .map(|m| format!("{:016x}", m.node_id))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}
