//! A Redis Cluster of three primaries with one replica each, on loopback
//! ports of 16500-16699, for failover and resharding under load.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::sentinel::{Node, range_port};
use super::{cli, create_cluster, scratch_dir, wait_until};

/// Six cluster nodes: `nodes[0..3]` start as primaries, `nodes[3 + i]`
/// replicates `nodes[i]`.
pub struct ReplicatedCluster {
    pub nodes: Vec<Node>,
    dir: PathBuf,
}

impl ReplicatedCluster {
    /// Starts the six nodes, joins them, and waits until every replica is in
    /// sync with its primary.
    pub fn start() -> Self {
        let dir = scratch_dir("replicated-cluster");
        let nodes: Vec<Node> = (0..6)
            .map(|i| {
                let port = range_port();
                let bus = range_port();
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
        let cluster = Self { nodes, dir };
        let primaries: Vec<u16> = cluster.nodes[..3].iter().map(|n| n.port).collect();
        create_cluster(&primaries);
        cluster.wait_until_ok(&cluster.nodes[..3]);
        for i in 0..3 {
            let primary = cluster.id(i);
            let replica = cluster.nodes[3 + i].port;
            let first = cluster.nodes[0].port.to_string();
            wait_until("replica joins", Duration::from_secs(20), || {
                cli(replica, &["cluster", "meet", "127.0.0.1", &first]).is_some()
                    && cli(replica, &["cluster", "replicate", &primary])
                        .is_some_and(|out| out.trim() == "OK")
            });
        }
        for i in 0..3 {
            let replica = cluster.nodes[3 + i].port;
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

    /// Waits until node `index` calls itself primary, and says when it
    /// was first seen so (polled every 20 ms).
    pub fn wait_for_promotion(&self, index: usize, limit: Duration) -> Instant {
        let started = Instant::now();
        loop {
            if self.nodes[index].role().as_deref() == Some("master") {
                return Instant::now();
            }
            assert!(
                started.elapsed() < limit,
                "node {index} was not promoted within {limit:?}"
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

impl Drop for ReplicatedCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
