//! TLS-only redis-servers and a TLS-only Redis Cluster on loopback ports
//! 16400-16499, with the certificates of a [`Pki`]; killed when their
//! guard drops, or by a watchdog when the test process exits.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::redis_support::{scratch_dir, wait_until, watchdog};
use crate::tls_support::{Pki, port_in};

/// The loopback ports these tests may use for Redis.
const PORTS: std::ops::Range<u16> = 16400..16500;

/// Whether servers ask clients for a certificate (`tls-auth-clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    No,
    Required,
}

/// The arguments that make a redis-server TLS-only with `pki`'s files.
fn tls_args(pki: &Pki, port: u16, auth: ClientAuth) -> Vec<String> {
    let path = |p: &PathBuf| p.display().to_string();
    vec![
        "--port".into(),
        "0".into(),
        "--tls-port".into(),
        port.to_string(),
        "--tls-cert-file".into(),
        path(&pki.server_cert),
        "--tls-key-file".into(),
        path(&pki.server_key),
        "--tls-ca-cert-file".into(),
        path(&pki.ca),
        "--tls-auth-clients".into(),
        if auth == ClientAuth::Required {
            "yes"
        } else {
            "no"
        }
        .into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        String::new(),
        "--appendonly".into(),
        "no".into(),
    ]
}

/// `redis-cli` over TLS with the client certificate, as the servers of
/// either kind accept it.
fn cli(pki: &Pki, port: u16) -> Command {
    let mut command = Command::new("redis-cli");
    command
        .args(["--tls", "--cacert"])
        .arg(&pki.ca)
        .arg("--cert")
        .arg(&pki.client_cert)
        .arg("--key")
        .arg(&pki.client_key)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null());
    command
}

fn answers(pki: &Pki, port: u16, args: &[&str], expected: &str) -> bool {
    cli(pki, port).args(args).output().is_ok_and(|out| {
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(expected)
    })
}

/// Starts redis-server in `dir`; the watchdog removes `scratch` (which
/// holds `dir`) once the test process exits.
fn spawn(args: &[String], dir: &std::path::Path, scratch: &std::path::Path) -> Child {
    let child = Command::new("redis-server")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    watchdog(&[child.id()], scratch);
    child
}

/// One TLS-only redis-server, killed on drop.
pub struct TlsRedis {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl TlsRedis {
    pub fn start(pki: &Pki, auth: ClientAuth) -> Self {
        let port = port_in(PORTS);
        let dir = scratch_dir("tls-server");
        let child = spawn(&tls_args(pki, port, auth), &dir, &dir);
        wait_until("TLS redis-server", Duration::from_secs(10), || {
            answers(pki, port, &["ping"], "PONG")
        });
        Self { port, dir, child }
    }

    /// The `rediss://` URL of the server, by IP address.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS-only Redis Cluster of three primaries (`tls-cluster yes`),
/// killed on drop.
pub struct TlsCluster {
    pub ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Child>,
}

impl TlsCluster {
    pub fn start(pki: &Pki, auth: ClientAuth) -> Self {
        let dir = scratch_dir("tls-cluster");
        let mut ports = Vec::new();
        let mut children = Vec::new();
        for node in 0..3 {
            let port = port_in(PORTS);
            let bus = port_in(PORTS);
            let node_dir = dir.join(node.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let mut args = tls_args(pki, port, auth);
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                    "--cluster-node-timeout",
                    "2000",
                    "--tls-cluster",
                    "yes",
                    "--tls-replication",
                    "yes",
                ]
                .map(str::to_owned),
            );
            children.push(spawn(&args, &node_dir, &dir));
            ports.push(port);
        }
        let cluster = Self {
            ports,
            dir,
            children,
        };
        for &port in &cluster.ports {
            wait_until("TLS cluster node", Duration::from_secs(10), || {
                answers(pki, port, &["ping"], "PONG")
            });
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let status = cli(pki, cluster.ports[0])
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "TLS cluster create failed");
        for &port in &cluster.ports {
            wait_until("cluster_state:ok", Duration::from_secs(20), || {
                answers(pki, port, &["cluster", "info"], "cluster_state:ok")
            });
        }
        cluster
    }

    /// The nodes' `rediss://` URLs.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("rediss://127.0.0.1:{p}"))
            .collect()
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
