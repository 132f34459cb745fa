//! A bounded load through a real server, for the fault tests: browsers that
//! keep their own record of every acknowledged write, and the checks that
//! nothing acknowledged was lost and nothing invalidated came back.
//!
//! Each write sets an attribute of its own (`w<n>`), so an acknowledged
//! write has exactly one value to look for afterwards; a write whose answer
//! was a 503 is in doubt (the store may or may not have it) and is not
//! checked. Invalidation is retried until acknowledged, so a session is
//! either live (all its acknowledged writes must be there) or invalidated
//! (it must never load again).
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, RETRY_AFTER, SET_COOKIE};
use tower_httpsession::{Session, SessionError, SessionId, SessionLayer, SessionStore};

/// The routes the load uses.
pub fn app(store: Arc<dyn SessionStore>) -> Router {
    let config = tower_httpsession::SessionConfig::default()
        .with_insecure_cookie_over_http()
        .with_retry_after(Duration::from_secs(1));
    let layer = SessionLayer::with_config(store, config).expect("config");
    Router::new()
        .route(
            "/w/{name}/{value}",
            post(
                |session: Session, Path((name, value)): Path<(String, u64)>| async move {
                    session.set(&name, &value).await?;
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route(
            "/incr",
            post(|session: Session| async move {
                let n = session
                    .update("counter", |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await?;
                Ok::<_, SessionError>(n.to_string())
            }),
        )
        .route(
            "/all",
            get(|session: Session| async move {
                let mut all = BTreeMap::new();
                for name in session.attribute_names().await? {
                    let value: Option<u64> = session.get(&name).await?;
                    all.insert(name, value.unwrap_or_default());
                }
                Ok::<_, SessionError>(serde_json::to_string(&all).expect("json"))
            }),
        )
        .route(
            "/invalidate",
            post(|session: Session| async move {
                session.invalidate().await?;
                Ok::<_, SessionError>("bye")
            }),
        )
        .layer(layer)
}

/// A server on a free loopback port, stopped when dropped.
pub struct Server {
    pub base: String,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

pub async fn serve(store: Arc<dyn SessionStore>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let app = app(store);
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Server {
        base: format!("http://{addr}"),
        handle,
    }
}

/// One session as a browser saw it.
#[derive(Debug, Default)]
pub struct SessionLog {
    /// The `SESSION=...` pair.
    pub cookie: String,
    /// Writes the server acknowledged, by attribute.
    pub acked: BTreeMap<String, u64>,
    /// The highest counter value an `update` acknowledged.
    pub counter: u64,
    /// Whether an invalidation of it was acknowledged.
    pub invalidated: bool,
}

/// What one browser did and saw.
#[derive(Debug, Default)]
pub struct Report {
    pub sessions: Vec<SessionLog>,
    pub ok: u64,
    pub unavailable: u64,
    /// Anything that is neither 2xx nor 503 with `Retry-After`, or a
    /// broken promise seen during the load.
    pub violations: Vec<String>,
}

/// Shared counters the fault injector can watch.
#[derive(Debug, Default)]
pub struct Progress {
    pub requests: AtomicU64,
    /// Set by [`load`] when every browser is done: the injector stops.
    pub stop: AtomicBool,
    /// Set by the injector to keep the browsers going past their request
    /// count (up to twenty times it) until a fault has run its course.
    pub hold: AtomicBool,
}

fn pair_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().to_owned()
}

/// What one request came back with.
enum Outcome {
    Ok {
        set_cookie: Option<String>,
        body: String,
    },
    Unavailable,
}

async fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    cookie: Option<&str>,
    report: &mut Report,
    progress: &Progress,
) -> Outcome {
    progress.requests.fetch_add(1, Ordering::Relaxed);
    let mut builder = client.request(method, &url);
    if let Some(cookie) = cookie {
        builder = builder.header(COOKIE, cookie);
    }
    let response = match builder.send().await {
        Ok(response) => response,
        Err(e) => {
            report.violations.push(format!("{url}: no answer: {e}"));
            return Outcome::Unavailable;
        }
    };
    let status = response.status();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        if !response.headers().contains_key(RETRY_AFTER) {
            report
                .violations
                .push(format!("{url}: 503 without Retry-After"));
        }
        report.unavailable += 1;
        return Outcome::Unavailable;
    }
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        report.violations.push(format!("{url}: {status} {body}"));
        return Outcome::Unavailable;
    }
    report.ok += 1;
    let set_cookie = response
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.unwrap_or_default();
    Outcome::Ok { set_cookie, body }
}

/// One browser: `requests` requests of writes, increments, reads and now and
/// then a logout, through `base`.
pub async fn browse(base: String, browser: u64, requests: u64, progress: Arc<Progress>) -> Report {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let mut report = Report::default();
    let mut current: Option<SessionLog> = None;
    let mut n: u64 = 0;
    let more = |n: u64| n < requests || (progress.hold.load(Ordering::SeqCst) && n < requests * 20);
    while more(n) {
        n += 1;
        let cookie = current.as_ref().map(|s| s.cookie.clone());
        let step = (n + browser * 17) % 150;
        if step == 149 && current.is_some() {
            // Log out, retried until acknowledged: an invalidation in doubt
            // is not an outcome a browser can live with.
            loop {
                let url = format!("{base}/invalidate");
                let outcome = request(
                    &client,
                    reqwest::Method::POST,
                    url,
                    cookie.as_deref(),
                    &mut report,
                    &progress,
                )
                .await;
                n += 1;
                if let Outcome::Ok { .. } = outcome {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut ended = current.take().expect("a session");
            ended.invalidated = true;
            report.sessions.push(ended);
            continue;
        }
        if step % 7 == 3 && current.is_some() {
            let outcome = request(
                &client,
                reqwest::Method::GET,
                format!("{base}/all"),
                cookie.as_deref(),
                &mut report,
                &progress,
            )
            .await;
            if let (Outcome::Ok { set_cookie, body }, Some(session)) = (outcome, &current) {
                if set_cookie.is_some() {
                    report
                        .violations
                        .push(format!("a read changed the cookie: {set_cookie:?}"));
                }
                let seen: BTreeMap<String, u64> = serde_json::from_str(&body).unwrap_or_default();
                for (name, value) in &session.acked {
                    if seen.get(name) != Some(value) {
                        report.violations.push(format!(
                            "read after acknowledged write: {name}={value} missing, saw {:?}",
                            seen.get(name)
                        ));
                    }
                }
            }
            continue;
        }
        let (url, counter) = if step % 5 == 1 && current.is_some() {
            (format!("{base}/incr"), true)
        } else {
            (format!("{base}/w/w{n}/{n}"), false)
        };
        let outcome = request(
            &client,
            reqwest::Method::POST,
            url,
            cookie.as_deref(),
            &mut report,
            &progress,
        )
        .await;
        let Outcome::Ok { set_cookie, body } = outcome else {
            continue;
        };
        match (&mut current, set_cookie) {
            (None, Some(set)) => {
                let mut session = SessionLog {
                    cookie: pair_of(&set),
                    ..SessionLog::default()
                };
                session.acked.insert(format!("w{n}"), n);
                current = Some(session);
            }
            (None, None) => report
                .violations
                .push("a first write was acknowledged without a cookie".to_owned()),
            (Some(session), None) => {
                if counter {
                    let value: u64 = body.parse().unwrap_or_default();
                    session.counter = session.counter.max(value);
                } else {
                    session.acked.insert(format!("w{n}"), n);
                }
            }
            (Some(session), Some(set)) => {
                report.violations.push(format!(
                    "a live session was replaced (lost {} acknowledged writes): {set}",
                    session.acked.len()
                ));
            }
        }
    }
    if let Some(session) = current {
        report.sessions.push(session);
    }
    report
}

/// Runs `browsers` browsers of `requests` requests each against `base`,
/// while `inject` runs; `inject` gets the progress and should stop when
/// `progress.stop` is set.
pub async fn load<F, Fut>(base: &str, browsers: u64, requests: u64, inject: F) -> Vec<Report>
where
    F: FnOnce(Arc<Progress>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let progress = Arc::new(Progress::default());
    let injector = tokio::spawn(inject(progress.clone()));
    let tasks: Vec<_> = (0..browsers)
        .map(|b| tokio::spawn(browse(base.to_owned(), b, requests, progress.clone())))
        .collect();
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await.expect("a browser panicked"));
    }
    progress.stop.store(true, Ordering::SeqCst);
    injector.await.expect("the injector panicked");
    reports
}

/// How long until `base` answers a write with 2xx again, polling every 50 ms
/// for at most `limit`.
pub async fn recovery(base: &str, limit: Duration) -> Option<Duration> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let started = Instant::now();
    while started.elapsed() < limit {
        let response = client.post(format!("{base}/w/probe/1")).send().await;
        if response.is_ok_and(|r| r.status().is_success()) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Loads `key`, retrying for up to 20 s while the store is unavailable (the
/// last fault may have dropped the connection this call finds first; it
/// takes a fraction of a second, the deadline is for a store that never
/// comes back).
async fn load_again(
    store: &dyn SessionStore,
    key: &tower_httpsession::store::StoreKey,
) -> Option<tower_httpsession::store::Record> {
    let started = Instant::now();
    loop {
        match store.load(key).await {
            Ok(record) => return record,
            Err(e) if e.is_unavailable() && started.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the store does not answer again: {e}"),
        }
    }
}

/// Checks every report against the store and the server after the load:
/// every acknowledged write of a live session is stored with its value,
/// every counter is at least its highest acknowledged value, and no
/// invalidated session loads or opens again.
pub async fn verify(store: &dyn SessionStore, base: &str, reports: &[Report]) {
    let client = reqwest::Client::new();
    let mut violations = Vec::new();
    let (mut live, mut ended, mut acked) = (0, 0, 0);
    for (browser, report) in reports.iter().enumerate() {
        violations.extend(
            report
                .violations
                .iter()
                .map(|v| format!("browser {browser}: {v}")),
        );
        for session in &report.sessions {
            let value = session.cookie.split_once('=').expect("pair").1;
            let key = SessionId::from_cookie_value(value)
                .expect("an issued id")
                .store_key();
            let record = load_again(store, &key).await;
            if session.invalidated {
                ended += 1;
                if record.is_some() {
                    violations.push(format!("browser {browser}: an invalidated session is back"));
                }
                let seen = client
                    .get(format!("{base}/all"))
                    .header(COOKIE, &session.cookie)
                    .send()
                    .await
                    .expect("answer")
                    .text()
                    .await
                    .expect("body");
                if seen != "{}" {
                    violations.push(format!(
                        "browser {browser}: an invalidated cookie opened {seen}"
                    ));
                }
                continue;
            }
            live += 1;
            let Some(record) = record else {
                violations.push(format!(
                    "browser {browser}: a live session with {} acknowledged writes is gone",
                    session.acked.len()
                ));
                continue;
            };
            for (name, value) in &session.acked {
                acked += 1;
                if record.attributes.get(name) != Some(&value.to_string()) {
                    violations.push(format!(
                        "browser {browser}: acknowledged {name}={value} lost (stored {:?})",
                        record.attributes.get(name)
                    ));
                }
            }
            let counter: u64 = record
                .attributes
                .get("counter")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if counter < session.counter {
                violations.push(format!(
                    "browser {browser}: counter {counter} below acknowledged {}",
                    session.counter
                ));
            }
        }
    }
    println!("verified {acked} acknowledged writes in {live} live sessions, {ended} invalidated");
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(acked > 0 && live > 0, "the load acknowledged nothing");
}
