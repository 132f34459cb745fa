//! Random sequences of session operations from several browsers, driven
//! through the real layer and checked after every step against a model that
//! is a map per browser. The store comes from a factory, so the same property
//! runs against every store.
//!
//! What it catches: a lost or resurrected attribute, a session that leaks
//! into another browser, an old cookie that still works after `change_id`,
//! `invalidate` or expiry, a cookie sent or kept when it should not be.

mod common;
#[cfg(all(feature = "postgres", feature = "testing"))]
mod postgres_support;
#[cfg(all(feature = "redis", feature = "testing"))]
mod redis_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, post};
use http::{Request, StatusCode, header};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::sync::Notify;
use tower::ServiceExt as _;
use tower_httpsession::store::{Created, now};
use tower_httpsession::{
    MemoryStore, Session, SessionError, SessionId, SessionLayer, SessionStore,
};

const NAMES: [&str; 3] = ["a", "b", "c"];
const CLIENTS: usize = 3;
const ABSOLUTE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
enum Op {
    Set {
        client: usize,
        name: usize,
        value: u8,
    },
    Remove {
        client: usize,
        name: usize,
    },
    Update {
        client: usize,
        name: usize,
    },
    Invalidate {
        client: usize,
    },
    ChangeId {
        client: usize,
    },
    /// The session passes its absolute timeout (its creation time is moved
    /// back in the store).
    Expire {
        client: usize,
    },
    /// A browser replays a cookie that must be dead.
    Replay {
        which: usize,
    },
    /// A request of `client` reads attribute `name`, and is held there while
    /// the same browser changes the session's id (`rotate`) or invalidates
    /// it; then it writes `name` (with `update` or `set`). The write must
    /// not land in the session, and its response must say so.
    InFlight {
        client: usize,
        name: usize,
        update: bool,
        rotate: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..CLIENTS;
    let name = 0..NAMES.len();
    prop_oneof![
        4 => (client.clone(), name.clone(), 0u8..4)
            .prop_map(|(client, name, value)| Op::Set { client, name, value }),
        2 => (client.clone(), name.clone()).prop_map(|(client, name)| Op::Remove { client, name }),
        2 => (client.clone(), name.clone()).prop_map(|(client, name)| Op::Update { client, name }),
        1 => client.clone().prop_map(|client| Op::Invalidate { client }),
        1 => client.clone().prop_map(|client| Op::ChangeId { client }),
        1 => client.clone().prop_map(|client| Op::Expire { client }),
        1 => any::<usize>().prop_map(|which| Op::Replay { which }),
        2 => (client, name, any::<bool>(), any::<bool>()).prop_map(|(client, name, update, rotate)| {
            Op::InFlight { client, name, update, rotate }
        }),
    ]
}

/// Where an in-flight request is held: it says when it has read the
/// session, and waits to be let go.
#[derive(Default)]
struct Gate {
    loaded: Notify,
    go: Notify,
}

fn app(store: Arc<dyn SessionStore>, gate: Arc<Gate>) -> Router {
    let config = common::config().with_absolute_timeout(ABSOLUTE);
    let layer = SessionLayer::with_config(store, config).expect("config");
    Router::new()
        .route(
            "/held/{name}/{how}",
            post(
                |session: Session, Path((name, how)): Path<(String, String)>| async move {
                    let _: Option<u64> = session.get(&name).await?;
                    gate.loaded.notify_one();
                    gate.go.notified().await;
                    if how == "update" {
                        session
                            .update(&name, |n: Option<u64>| n.map_or(1, |n| n + 1))
                            .await?;
                    } else {
                        session.set(&name, &9u64).await?;
                    }
                    Ok::<_, SessionError>("")
                },
            ),
        )
        .route(
            "/set/{name}/{value}",
            post(
                |session: Session, Path((name, value)): Path<(String, u64)>| async move {
                    session.set(&name, &value).await?;
                    Ok::<_, SessionError>("")
                },
            ),
        )
        .route(
            "/remove/{name}",
            post(|session: Session, Path(name): Path<String>| async move {
                session.remove(&name).await?;
                Ok::<_, SessionError>("")
            }),
        )
        .route(
            "/update/{name}",
            post(|session: Session, Path(name): Path<String>| async move {
                session
                    .update(&name, |n: Option<u64>| n.map_or(1, |n| n + 1))
                    .await?;
                Ok::<_, SessionError>("")
            }),
        )
        .route(
            "/invalidate",
            post(|session: Session| async move {
                session.invalidate().await?;
                Ok::<_, SessionError>("")
            }),
        )
        .route(
            "/change_id",
            post(|session: Session| async move {
                session.change_id().await?;
                Ok::<_, SessionError>("")
            }),
        )
        .route(
            "/state",
            get(|session: Session| async move {
                let mut state = BTreeMap::new();
                for name in session.attribute_names().await? {
                    let value: u64 = session.get(&name).await?.expect("a listed attribute");
                    state.insert(name, value);
                }
                Ok::<_, SessionError>(serde_json::to_string(&state).expect("json"))
            }),
        )
        .layer(layer)
}

/// One browser: the cookie it holds and what its session must contain
/// (`None`: no stored session).
#[derive(Debug, Default)]
struct Browser {
    cookie: Option<String>,
    session: Option<BTreeMap<String, u64>>,
}

/// What a response did to the browser's cookie.
#[derive(Debug, PartialEq, Eq)]
enum CookieChange {
    None,
    Set(String),
    Removed,
}

struct World {
    app: Router,
    gate: Arc<Gate>,
    store: Arc<dyn SessionStore>,
    browsers: Vec<Browser>,
    /// Cookies that must never open a session again.
    dead: Vec<String>,
}

impl World {
    async fn send(&mut self, client: usize, method: &str, uri: &str) -> (CookieChange, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(cookie) = &self.browsers[client].cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let (status, change, body) = exchange_any(self.app.clone(), request).await;
        assert_eq!(status, StatusCode::OK, "{method} {uri}");
        self.see(client, &change);
        (change, body)
    }

    /// What a response's cookie does to the browser.
    fn see(&mut self, client: usize, change: &CookieChange) {
        match change {
            CookieChange::Set(pair) => self.browsers[client].cookie = Some(pair.clone()),
            CookieChange::Removed => self.browsers[client].cookie = None,
            CookieChange::None => {}
        }
    }

    /// Checks every browser's view against the model.
    async fn check(&mut self, after: &Op) {
        for client in 0..self.browsers.len() {
            let had_cookie = self.browsers[client].cookie.clone();
            let (change, body) = self.send(client, "GET", "/state").await;
            let seen: BTreeMap<String, u64> = serde_json::from_str(&body).expect("json");
            let expected = self.browsers[client].session.clone().unwrap_or_default();
            assert_eq!(seen, expected, "browser {client} after {after:?}");
            match (&self.browsers[client].session, had_cookie) {
                (Some(_), _) => assert_eq!(change, CookieChange::None, "after {after:?}"),
                (None, Some(_)) => assert_eq!(change, CookieChange::Removed, "after {after:?}"),
                (None, None) => assert_eq!(change, CookieChange::None, "after {after:?}"),
            }
            if self.browsers[client].session.is_some() {
                assert!(self.browsers[client].cookie.is_some(), "after {after:?}");
            }
        }
    }

    fn bury(&mut self, client: usize) {
        if let Some(cookie) = &self.browsers[client].cookie {
            self.dead.push(cookie.clone());
        }
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::Set {
                client,
                name,
                value,
            } => {
                let uri = format!("/set/{}/{value}", NAMES[name]);
                let (change, _) = self.send(client, "POST", &uri).await;
                let value = u64::from(value);
                self.write(client, change, |s| {
                    s.insert(NAMES[name].to_owned(), value);
                });
            }
            Op::Update { client, name } => {
                let uri = format!("/update/{}", NAMES[name]);
                let (change, _) = self.send(client, "POST", &uri).await;
                self.write(client, change, |s| {
                    *s.entry(NAMES[name].to_owned()).or_insert(0) += 1;
                });
            }
            Op::Remove { client, name } => {
                let had_cookie = self.browsers[client].cookie.is_some();
                let uri = format!("/remove/{}", NAMES[name]);
                let (change, _) = self.send(client, "POST", &uri).await;
                match &mut self.browsers[client].session {
                    Some(session) => {
                        session.remove(NAMES[name]);
                        assert_eq!(change, CookieChange::None);
                    }
                    None if had_cookie => assert_eq!(change, CookieChange::Removed),
                    None => assert_eq!(change, CookieChange::None),
                }
            }
            Op::Invalidate { client } => {
                self.bury(client);
                let (change, _) = self.send(client, "POST", "/invalidate").await;
                assert_eq!(change, CookieChange::Removed);
                self.browsers[client].session = None;
            }
            Op::ChangeId { client } => {
                let old = self.browsers[client].cookie.clone();
                let (change, _) = self.send(client, "POST", "/change_id").await;
                match (&self.browsers[client].session, old) {
                    (Some(_), Some(old)) => {
                        let CookieChange::Set(new) = change else {
                            panic!("change_id sent no new cookie: {change:?}");
                        };
                        assert_ne!(new, old);
                        self.dead.push(old);
                    }
                    (None, Some(_)) => assert_eq!(change, CookieChange::Removed),
                    (None, None) => assert_eq!(change, CookieChange::None),
                    (Some(_), None) => unreachable!("a stored session without a cookie"),
                }
            }
            Op::Expire { client } => {
                if self.browsers[client].session.take().is_some() {
                    let cookie = self.browsers[client].cookie.clone().expect("a cookie");
                    self.age(&cookie).await;
                    self.dead.push(cookie);
                }
            }
            Op::InFlight {
                client,
                name,
                update,
                rotate,
            } => self.in_flight(client, name, update, rotate).await,
            Op::Replay { which } => {
                if self.dead.is_empty() {
                    return;
                }
                let cookie = self.dead[which % self.dead.len()].clone();
                let request = Request::get("/state").header(header::COOKIE, &cookie);
                let (change, body) = exchange(&self.app, request).await;
                assert_eq!(body, "{}", "a dead cookie opened a session");
                assert_eq!(change, CookieChange::Removed);
            }
        }
    }

    /// Runs [`Op::InFlight`].
    async fn in_flight(&mut self, client: usize, name: usize, update: bool, rotate: bool) {
        let how = if update { "update" } else { "set" };
        let mut request = Request::post(format!("/held/{}/{how}", NAMES[name]));
        if let Some(cookie) = &self.browsers[client].cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let held = tokio::spawn(exchange_any(self.app.clone(), request));
        self.gate.loaded.notified().await;
        let had_session = self.browsers[client].session.is_some();
        // Setting the value the request read is no change: nothing to write,
        // nothing to refuse.
        let no_change = !update
            && self.browsers[client]
                .session
                .as_ref()
                .is_some_and(|s| s.get(NAMES[name]) == Some(&9));
        let ending = if rotate {
            Op::ChangeId { client }
        } else {
            Op::Invalidate { client }
        };
        Box::pin(self.apply(&ending)).await;
        // The session the held request read, as it is now: rotated (under
        // the browser's new cookie) or gone.
        let live = self.browsers[client].cookie.clone();
        self.gate.go.notify_one();
        let (status, change, _) = held.await.expect("held request");
        if no_change {
            assert_eq!((status, change), (StatusCode::OK, CookieChange::None));
        } else if had_session {
            assert_eq!(
                status,
                StatusCode::CONFLICT,
                "the held write claimed success"
            );
            assert_eq!(
                change,
                CookieChange::Removed,
                "the held write kept its cookie"
            );
            if let (true, Some(cookie)) = (rotate, live) {
                // The rotated session is intact; the browser, told to drop
                // its cookie, no longer holds it.
                let request = Request::get("/state").header(header::COOKIE, &cookie);
                let (status, _, body) = exchange_any(self.app.clone(), request).await;
                assert_eq!(status, StatusCode::OK);
                let seen: BTreeMap<String, u64> = serde_json::from_str(&body).expect("json");
                let expected = self.browsers[client].session.clone().unwrap_or_default();
                assert_eq!(seen, expected, "the held write landed after the id changed");
            }
            self.see(client, &change);
            self.browsers[client].session = None;
        } else {
            // The held request had no stored session: nobody else knew it,
            // so its write starts one.
            assert_eq!(status, StatusCode::OK);
            self.see(client, &change);
            self.write(client, change, |s| {
                s.insert(NAMES[name].to_owned(), if update { 1 } else { 9 });
            });
        }
    }

    /// Records a write: a browser without a session gets a new one, and its
    /// cookie with it.
    fn write(
        &mut self,
        client: usize,
        change: CookieChange,
        f: impl FnOnce(&mut BTreeMap<String, u64>),
    ) {
        let browser = &mut self.browsers[client];
        match &mut browser.session {
            Some(session) => {
                f(session);
                assert_eq!(
                    change,
                    CookieChange::None,
                    "an existing session re-sent its cookie"
                );
            }
            None => {
                let mut session = BTreeMap::new();
                f(&mut session);
                browser.session = Some(session);
                let CookieChange::Set(pair) = change else {
                    panic!("a new session sent no cookie: {change:?}");
                };
                assert!(!self.dead.contains(&pair), "a dead cookie was issued again");
            }
        }
    }

    /// Moves the session's creation time back past the absolute timeout,
    /// through the store's own API, as time passing would.
    async fn age(&self, cookie: &str) {
        let value = cookie.split_once('=').expect("pair").1;
        let key = SessionId::from_cookie_value(value).expect("id").store_key();
        let mut record = self
            .store
            .load(&key)
            .await
            .expect("load")
            .expect("the session is stored");
        record.created = now() - ABSOLUTE - Duration::from_secs(1);
        record.last_accessed = now();
        record.expires_at = now() + Duration::from_secs(600);
        self.store
            .delete(&key, &record.verifier)
            .await
            .expect("delete");
        let created = self
            .store
            .create(&key, &record, None)
            .await
            .expect("create");
        assert_eq!(created, Created::Stored);
    }
}

async fn exchange(app: &Router, request: http::request::Builder) -> (CookieChange, String) {
    let (status, change, body) = exchange_any(app.clone(), request).await;
    assert_eq!(status, StatusCode::OK);
    (change, body)
}

async fn exchange_any(
    app: Router,
    request: http::request::Builder,
) -> (StatusCode, CookieChange, String) {
    let response = app
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let cookies: Vec<String> = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect();
    assert!(cookies.len() <= 1, "{cookies:?}");
    let change = match cookies.first() {
        None => CookieChange::None,
        Some(c) if c.contains("Max-Age=0") => CookieChange::Removed,
        Some(c) => CookieChange::Set(c.split(';').next().expect("pair").to_owned()),
    };
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    (
        status,
        change,
        String::from_utf8(body.to_vec()).expect("utf-8"),
    )
}

async fn run(store: Arc<dyn SessionStore>, ops: Vec<Op>) {
    let gate = Arc::new(Gate::default());
    let mut world = World {
        app: app(store.clone(), gate.clone()),
        gate,
        store,
        browsers: (0..CLIENTS).map(|_| Browser::default()).collect(),
        dead: Vec::new(),
    };
    for op in &ops {
        world.apply(op).await;
        world.check(op).await;
    }
    // Every dead cookie stays dead at the end.
    for which in 0..world.dead.len() {
        world.apply(&Op::Replay { which }).await;
    }
}

/// Runs the property against stores `make` builds, one per case.
fn check<F, Fut>(cases: u32, make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn SessionStore>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        runtime.block_on(async {
            let store = make().await;
            run(store, ops).await;
        });
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

#[test]
fn memory_store_matches_the_model() {
    check(256, || async {
        Arc::new(MemoryStore::new(10_000)) as Arc<dyn SessionStore>
    });
}

/// A factory that builds one store on first use, inside the property's own
/// runtime, and hands out that store to every case: keys are random, so
/// cases do not meet. `keep` lives as long as the factory (a schema guard,
/// say) and is dropped with it.
#[cfg(all(feature = "testing", any(feature = "postgres", feature = "redis")))]
fn shared<K, F, Fut>(
    build: F,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Arc<dyn SessionStore>>>>
where
    K: 'static,
    F: Fn() -> Fut + Clone + 'static,
    Fut: Future<Output = (Arc<dyn SessionStore>, K)> + 'static,
{
    let cell: Arc<tokio::sync::OnceCell<(Arc<dyn SessionStore>, K)>> = Arc::default();
    move || {
        let cell = cell.clone();
        let build = build.clone();
        Box::pin(async move { cell.get_or_init(build).await.0.clone() })
    }
}

#[cfg(all(feature = "postgres", feature = "testing"))]
#[test]
fn postgres_store_matches_the_model() {
    check(
        64,
        shared(|| async {
            let (store, schema) = postgres_support::store().await;
            (Arc::new(store) as Arc<dyn SessionStore>, schema)
        }),
    );
}

#[cfg(all(feature = "redis", feature = "testing"))]
#[test]
fn redis_store_matches_the_model() {
    check(
        64,
        shared(|| async {
            let store = redis_support::clean_store("property").await;
            let shared = Arc::new(store.store().clone()) as Arc<dyn SessionStore>;
            (shared, store)
        }),
    );
}
