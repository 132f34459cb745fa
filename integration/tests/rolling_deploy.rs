//! A rolling deploy through a real load balancer.
//!
//! Two Redis-backed instances of the shop example run behind HAProxy, which
//! polls their readiness endpoint. Logged-in clients fill their carts through
//! HAProxy while each instance in turn is taken out of service with a `PUT`,
//! drained, restarted and put back. No client request may fail, and every
//! cart must hold every item its client was told was added.
//!
//! It leaves nothing behind: the sessions' keys go with their prefix, the
//! HAProxy configuration with its scratch folder, the processes with their
//! guards, also when the test fails.
#![cfg(all(feature = "redis", feature = "testing"))]

mod redis_support;
mod shop_support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use redis_support::{PrefixCleanup, unique_prefix};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use shop_support::{Proc, load, shop_command};

const TOKEN: &str = "rolling-deploy-token-0123456789";
const CLIENTS: usize = 8;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

struct Instance {
    port: u16,
    prefix: String,
    process: Option<Proc>,
}

impl Instance {
    fn spawn(port: u16, prefix: &str) -> Proc {
        let child = shop_command()
            .env("PORT", port.to_string())
            .env("SESSION_STORE", "redis")
            .env("REDIS_URL", redis_url())
            .env("SESSION_REDIS_PREFIX", prefix)
            .env("SESSION_COOKIE_SECURE", "false")
            .env("HEALTH_ALLOW", "127.0.0.1/32")
            .env("HEALTH_TOKEN", TOKEN)
            .env("HEALTH_DRAIN_SECS", "1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the shop");
        Proc(child)
    }

    async fn start(prefix: &str) -> Self {
        let port = free_port();
        let process = Some(Self::spawn(port, prefix));
        let instance = Self {
            port,
            prefix: prefix.to_owned(),
            process,
        };
        instance.wait_live().await;
        instance
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_live(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let live = client
                .get(self.url("/actuator/health/liveness"))
                .send()
                .await;
            if live.is_ok_and(|r| r.status() == StatusCode::OK) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "instance on {} never came up",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, as a deploy tool stops a service, then wait for the exit.
    async fn stop(&mut self) {
        let mut process = self.process.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &process.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if process.0.try_wait().expect("wait").is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "instance did not stop after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn restart(&mut self) {
        self.process = Some(Self::spawn(self.port, &self.prefix));
        self.wait_live().await;
    }
}

async fn put_status(client: &reqwest::Client, url: &str, status: &str, token: &str) -> StatusCode {
    client
        .put(url)
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(format!(r#"{{"status": "{status}"}}"#))
        .send()
        .await
        .expect("put")
        .status()
}

/// A folder of this test's, removed with what it holds when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Balancer {
    port: u16,
    stats: u16,
    _process: Proc,
    _dir: ScratchDir,
}

impl Balancer {
    async fn start(backends: &[&Instance]) -> Self {
        let port = free_port();
        let stats = free_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("  server s{i} 127.0.0.1:{} check\n", b.port))
            .collect();
        let config = format!(
            "global\n  maxconn 512\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n\
             frontend shop\n  bind 127.0.0.1:{port}\n  default_backend shops\n\
             backend shops\n  balance roundrobin\n\
             \x20 option httpchk GET /actuator/health/readiness\n  http-check expect status 200\n\
             \x20 default-server inter 100ms fall 2 rise 2\n{servers}\
             listen stats\n  bind 127.0.0.1:{stats}\n  stats enable\n  stats uri /stats\n"
        );
        let dir = ScratchDir(
            std::env::temp_dir().join(format!("httpsession-haproxy-{}-{port}", std::process::id())),
        );
        std::fs::create_dir_all(&dir.0).expect("temp dir");
        let path = dir.0.join("haproxy.cfg");
        std::fs::write(&path, config).expect("write config");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy (scripts/services installs it)");
        let balancer = Self {
            port,
            stats,
            _process: Proc(child),
            _dir: dir,
        };
        for i in 0..backends.len() {
            balancer.wait_for(i, "UP").await;
        }
        balancer
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The status HAProxy shows for server `s{index}`.
    async fn server_status(&self, index: usize) -> Option<String> {
        let csv = reqwest::get(format!("http://127.0.0.1:{}/stats;csv", self.stats))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let status_column = header.iter().position(|h| *h == "status")?;
        let name = format!("s{index}");
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|cols| cols.get(1) == Some(&name.as_str()))
            .and_then(|cols| cols.get(status_column).map(|s| (*s).to_owned()))
    }

    async fn wait_for(&self, index: usize, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.server_status(index).await;
            if now.as_deref().is_some_and(|s| s.starts_with(status)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "s{index} never became {status} (last {now:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits until the shoppers have had `TRAFFIC` more items acknowledged:
/// load flows at that point of the deploy, however slow the machine.
async fn traffic(acked: &AtomicUsize, when: &str) {
    const TRAFFIC: usize = CLIENTS * 10;
    load::traffic(acked, TRAFFIC, when).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_deploy_loses_no_request_and_no_item() {
    let prefix = unique_prefix("rolling");
    let _keys = PrefixCleanup::new(&prefix);
    let mut instances = [
        Instance::start(&prefix).await,
        Instance::start(&prefix).await,
    ];
    let balancer = Balancer::start(&instances.iter().collect::<Vec<_>>()).await;
    let base = balancer.url("");

    let (shoppers, stop, acked) = load::start_shoppers(&base, CLIENTS);
    traffic(&acked, "before the deploy").await;

    let operator = reqwest::Client::new();
    for (index, instance) in instances.iter_mut().enumerate() {
        let health = instance.url("/actuator/health");
        assert_eq!(
            put_status(&operator, &health, "OUT_OF_SERVICE", TOKEN).await,
            StatusCode::OK
        );
        balancer.wait_for(index, "DOWN").await;
        instance.stop().await;
        instance.restart().await;
        let health = instance.url("/actuator/health");
        assert_eq!(
            put_status(&operator, &health, "UP", TOKEN).await,
            StatusCode::OK
        );
        balancer.wait_for(index, "UP").await;
        traffic(&acked, "with the restarted instance back").await;
    }

    traffic(&acked, "after the deploy").await;
    let shoppings = load::finish(shoppers, &stop).await;
    let mut total = 0;
    for shopping in &shoppings {
        let cart = load::cart(&base, shopping).await;
        assert_eq!(cart, shopping.added, "a cart lost or reordered items");
        total += shopping.added.len();
    }
    let failures: Vec<_> = shoppings
        .iter()
        .flat_map(|s| s.outcomes.iter())
        .filter(|o| !o.succeeded())
        .map(|o| o.status)
        .collect();
    assert!(
        failures.is_empty(),
        "client requests failed during the deploy: {failures:?}"
    );
    assert!(
        total > CLIENTS * 20,
        "the load was too light to mean anything: {total}"
    );
    eprintln!("rolling deploy: {total} items added by {CLIENTS} clients, no failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toggle_refuses_outsiders_and_wrong_tokens() {
    let prefix = unique_prefix("rolling-acl");
    let _keys = PrefixCleanup::new(&prefix);
    let instance = Instance::start(&prefix).await;
    let health = instance.url("/actuator/health");
    let readiness = instance.url("/actuator/health/readiness");

    let outsider = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().expect("address")))
        .build()
        .expect("client");
    let insider = reqwest::Client::new();

    assert_eq!(
        put_status(&outsider, &health, "OUT_OF_SERVICE", TOKEN).await,
        StatusCode::FORBIDDEN,
        "a caller outside the ACL must be refused even with the token"
    );
    assert_eq!(
        put_status(
            &insider,
            &health,
            "OUT_OF_SERVICE",
            "wrong-token-wrong-token"
        )
        .await,
        StatusCode::FORBIDDEN
    );
    let no_token = insider
        .put(&health)
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"status": "OUT_OF_SERVICE"}"#)
        .send()
        .await
        .expect("put");
    assert_eq!(no_token.status(), StatusCode::FORBIDDEN);
    let ready = insider.get(&readiness).send().await.expect("readiness");
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "a refused PUT changed the state"
    );
}
