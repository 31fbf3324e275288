//! The control plane, on shard 0: the member table, its exchange with the seeds and
//! the known members every `--membership-interval-ms` (push-pull: each MEMBERS request
//! carries this node's table and its answer the peer's), and publishing a new ring
//! snapshot to every shard when the table changes. Static membership: nobody is ever
//! removed; gossip and failure detection come later.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::membership::{MemberInfo, MemberTable, Snapshot};
use crate::protocol::{Request, ResponseBody, Status};
use crate::runtime::join::{parse_addr, Joined};
use crate::runtime::ShardMsg;

use super::Shard;

pub struct Control {
    me: MemberInfo,
    table: RefCell<MemberTable>,
    seeds: Vec<(String, u16)>,
    interval: Duration,
    replication_factor: usize,
    /// Where the table is kept across restarts (`DATA/members`).
    data_dir: std::path::PathBuf,
}

impl Control {
    pub fn new(
        joined: Joined,
        seeds: &[String],
        interval: Duration,
        replication_factor: usize,
        data_dir: std::path::PathBuf,
    ) -> Control {
        Control {
            me: joined.me,
            table: RefCell::new(joined.table),
            seeds: seeds.iter().filter_map(|s| parse_addr(s).ok()).collect(),
            interval,
            replication_factor,
            data_dir,
        }
    }

    /// Takes in a peer's encoded table (empty: a client asking) and returns this node's
    /// table, encoded, to answer with. Publishes a new snapshot if the table grew.
    pub fn exchange(&self, shard: &Shard, incoming: &[u8]) -> Result<Vec<u8>, String> {
        if !incoming.is_empty() {
            let theirs = MemberTable::decode(incoming)?;
            self.take_in(shard, &theirs);
        }
        Ok(self.table.borrow().encode())
    }

    fn take_in(&self, shard: &Shard, theirs: &MemberTable) {
        let changed = self.table.borrow_mut().merge(theirs);
        if changed {
            self.publish(shard);
        }
    }

    /// Sends every shard (this one too) a snapshot of the current table.
    fn publish(&self, shard: &Shard) {
        let table = self.table.borrow().clone();
        let snapshot = match Snapshot::new(table, self.replication_factor) {
            Ok(snapshot) => Arc::new(snapshot),
            Err(e) => {
                eprintln!("ringkv: member table refused, keeping the old ring: {e}");
                return;
            }
        };
        eprintln!(
            "ringkv: node {:016x} now knows {} members",
            self.me.node_id,
            snapshot.members.len()
        );
        // Keep it for the next start (a blocking write: off the executor thread).
        let (dir, table) = (self.data_dir.clone(), snapshot.members.clone());
        glommio::spawn_local(async move {
            let stored = glommio::executor()
                .spawn_blocking(move || crate::storage::node_members::store(&dir, &table))
                .await;
            if let Err(e) = stored {
                eprintln!("ringkv: keeping the member table: {e}");
            }
        })
        .detach();
        for inbox in &shard.peers {
            let (inbox, snapshot) = (inbox.clone(), snapshot.clone());
            glommio::spawn_local(async move {
                let _ = inbox.send_async(ShardMsg::Snapshot(snapshot)).await;
            })
            .detach();
        }
    }

    /// Where to exchange tables: the seeds and every known member but this node.
    fn targets(&self) -> Vec<(String, u16)> {
        let mut targets: Vec<(String, u16)> = self.seeds.clone();
        for member in self.table.borrow().members() {
            if member.node_id != self.me.node_id {
                targets.push((member.host.clone(), member.port));
            }
        }
        targets.retain(|(host, port)| !(*host == self.me.host && *port == self.me.port));
        targets.sort();
        targets.dedup();
        targets
    }
}

/// Exchanges tables with every target once per interval, for as long as the shard runs.
pub async fn run(shard: Rc<Shard>) {
    let control = shard
        .control
        .as_ref()
        .expect("shard 0 runs the control plane");
    let timeout = shard.replica_timeout;
    loop {
        for (host, port) in control.targets() {
            let request = Request::Members {
                table: control.table.borrow().encode().into(),
            };
            // A node that is down has nothing to tell this round.
            let Ok(response) = shard.net.request(&host, port, &request, timeout).await else {
                continue;
            };
            match (response.status, response.body) {
                (Status::Ok, ResponseBody::Members { table }) => {
                    match MemberTable::decode(&table) {
                        Ok(theirs) => control.take_in(&shard, &theirs),
                        Err(e) => eprintln!("ringkv: member table from {host}:{port}: {e}"),
                    }
                }
                (status, _) => eprintln!(
                    "ringkv: {host}:{port} answered MEMBERS with {status:?}: {}",
                    response.message
                ),
            }
        }
        glommio::timer::sleep(control.interval).await;
    }
}
