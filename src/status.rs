//! `ringkv status`: a nodetool-style table of the cluster as one node knows it: node
//! id, address, DC and rack, whether the node answers, how much data it stores, its
//! tokens, and its effective ownership (the share of keys it holds a replica of).

use std::fmt::Write as _;
use std::time::Duration;

use crate::client::blocking::BlockingClient;
use crate::protocol::{Request, ResponseBody, Status};
use crate::runtime::join::fetch_table;

/// The status table of the cluster node `host:port` knows, at replication factor
/// `replication_factor` (the ownership column depends on it).
pub fn status(
    host: &str,
    port: u16,
    replication_factor: usize,
    timeout: Duration,
) -> Result<String, String> {
    let table = fetch_table(host, port, timeout).map_err(|e| format!("{host}:{port}: {e}"))?;
    let ring = table.ring(replication_factor)?;
    let ownership = ring.effective_ownership();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} nodes, replication factor {}, as {host}:{port} knows them",
        table.len(),
        replication_factor
    );
    let _ = writeln!(
        out,
        "{:<18} {:<21} {:<14} {:<6} {:>10} {:>6} {:>10}",
        "node", "address", "dc/rack", "state", "load", "tokens", "owns"
    );
    for member in table.members() {
        let address = format!("{}:{}", member.host, member.port);
        let (state, load) = match node_load(&member.host, member.port, timeout) {
            Ok(bytes) => ("Up", human_bytes(bytes)),
            Err(_) => ("Down?", "?".to_string()),
        };
        let owns = ownership
            .iter()
            .find(|(id, _)| *id == member.node_id)
            .map_or(0.0, |(_, share)| *share);
        let _ = writeln!(
            out,
            "{:<18} {:<21} {:<14} {:<6} {:>10} {:>6} {:>9.1}%",
            format!("{:016x}", member.node_id),
            address,
            format!("{}/{}", member.dc, member.rack),
            state,
            load,
            member.tokens.len(),
            owns * 100.0
        );
    }
    Ok(out)
}

/// Bytes the node stores, if it answers.
fn node_load(host: &str, port: u16, timeout: Duration) -> Result<u64, String> {
    let mut client = BlockingClient::connect(host, port, timeout).map_err(|e| e.to_string())?;
    let response = client
        .request(&Request::NodeStatus)
        .map_err(|e| e.to_string())?;
    match (response.status, response.body) {
        (Status::Ok, ResponseBody::NodeStatus { data_bytes }) => Ok(data_bytes),
        (status, _) => Err(format!("{status:?}: {}", response.message)),
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
