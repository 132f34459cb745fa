//! Logged-in shoppers filling their carts against a shop, recording when
//! each request ended and how.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};

/// How one request ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When the answer (or the error) came.
    pub at: Instant,
    /// The status, `None` if no answer came.
    pub status: Option<StatusCode>,
    /// Whether the answer carried `Retry-After`.
    pub retry_after: bool,
}

impl Outcome {
    /// The shop took the item.
    pub fn succeeded(&self) -> bool {
        self.status == Some(StatusCode::SEE_OTHER)
    }

    /// A store outage, as the middleware answers it.
    pub fn is_outage(&self) -> bool {
        self.status == Some(StatusCode::SERVICE_UNAVAILABLE) && self.retry_after
    }
}

/// What one shopper did.
#[derive(Debug)]
pub struct Shopping {
    pub client: reqwest::Client,
    /// The items the shop acknowledged, in order.
    pub added: Vec<String>,
    pub outcomes: Vec<Outcome>,
}

/// Logs in as `name` at `base`, then adds items every 10 ms until `stop`
/// (or 100,000 items, or two minutes), counting each acknowledged one in
/// `acked`.
pub async fn shopper(
    base: String,
    name: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> Shopping {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let login = client
        .post(format!("{base}/login"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("user={name}"))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), StatusCode::SEE_OTHER, "login failed");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut added = Vec::new();
    let mut outcomes = Vec::new();
    for n in 0..100_000 {
        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
            break;
        }
        let item = format!("{name}-{n}");
        let response = client
            .post(format!("{base}/cart"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(format!("item={item}"))
            .send()
            .await;
        let outcome = Outcome {
            at: Instant::now(),
            status: response.as_ref().ok().map(reqwest::Response::status),
            retry_after: response
                .as_ref()
                .is_ok_and(|r| r.headers().contains_key(RETRY_AFTER)),
        };
        if outcome.succeeded() {
            added.push(item);
            acked.fetch_add(1, Ordering::SeqCst);
        }
        outcomes.push(outcome);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Shopping {
        client,
        added,
        outcomes,
    }
}

/// Waits until `count` more items have been acknowledged (at most 30 s).
pub async fn traffic(acked: &AtomicUsize, count: usize, when: &str) {
    let target = acked.load(Ordering::SeqCst) + count;
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} items added {when}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The cart of `shopping`'s client, as the shop at `base` shows it.
pub async fn cart(base: &str, shopping: &Shopping) -> Vec<String> {
    shopping
        .client
        .get(format!("{base}/cart.json"))
        .send()
        .await
        .expect("cart")
        .json()
        .await
        .expect("json cart")
}

/// The items of `shopping` that its cart no longer holds.
pub async fn lost_items(base: &str, shopping: &Shopping) -> Vec<String> {
    let cart = cart(base, shopping).await;
    shopping
        .added
        .iter()
        .filter(|item| !cart.contains(item))
        .cloned()
        .collect()
}

/// A port of 18500-18599 nothing listens on.
pub fn http_port() -> u16 {
    (18500..18600)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 18500-18599")
}

/// Starts the shop on a port of its own with the store settings `env`,
/// and waits until it is live. Returns the process and the base URL.
pub async fn start_shop(env: &[(&str, String)]) -> (super::Proc, String) {
    let port = http_port();
    let mut command = super::shop_command();
    command
        .env("PORT", port.to_string())
        .env("SESSION_STORE", "redis")
        .env("SESSION_COOKIE_SECURE", "false")
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let mut process = super::Proc(command.spawn().expect("start the shop"));
    // The shop logs to stdout; an error other than an outage is passed on,
    // so that a failed test says what the shop answered it with
    // (`SHOP_ALL_LOGS=1` passes every line on, outages included).
    if let Some(stdout) = process.0.stdout.take() {
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let line = plain(&line);
                if std::env::var_os("SHOP_ALL_LOGS").is_some()
                    || (line.contains("ERROR") && !line.contains("status=503"))
                {
                    eprintln!("shop: {line}");
                }
            }
        });
    }
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let live = reqwest::get(format!("{base}/actuator/health/liveness")).await;
        if live.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        assert!(Instant::now() < deadline, "the shop never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (process, base)
}

/// `line` without its terminal colour codes.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An escape sequence runs to its final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What a failover did to the load.
#[derive(Debug)]
pub struct Figures {
    /// Requests answered 503.
    pub outages: usize,
    /// From the promotion to the end of the last failed request.
    pub recovery: Duration,
    /// Items the shop acknowledged.
    pub acknowledged: usize,
    /// Acknowledged items the carts no longer hold.
    pub lost: usize,
}

/// Checks that every failed request of `shoppings` was answered 503 with
/// `Retry-After` and that none failed later than `recovery` after
/// `promoted`; counts the lost items.
pub async fn check_failover(
    base: &str,
    shoppings: &[Shopping],
    promoted: Instant,
    recovery: Duration,
) -> Figures {
    let failures: Vec<&Outcome> = shoppings
        .iter()
        .flat_map(|s| s.outcomes.iter())
        .filter(|o| !o.succeeded())
        .collect();
    let odd: Vec<_> = failures.iter().filter(|o| !o.is_outage()).collect();
    assert!(
        odd.is_empty(),
        "requests failed otherwise than 503 with Retry-After: {odd:?}"
    );
    let last_failure = failures.iter().map(|o| o.at).max().unwrap_or(promoted);
    let after = last_failure.saturating_duration_since(promoted);
    assert!(
        after <= recovery,
        "requests still failed {after:?} after the promotion"
    );
    let mut lost = 0;
    for shopping in shoppings {
        lost += lost_items(base, shopping).await.len();
    }
    Figures {
        outages: failures.len(),
        recovery: after,
        acknowledged: shoppings.iter().map(|s| s.added.len()).sum(),
        lost,
    }
}

/// Starts `clients` shoppers at `base`; returns their handles, the stop
/// flag and the count of acknowledged items.
pub fn start_shoppers(
    base: &str,
    clients: usize,
) -> (
    Vec<tokio::task::JoinHandle<Shopping>>,
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let handles = (0..clients)
        .map(|i| {
            let name = format!("client{i}");
            tokio::spawn(shopper(base.to_owned(), name, stop.clone(), acked.clone()))
        })
        .collect();
    (handles, stop, acked)
}

/// Stops the shoppers and collects what they did.
pub async fn finish(
    handles: Vec<tokio::task::JoinHandle<Shopping>>,
    stop: &AtomicBool,
) -> Vec<Shopping> {
    stop.store(true, Ordering::SeqCst);
    let mut shoppings = Vec::new();
    for handle in handles {
        shoppings.push(handle.await.expect("a shopper panicked"));
    }
    shoppings
}
