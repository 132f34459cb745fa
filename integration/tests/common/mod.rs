//! An app, a server and a client shared by the HTTP-level tests.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use tower_httpsession::store::{
    Applied, ChangeSet, Created, Operation, PartialRecord, Record, SessionLimit, StoreErrorKind,
    StoreHealth, StoreKey, Swap, VerifierHash,
};
use tower_httpsession::{
    MemoryStore, Session, SessionConfig, SessionError, SessionId, SessionLayer, SessionStore,
    StoreError,
};

/// The routes every HTTP test uses.
pub fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route("/untouched", get(|| async { "no session here" }))
        .route(
            "/get/{name}",
            get(|session: Session, Path(name): Path<String>| async move {
                let value: Option<serde_json::Value> = session.get(&name).await?;
                Ok::<_, SessionError>(value.map(|v| v.to_string()).unwrap_or_default())
            }),
        )
        .route(
            "/set/{name}/{value}",
            post(
                |session: Session, Path((name, value)): Path<(String, String)>| async move {
                    session.set(&name, &value).await?;
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route(
            "/read-set/{name}/{value}",
            post(
                |session: Session, Path((name, value)): Path<(String, String)>| async move {
                    let _: Option<serde_json::Value> = session.get(&name).await?;
                    session.set(&name, &value).await?;
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route(
            "/remove/{name}",
            post(|session: Session, Path(name): Path<String>| async move {
                Ok::<_, SessionError>(session.remove(&name).await?.to_string())
            }),
        )
        .route(
            "/incr/{name}",
            post(|session: Session, Path(name): Path<String>| async move {
                let n = session
                    .update(&name, |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await?;
                Ok::<_, SessionError>(n.to_string())
            }),
        )
        .route(
            "/names",
            get(|session: Session| async move {
                Ok::<_, SessionError>(session.attribute_names().await?.join(","))
            }),
        )
        .route(
            "/invalidate",
            post(|session: Session| async move {
                session.invalidate().await?;
                Ok::<_, SessionError>("bye")
            }),
        )
        .route(
            "/login/{user}",
            post(|session: Session, Path(user): Path<String>| async move {
                session.change_id().await?;
                session.set("user", &user).await?;
                Ok::<_, SessionError>("welcome")
            }),
        )
        .route(
            "/is_new",
            get(|session: Session| async move {
                Ok::<_, SessionError>(session.is_new().await?.to_string())
            }),
        )
        .layer(layer)
}

/// The test configuration: the cookie travels over plain HTTP.
pub fn config() -> SessionConfig {
    SessionConfig::default().with_insecure_cookie_over_http()
}

/// Serves `app` on a free loopback port.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    addr
}

/// A client that keeps cookies like a browser.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client")
}

/// A client that keeps no cookies: tests set the header themselves.
pub fn bare() -> reqwest::Client {
    reqwest::Client::builder().build().expect("client")
}

/// The `name=value` pair of the first `Set-Cookie`, if any.
pub fn set_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .map(|v| v.to_str().expect("ascii").to_owned())
}

/// The `name=value` part of a `Set-Cookie` header.
pub fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().expect("pair").to_owned()
}

/// Moves the stored session of `cookie` (a `name=value` pair) `by` into
/// the past: its creation, last access and expiry, through the store's own
/// API. The layer and the store compare these times with the clock, so to
/// them this is `by` passing, without a test waiting for it.
pub async fn rewind(store: &dyn SessionStore, cookie: &str, by: Duration) {
    let value = cookie.split_once('=').expect("a name=value pair").1;
    let key = SessionId::from_cookie_value(value)
        .expect("a session id")
        .store_key();
    let mut record = store
        .load(&key)
        .await
        .expect("load")
        .expect("the session is stored");
    record.created -= by;
    record.last_accessed -= by;
    record.expires_at -= by;
    store.delete(&key, &record.verifier).await.expect("delete");
    let created = store.create(&key, &record, None).await.expect("create");
    assert_eq!(created, Created::Stored);
}

/// A real memory store that counts the calls it gets.
#[derive(Debug, Default)]
pub struct Counting {
    pub inner: MemoryStore,
    pub loads: AtomicUsize,
    pub writes: AtomicUsize,
    /// Of `loads`, those that read the whole session.
    pub whole_loads: AtomicUsize,
    /// Of `writes`, the compare-and-sets.
    pub swaps: AtomicUsize,
    /// How long partial loads and compare-and-sets take, in microseconds,
    /// as over a network: lets concurrent requests interleave.
    pub latency_us: AtomicU64,
    /// While set, each compare-and-set (after it is counted) waits for a
    /// permit the test adds to `swap_permits`, one call per permit, so that
    /// the test can queue requests behind one.
    pub swaps_one_by_one: AtomicBool,
    pub swap_permits: Permits,
}

/// A semaphore that starts with no permit.
#[derive(Debug)]
pub struct Permits(pub tokio::sync::Semaphore);

impl Default for Permits {
    fn default() -> Self {
        Self(tokio::sync::Semaphore::new(0))
    }
}

impl Counting {
    async fn network(&self) {
        let us = self.latency_us.load(Ordering::SeqCst);
        if us > 0 {
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
    }

    pub fn counts(&self) -> (usize, usize) {
        (
            self.loads.load(Ordering::SeqCst),
            self.writes.load(Ordering::SeqCst),
        )
    }
}

#[async_trait]
impl SessionStore for Counting {
    fn backend(&self) -> &'static str {
        "counting-memory"
    }
    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.whole_loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(key).await
    }
    async fn load_some(
        &self,
        key: &StoreKey,
        names: &[&str],
    ) -> Result<Option<PartialRecord>, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.network().await;
        self.inner.load_some(key, names).await
    }
    async fn create(
        &self,
        key: &StoreKey,
        record: &Record,
        limit: Option<&SessionLimit>,
    ) -> Result<Created, StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.create(key, record, limit).await
    }
    async fn apply(&self, key: &StoreKey, changes: &ChangeSet) -> Result<Applied, StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.apply(key, changes).await
    }
    async fn compare_and_set(
        &self,
        key: &StoreKey,
        verifier: &VerifierHash,
        name: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<Swap, StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.swaps.fetch_add(1, Ordering::SeqCst);
        if self.swaps_one_by_one.load(Ordering::SeqCst) {
            self.swap_permits.0.acquire().await.expect("open").forget();
        }
        self.network().await;
        self.inner
            .compare_and_set(key, verifier, name, expected, new)
            .await
    }
    async fn delete(&self, key: &StoreKey, verifier: &VerifierHash) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(key, verifier).await
    }
    async fn health(&self) -> StoreHealth {
        self.inner.health().await
    }
}

pub fn counting() -> Arc<Counting> {
    Arc::new(Counting::default())
}

/// A memory store that can be switched off, failing as an unreachable
/// server does.
#[derive(Debug, Default)]
pub struct Switchable {
    pub inner: MemoryStore,
    pub down: AtomicBool,
}

impl Switchable {
    fn check(&self, operation: Operation) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            let cause =
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
            return Err(StoreError::new(
                "switchable",
                operation,
                StoreErrorKind::Unavailable,
                cause,
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl SessionStore for Switchable {
    fn backend(&self) -> &'static str {
        "switchable"
    }
    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.check(Operation::Load)?;
        self.inner.load(key).await
    }
    async fn create(
        &self,
        key: &StoreKey,
        record: &Record,
        limit: Option<&SessionLimit>,
    ) -> Result<Created, StoreError> {
        self.check(Operation::Create)?;
        self.inner.create(key, record, limit).await
    }
    async fn apply(&self, key: &StoreKey, changes: &ChangeSet) -> Result<Applied, StoreError> {
        self.check(Operation::Apply)?;
        self.inner.apply(key, changes).await
    }
    async fn compare_and_set(
        &self,
        key: &StoreKey,
        verifier: &VerifierHash,
        name: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<Swap, StoreError> {
        self.check(Operation::CompareAndSet)?;
        self.inner
            .compare_and_set(key, verifier, name, expected, new)
            .await
    }
    async fn delete(&self, key: &StoreKey, verifier: &VerifierHash) -> Result<(), StoreError> {
        self.check(Operation::Delete)?;
        self.inner.delete(key, verifier).await
    }
    async fn health(&self) -> StoreHealth {
        match self.check(Operation::Health) {
            Ok(()) => self.inner.health().await,
            Err(down) => StoreHealth::measure("switchable", async { Err(down) }).await,
        }
    }
}

/// What [`oneshot`] got back.
#[derive(Debug)]
pub struct Reply {
    pub status: http::StatusCode,
    /// The first `Set-Cookie`, whole.
    pub set_cookie: Option<String>,
    /// The `Location` header, if any.
    pub location: Option<String>,
    pub body: String,
}

/// Sends one request with `headers` through `app`, in process.
pub async fn oneshot(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(http::HeaderName, &str)],
) -> Reply {
    oneshot_with_body(app, method, uri, headers, "").await
}

/// As [`oneshot`], with a request body.
pub async fn oneshot_with_body(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(http::HeaderName, &str)],
    body: &str,
) -> Reply {
    use tower::ServiceExt as _;

    let mut request = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let response = app
        .clone()
        .oneshot(
            request
                .body(axum::body::Body::from(body.to_owned()))
                .expect("request"),
        )
        .await
        .expect("infallible");
    let status = response.status();
    let set_cookie = response
        .headers()
        .get(http::header::SET_COOKIE)
        .map(|v| v.to_str().expect("ascii").to_owned());
    let location = response
        .headers()
        .get(http::header::LOCATION)
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    Reply {
        status,
        set_cookie,
        location,
        body: String::from_utf8(body.to_vec()).expect("utf-8"),
    }
}

/// Everything a `tracing` subscriber writes, for tests that read the logs.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }
}
