//! `ringkv status`: a nodetool-style table of the cluster as one node sees it: node
//! id, address, DC and rack, the node's failure-detector verdict on it (Up, Suspect,
//! Down) and phi, how much data it stores (as gossip last carried it), its tokens, its
//! effective ownership (the share of keys it holds a replica of), and the hints the
//! node holds for it, when it last completed an anti-entropy sync with it and how
//! many keys its syncs with it repaired.

use std::fmt::Write as _;
use std::time::Duration;

use crate::client::blocking::BlockingClient;
use crate::membership::ClusterView;
use crate::protocol::{Request, ResponseBody, Status};
use crate::runtime::join::fetch_table;

/// The status table of the cluster node `host:port` knows; ownership at
/// `replication_factor` (default: the node's).
pub fn status(
    host: &str,
    port: u16,
    replication_factor: Option<usize>,
    timeout: Duration,
) -> Result<String, String> {
    let view = cluster_view(host, port, timeout).map_err(|e| format!("{host}:{port}: {e}"))?;
    let rf = replication_factor.unwrap_or(usize::from(view.replication_factor));
    let table = fetch_table(host, port, timeout).map_err(|e| format!("{host}:{port}: {e}"))?;
    let ownership = table.ring(rf)?.effective_ownership();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} nodes, replication factor {rf}, as node {:016x} ({host}:{port}) sees them",
        view.members.len(),
        view.observer,
    );
    let _ = writeln!(
        out,
        "{:<18} {:<21} {:<14} {:<8} {:>6} {:>10} {:>6} {:>7} {:>8} {:>10} {:>10} {:>9}",
        "node",
        "address",
        "dc/rack",
        "state",
        "phi",
        "load",
        "tokens",
        "owns",
        "hints",
        "hint data",
        "last sync",
        "repaired"
    );
    let now_us = crate::version::now_us();
    for member in &view.members {
        let owns = ownership
            .iter()
            .find(|(id, _)| *id == member.node_id)
            .map_or(0.0, |(_, share)| *share);
        let phi = if member.node_id == view.observer {
            "-".to_string()
        } else {
            format!("{:.1}", member.phi.min(999.9))
        };
        let _ = writeln!(
            out,
            "{:<18} {:<21} {:<14} {:<8} {:>6} {:>10} {:>6} {:>6.1}% {:>8} {:>10} {:>10} {:>9}",
            format!("{:016x}", member.node_id),
            format!("{}:{}", member.host, member.port),
            format!("{}/{}", member.dc, member.rack),
            format!("{:?}", member.status),
            phi,
            member.load_bytes.map_or("?".to_string(), human_bytes),
            member.tokens,
            owns * 100.0,
            member.hints,
            human_bytes(member.hint_bytes),
            sync_age(member.node_id == view.observer, member.last_sync_us, now_us),
            member.keys_repaired,
        );
    }
    if view.hints_dropped > 0 || view.hints_refused > 0 {
        let _ = writeln!(
            out,
            "hints dropped past the window: {}, refused for room: {} (anti-entropy repairs them)",
            view.hints_dropped, view.hints_refused
        );
    }
    Ok(out)
}

/// The node's view of the cluster (CLUSTER_STATUS).
pub fn cluster_view(host: &str, port: u16, timeout: Duration) -> Result<ClusterView, String> {
    let mut client = BlockingClient::connect(host, port, timeout).map_err(|e| e.to_string())?;
    let response = client
        .request(&Request::ClusterStatus)
        .map_err(|e| e.to_string())?;
    match (response.status, response.body) {
        (Status::Ok, ResponseBody::ClusterStatus { view }) => ClusterView::decode(&view),
        (status, _) => Err(format!("{status:?}: {}", response.message)),
    }
}

/// How long ago a sync completed: `-` for the observer itself, `never`, or `12s ago`.
fn sync_age(observer: bool, last_sync_us: u64, now_us: u64) -> String {
    if observer {
        return "-".into();
    }
    if last_sync_us == 0 {
        return "never".into();
    }
    let secs = now_us.saturating_sub(last_sync_us) / 1_000_000;
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(super::human_bytes(512), "512 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(3 << 30), "3.0 GiB");
    }
}
