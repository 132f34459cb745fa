//! Redis with replication: one primary, one replica and three Redis
//! Sentinels, on loopback ports of their own (16500-16699), in a scratch
//! folder, all killed when the guard drops.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{cli, scratch_dir, wait_until, watchdog};

/// The name the sentinels know the primary by.
pub const PRIMARY: &str = "sessions";

/// The first and last loopback port these servers use.
const PORTS: (u16, u16) = (16500, 16699);

/// A port of the range that nothing listens on right now.
pub fn range_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(PORTS.0);
    for _ in PORTS.0..=PORTS.1 {
        let port = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = PORTS.0 + (port - PORTS.0) % (PORTS.1 - PORTS.0 + 1);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {}-{}", PORTS.0, PORTS.1);
}

/// One server process of the test's own.
pub struct Node {
    pub port: u16,
    child: Option<Child>,
}

impl Node {
    pub fn spawn(program: &str, port: u16, dir: &std::path::Path, args: &[String]) -> Self {
        let child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} (scripts/services installs it): {e}"));
        watchdog(&[child.id()], dir);
        let node = Self {
            port,
            child: Some(child),
        };
        wait_until(program, Duration::from_secs(10), || {
            cli(port, &["ping"]).is_some_and(|out| out.trim() == "PONG")
        });
        node
    }

    /// Kills the process with SIGKILL: no goodbye to its clients or peers.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `ROLE`'s first word: `master`, `slave` or `sentinel`.
    pub fn role(&self) -> Option<String> {
        cli(self.port, &["role"]).and_then(|out| out.lines().next().map(str::to_owned))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A primary, its replicas and three sentinels watching them as
/// [`PRIMARY`], which mark the primary down after a second without answer.
pub struct Sentinels {
    pub primary: Node,
    pub replicas: Vec<Node>,
    pub sentinels: Vec<Node>,
    dir: PathBuf,
}

impl Sentinels {
    /// Starts a primary with one replica and the sentinels, and waits
    /// until the sentinels know the replica and each other, so a failover
    /// can be agreed.
    pub fn start() -> Self {
        Self::start_with_replicas(1)
    }

    /// As [`start`](Self::start), with `count` replicas.
    pub fn start_with_replicas(count: usize) -> Self {
        let dir = scratch_dir("sentinel");
        let server = |port: u16, extra: &[String]| {
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args.push(dir.display().to_string());
            args.extend_from_slice(extra);
            Node::spawn("redis-server", port, &dir, &args)
        };
        let primary = server(range_port(), &[]);
        let replicas: Vec<Node> = (0..count)
            .map(|_| {
                let replica_of = [
                    "--replicaof".to_owned(),
                    "127.0.0.1".to_owned(),
                    primary.port.to_string(),
                ];
                server(range_port(), &replica_of)
            })
            .collect();
        for replica in &replicas {
            wait_until("replication link", Duration::from_secs(20), || {
                cli(replica.port, &["info", "replication"])
                    .is_some_and(|out| out.contains("master_link_status:up"))
            });
        }
        let replica_count = count.to_string();
        let sentinels = (0..3)
            .map(|i| {
                let port = range_port();
                let config = dir.join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &config,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                         sentinel monitor {PRIMARY} 127.0.0.1 {primary} 2\n\
                         sentinel down-after-milliseconds {PRIMARY} 1000\n\
                         sentinel failover-timeout {PRIMARY} 4000\n\
                         sentinel parallel-syncs {PRIMARY} 1\n",
                        dir = dir.display(),
                        primary = primary.port,
                    ),
                )
                .expect("write the sentinel config");
                Node::spawn(
                    "redis-sentinel",
                    port,
                    &dir,
                    &[config.display().to_string()],
                )
            })
            .collect::<Vec<_>>();
        for sentinel in &sentinels {
            wait_until("sentinels meet", Duration::from_secs(30), || {
                cli(sentinel.port, &["sentinel", "master", PRIMARY]).is_some_and(|out| {
                    let fields: Vec<&str> = out.lines().collect();
                    let field = |name: &str| {
                        fields
                            .iter()
                            .position(|l| *l == name)
                            .and_then(|i| fields.get(i + 1).copied())
                    };
                    field("num-other-sentinels") == Some("2")
                        && field("num-slaves") == Some(replica_count.as_str())
                })
            });
        }
        Self {
            primary,
            replicas,
            sentinels,
            dir,
        }
    }

    /// The sentinels' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}", s.port))
            .collect()
    }

    /// Kills the primary with SIGKILL and waits (up to 30 s) until the
    /// sentinels promote a replica; says when the promotion was seen.
    pub async fn fail_over(mut self) -> (Self, Instant) {
        self.primary.kill();
        tokio::task::spawn_blocking(move || {
            let promoted = self.wait_for_promotion(Duration::from_secs(30));
            (self, promoted)
        })
        .await
        .expect("wait for the promotion")
    }

    /// Waits (up to 30 s) until the promoted replica has a replica of its
    /// own in sync, as writes that wait for one need; says when.
    pub async fn wait_for_new_replica(self) -> (Self, Instant) {
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            loop {
                let synced = self.replicas.iter().any(|r| {
                    cli(r.port, &["info", "replication"]).is_some_and(|out| {
                        out.contains("role:master") && out.contains("state=online")
                    })
                });
                if synced {
                    return (self, Instant::now());
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the new primary got no replica within 30 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .expect("wait for a replica")
    }

    /// Waits until a replica calls itself primary, and says when it was
    /// first seen so (polled every 20 ms).
    pub fn wait_for_promotion(&self, limit: Duration) -> Instant {
        let started = Instant::now();
        loop {
            if self
                .replicas
                .iter()
                .any(|r| r.role().as_deref() == Some("master"))
            {
                return Instant::now();
            }
            assert!(
                started.elapsed() < limit,
                "the sentinels promoted no replica within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Sentinels {
    /// Starts watching the replicas' roles (every 20 ms), to learn when
    /// the sentinels' decisions last changed them.
    ///
    /// Sentinels on a loaded machine may fail over twice: one marks the
    /// newly promoted replica down before it answers its first ping, and
    /// the other replica is promoted in turn; the first stays a primary of
    /// its own until the sentinels turn it back into a replica, seconds
    /// later. A store can only follow the sentinels' last word, so recovery
    /// is measured from then.
    pub fn watch(&self) -> Watch {
        let ports: Vec<u16> = self.replicas.iter().map(|r| r.port).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(Mutex::new(Changes::default()));
        let thread = {
            let (stop, changes) = (Arc::clone(&stop), Arc::clone(&changes));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let (roles, synced) = topology(&ports);
                    changes.lock().unwrap().saw(roles, synced, Instant::now());
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Watch {
            stop,
            changes,
            thread: Some(thread),
        }
    }
}

/// The replicas' roles, and the roles with each primary's count of
/// replicas in sync; a node that does not answer counts as `down`.
fn topology(ports: &[u16]) -> (String, String) {
    let mut roles = String::new();
    let mut synced = String::new();
    for port in ports {
        let info = cli(*port, &["info", "replication"]).unwrap_or_default();
        let role = if info.contains("role:master") {
            "master"
        } else if info.contains("role:slave") {
            "replica"
        } else {
            "down"
        };
        let online = info.matches("state=online").count();
        roles.push_str(&format!("{port}:{role} "));
        synced.push_str(&format!("{port}:{role}:{online} "));
    }
    (roles, synced)
}

#[derive(Default)]
struct Changes {
    roles: Option<(String, Instant)>,
    synced: Option<(String, Instant)>,
}

impl Changes {
    /// Records a sample taken at `at`; keeps when each state was first seen.
    fn saw(&mut self, roles: String, synced: String, at: Instant) {
        if self.roles.as_ref().is_none_or(|(seen, _)| *seen != roles) {
            self.roles = Some((roles, at));
        }
        if self.synced.as_ref().is_none_or(|(seen, _)| *seen != synced) {
            self.synced = Some((synced, at));
        }
    }
}

/// A running [`Sentinels::watch`].
pub struct Watch {
    stop: Arc<AtomicBool>,
    changes: Arc<Mutex<Changes>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    /// Stops watching; says when the replicas last changed role, and when
    /// the last change of roles or of the replicas in sync happened.
    pub fn last_changes(mut self) -> (Instant, Instant) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the topology watcher");
        }
        let changes = self.changes.lock().unwrap();
        let at = |seen: &Option<(String, Instant)>| seen.as_ref().map(|(_, at)| *at);
        let roles = at(&changes.roles).expect("at least one sample");
        let synced = at(&changes.synced).expect("at least one sample");
        (roles, synced)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for sentinel in &mut self.sentinels {
            sentinel.kill();
        }
        self.primary.kill();
        for replica in &mut self.replicas {
            replica.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
