//! A Redis Cluster of three primaries with one replica each, on loopback
//! ports of 16500-16699, for failover and resharding under load.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::sentinel::{Node, range_port};
use super::{cli, create_cluster, scratch_dir, wait_until};

/// Cluster nodes: `nodes[0..3]` start as primaries, `nodes[3 + i]`
/// replicates `nodes[i]`, and `nodes[6..]` are more replicas of `nodes[0]`.
pub struct ReplicatedCluster {
    pub nodes: Vec<Node>,
    /// The first node's cluster bus port, for new nodes to meet it.
    first_bus: u16,
    dir: PathBuf,
}

impl ReplicatedCluster {
    /// Starts three primaries with a replica each, and `spares` more
    /// replicas of the first primary; joins them, and waits until every
    /// replica is in sync with its primary.
    pub fn start(spares: usize) -> Self {
        let dir = scratch_dir("replicated-cluster");
        let mut buses = Vec::new();
        let nodes: Vec<Node> = (0..6 + spares)
            .map(|i| {
                let port = range_port();
                let bus = range_port();
                buses.push(bus);
                let node_dir = dir.join(i.to_string());
                std::fs::create_dir_all(&node_dir).expect("node folder");
                let args: Vec<String> = [
                    "--port",
                    &port.to_string(),
                    "--cluster-port",
                    &bus.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "1000",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    &node_dir.display().to_string(),
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
                Node::spawn("redis-server", port, &dir, &args)
            })
            .collect();
        let cluster = Self {
            nodes,
            first_bus: buses[0],
            dir,
        };
        let primaries: Vec<u16> = cluster.nodes[..3].iter().map(|n| n.port).collect();
        create_cluster(&primaries);
        cluster.wait_until_ok(&cluster.nodes[..3]);
        for i in 3..cluster.nodes.len() {
            let primary = cluster.id(if i < 6 { i - 3 } else { 0 });
            let replica = cluster.nodes[i].port;
            let first = cluster.nodes[0].port.to_string();
            let bus = cluster.first_bus.to_string();
            wait_until("replica joins", Duration::from_secs(20), || {
                cli(replica, &["cluster", "meet", "127.0.0.1", &first, &bus]).is_some()
                    && cli(replica, &["cluster", "replicate", &primary])
                        .is_some_and(|out| out.trim() == "OK")
            });
        }
        for node in &cluster.nodes[3..] {
            let replica = node.port;
            wait_until("replica in sync", Duration::from_secs(30), || {
                cli(replica, &["info", "replication"])
                    .is_some_and(|out| out.contains("master_link_status:up"))
            });
        }
        cluster.wait_until_ok(&cluster.nodes);
        cluster
    }

    fn wait_until_ok(&self, nodes: &[Node]) {
        for node in nodes {
            wait_until("cluster_state:ok", Duration::from_secs(30), || {
                cli(node.port, &["cluster", "info"])
                    .is_some_and(|out| out.contains("cluster_state:ok"))
            });
        }
    }

    /// Node `index`'s cluster id.
    pub fn id(&self, index: usize) -> String {
        cli(self.nodes[index].port, &["cluster", "myid"])
            .expect("cluster myid")
            .trim()
            .to_owned()
    }

    /// The primaries' URLs, for the store to discover the cluster from.
    pub fn urls(&self) -> Vec<String> {
        self.nodes[..3]
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// Kills the first primary with SIGKILL and waits (up to 30 s) until
    /// one of its replicas calls itself primary; says when that was first
    /// seen (polled every 20 ms).
    pub async fn fail_over(mut self) -> (Self, Instant) {
        self.nodes[0].kill();
        tokio::task::spawn_blocking(move || {
            let promoted = self.wait_for_promotion(Duration::from_secs(30));
            (self, promoted)
        })
        .await
        .expect("wait for the promotion")
    }

    fn wait_for_promotion(&self, limit: Duration) -> Instant {
        let started = Instant::now();
        let replicas: Vec<&Node> = std::iter::once(&self.nodes[3])
            .chain(&self.nodes[6..])
            .collect();
        loop {
            if replicas
                .iter()
                .any(|r| r.role().as_deref() == Some("master"))
            {
                return Instant::now();
            }
            assert!(
                started.elapsed() < limit,
                "no replica was promoted within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Moves `slots` slots from primary `from` to primary `to` with
    /// `redis-cli --cluster reshard`, key by key (MIGRATING, IMPORTING,
    /// MIGRATE), and says whether it succeeded.
    pub fn reshard(&self, from: usize, to: usize, slots: u32) -> bool {
        let entry = format!("127.0.0.1:{}", self.nodes[0].port);
        Command::new("redis-cli")
            .args(["--cluster", "reshard", &entry])
            .args(["--cluster-from", &self.id(from)])
            .args(["--cluster-to", &self.id(to)])
            .args(["--cluster-slots", &slots.to_string()])
            .args(["--cluster-pipeline", "10"])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl ReplicatedCluster {
    /// Moves every slot of primary `from` that holds a key to primary `to`,
    /// step by step as `redis-cli --cluster reshard` does, pausing `pause`
    /// after marking each slot and after moving its keys, so that requests
    /// meet the slot half moved (ASK) and moved (MOVED). Returns how many
    /// keys moved.
    pub fn move_keyed_slots(&self, from: usize, to: usize, pause: Duration) -> usize {
        let source = self.nodes[from].port;
        let keys = cli(source, &["--scan"]).expect("scan");
        let mut slots: Vec<u16> = keys
            .lines()
            .filter(|k| !k.is_empty())
            .filter_map(|k| cli(source, &["cluster", "keyslot", k]))
            .filter_map(|slot| slot.trim().parse().ok())
            .collect();
        slots.sort_unstable();
        slots.dedup();
        let mut moved = 0;
        for slot in slots {
            self.mark_moving(slot, from, to);
            std::thread::sleep(pause);
            moved += self.migrate_keys(slot, from, to);
            std::thread::sleep(pause);
            self.assign(slot, to);
        }
        moved
    }

    /// Marks `slot` as IMPORTING on primary `to` and MIGRATING on `from`.
    pub fn mark_moving(&self, slot: u16, from: usize, to: usize) {
        let slot = slot.to_string();
        let (from_id, to_id) = (self.id(from), self.id(to));
        let importing = cli(
            self.nodes[to].port,
            &["cluster", "setslot", &slot, "importing", &from_id],
        );
        assert!(ok(importing), "IMPORTING failed");
        let migrating = cli(
            self.nodes[from].port,
            &["cluster", "setslot", &slot, "migrating", &to_id],
        );
        assert!(ok(migrating), "MIGRATING failed");
    }

    /// MIGRATEs the keys of `slot` from primary `from` to `to`; returns
    /// how many.
    pub fn migrate_keys(&self, slot: u16, from: usize, to: usize) -> usize {
        let (source, target) = (self.nodes[from].port, self.nodes[to].port.to_string());
        let slot = slot.to_string();
        let keys = cli(source, &["cluster", "getkeysinslot", &slot, "1000"]).expect("keys");
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        for key in &keys {
            let out = cli(source, &["migrate", "127.0.0.1", &target, key, "0", "5000"]);
            assert!(ok(out), "MIGRATE failed");
        }
        keys.len()
    }

    /// Gives `slot` to primary `to`, on every primary: `to` first, as the
    /// cluster specification asks, so that no node sends a client to a
    /// target that does not own the slot yet.
    pub fn assign(&self, slot: u16, to: usize) {
        let (slot, to_id) = (slot.to_string(), self.id(to));
        let others = (0..3).filter(|&i| i != to);
        for node in std::iter::once(to).chain(others) {
            let port = self.nodes[node].port;
            let _ = cli(port, &["cluster", "setslot", &slot, "node", &to_id]);
        }
    }

    /// The primary (0 to 2) that serves `slot`.
    pub fn owner(&self, slot: u16) -> usize {
        (0..3)
            .find(|&i| self.serves(i, slot))
            .expect("a primary serves the slot")
    }

    /// The primary (0 to 2) that holds the most keys.
    pub fn busiest_primary(&self) -> usize {
        let size = |i: usize| {
            cli(self.nodes[i].port, &["dbsize"])
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        (0..3).max_by_key(|&i| size(i)).unwrap_or(0)
    }

    /// The slot of `key`.
    pub fn slot_of(&self, key: &str) -> u16 {
        cli(self.nodes[0].port, &["cluster", "keyslot", key])
            .and_then(|s| s.trim().parse().ok())
            .expect("CLUSTER KEYSLOT")
    }

    fn serves(&self, node: usize, slot: u16) -> bool {
        let id = self.id(node);
        cli(self.nodes[node].port, &["cluster", "nodes"]).is_some_and(|out| {
            out.lines()
                .filter(|l| l.starts_with(&id))
                .flat_map(|l| l.split_whitespace().skip(8))
                .filter_map(|range| {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?))
                })
                .any(|(a, b)| (a..=b).contains(&slot))
        })
    }
}

/// Whether redis-cli printed a plain success.
fn ok(out: Option<String>) -> bool {
    out.is_some_and(|o| o.trim() == "OK" || o.trim() == "NOKEY")
}

impl Drop for ReplicatedCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
