//! Redis servers and helpers shared by the `redis_*` integration tests.
//!
//! Servers started here listen on free loopback ports, keep nothing on disk
//! but a scratch folder, and are killed when their guard drops. A watchdog
//! process also kills them as soon as the test process exits, so a test
//! binary that aborts leaves nothing running either.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod contract;
pub mod replicated_cluster;
pub mod sentinel;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tower_httpsession::store::redis::RedisStore;
use tower_httpsession::store::testing::Guarded;

/// The shared Redis the tests use, read at run time.
pub fn local_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// `error` and its sources, joined by `: ` as a log line shows them.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A key prefix no other test (or test run) uses.
pub fn unique_prefix(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("test:{tag}:{}-{nanos}-{n}:", std::process::id())
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_prefix(tag).replace(':', "_"));
    std::fs::create_dir_all(&dir).expect("create a scratch folder");
    dir
}

/// Kills `pids` and removes `dir` once this test process has exited.
pub fn watchdog(pids: &[u32], dir: &std::path::Path) {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.2; done; kill -9 {pids} 2>/dev/null; rm -rf '{dir}'",
        me = std::process::id(),
        pids = pids.join(" "),
        dir = dir.display(),
    );
    // The watchdog outlives this process by design, so it is never waited
    // for; init reaps it.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the watchdog");
}

fn cli(port: u16, args: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

pub fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < limit,
            "{what}: not ready within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One redis-server of the test's own, killed on drop.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server with no persistence on a free loopback port.
    pub fn start() -> Self {
        Self::start_with(free_port(), &[])
    }

    /// Starts a server on `port`.
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// Starts a replica of the server on `primary_port`, on a free port.
    pub fn start_replica_of(primary_port: u16) -> Self {
        let primary = primary_port.to_string();
        Self::start_with(free_port(), &["--replicaof", "127.0.0.1", &primary])
    }

    /// Starts a server that refuses every client without `password`.
    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(free_port(), &["--requirepass", password])
    }

    fn start_with(port: u16, extra: &[&str]) -> Self {
        let mut server = Self {
            port,
            dir: scratch_dir("server"),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        server.resume();
        server
    }

    /// The URL to connect to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port after [`stop`](Self::stop).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        watchdog(&[child.id()], &self.dir);
        self.child = Some(child);
        let port = self.port;
        // A server that wants a password answers a ping without one with
        // NOAUTH: up all the same.
        wait_until("redis-server", Duration::from_secs(10), || {
            cli(port, &["ping"])
                .is_some_and(|out| out.trim() == "PONG" || out.starts_with("NOAUTH"))
        });
    }

    /// Stops the server (SHUTDOWN NOSAVE), keeping its port for
    /// [`resume`](Self::resume).
    pub fn stop(&mut self) {
        let _ = cli(self.port, &["shutdown", "nosave"]);
        if let Some(mut child) = self.child.take() {
            let started = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if started.elapsed() > Duration::from_secs(5) {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: it keeps its
    /// connections open but answers nothing while frozen.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// The server's `INFO` fields.
    pub fn info(&self, section: &str) -> HashMap<String, String> {
        let text = cli(self.port, &["info", section]).expect("INFO");
        text.lines()
            .filter_map(|line| line.trim().split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Joins the cluster-enabled servers on `ports` into a cluster of
/// primaries that share the slots.
fn create_cluster(ports: &[u16]) {
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let status = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("redis-cli --cluster create");
    assert!(status.success(), "cluster create failed");
}

/// A Redis Cluster of three primaries on free loopback ports.
pub struct Cluster {
    pub ports: Vec<u16>,
    buses: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: PathBuf,
}

impl Cluster {
    /// Starts three cluster-enabled servers and joins them.
    pub fn start() -> Self {
        let mut cluster = Self {
            ports: (0..3).map(|_| free_port()).collect(),
            buses: (0..3).map(|_| free_port()).collect(),
            children: (0..3).map(|_| None).collect(),
            dir: scratch_dir("cluster"),
        };
        for node in 0..3 {
            cluster.resume_node(node);
        }
        create_cluster(&cluster.ports);
        cluster.wait_until_ok();
        cluster
    }

    /// Waits until every node reports `cluster_state:ok`.
    pub fn wait_until_ok(&self) {
        for &port in &self.ports {
            wait_until("cluster_state:ok", Duration::from_secs(20), || {
                cli(port, &["cluster", "info"]).is_some_and(|out| out.contains("cluster_state:ok"))
            });
        }
    }

    /// Starts node `node` (again), with the cluster state it kept on disk.
    pub fn resume_node(&mut self, node: usize) {
        assert!(self.children[node].is_none(), "already running");
        let node_dir = self.dir.join(node.to_string());
        std::fs::create_dir_all(&node_dir).expect("node folder");
        let port = self.ports[node];
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--cluster-port", &self.buses[node].to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-node-timeout", "2000"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&node_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        watchdog(&[child.id()], &self.dir);
        self.children[node] = Some(child);
        wait_until("cluster node", Duration::from_secs(10), || {
            cli(port, &["ping"]).is_some_and(|out| out.trim() == "PONG")
        });
    }

    /// Kills node `node`; its port and cluster state stay for
    /// [`resume_node`](Self::resume_node).
    pub fn stop_node(&mut self, node: usize) {
        if let Some(mut child) = self.children[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// One cluster for the whole test binary: started on first use, killed
    /// by the watchdog when the binary exits.
    pub fn shared() -> &'static Cluster {
        static CLUSTER: OnceLock<Cluster> = OnceLock::new();
        CLUSTER.get_or_init(Cluster::start)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in 0..self.children.len() {
            self.stop_node(node);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A store on the shared local Redis under a prefix of its own; when it is
/// dropped, every key under the prefix is deleted, so tests leave nothing
/// behind.
pub type CleanStore = Guarded<RedisStore, PrefixCleanup>;

/// Deletes every key under its prefix when dropped.
#[derive(Debug)]
pub struct PrefixCleanup(String);

impl PrefixCleanup {
    /// A guard for the keys that start with `prefix` on [`local_url`],
    /// for tests whose keys another process writes.
    pub fn new(prefix: &str) -> Self {
        Self(prefix.to_owned())
    }
}

/// A [`CleanStore`] on [`local_url`] with a fresh prefix.
pub async fn clean_store(tag: &str) -> CleanStore {
    let prefix = unique_prefix(tag);
    let store = RedisStore::builder(&local_url())
        .with_key_prefix(prefix.clone())
        .connect()
        .await
        .expect("connect to the local Redis");
    Guarded::new(store, PrefixCleanup(prefix))
}

impl Drop for PrefixCleanup {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(local_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let pattern = format!("{}*", self.0);
        let keys: Vec<String> = match redis::cmd("KEYS").arg(&pattern).query(&mut conn) {
            Ok(keys) => keys,
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query(&mut conn);
        }
    }
}

/// Calls per command, less the INFO calls the test itself makes.
pub fn command_calls(server: &RedisServer) -> std::collections::BTreeMap<String, u64> {
    server
        .info("commandstats")
        .into_iter()
        .filter_map(|(name, value)| {
            let name = name.strip_prefix("cmdstat_")?.to_owned();
            let calls = value
                .split(',')
                .find_map(|part| part.strip_prefix("calls="))?
                .parse()
                .ok()?;
            (name != "info").then_some((name, calls))
        })
        .collect()
}

/// The calls per command between two readings of [`command_calls`].
pub fn delta(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    after
        .iter()
        .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, calls)| *calls > 0)
        .collect()
}
