//! Users, not only sessions, through the real layer: a login binds the
//! session to its principal, the principal's sessions are listed ("your
//! devices") and revoked from inside a request and from outside one, a
//! revocation stops requests already in flight, and the per-principal limit
//! holds under concurrent logins. Every check runs on every store.
#![allow(clippy::unwrap_used)]

mod common;
#[cfg(all(feature = "postgres", feature = "testing"))]
mod postgres_support;
#[cfg(all(feature = "redis", feature = "testing"))]
mod redis_support;

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode, header};
use tokio::sync::Notify;
use tower_httpsession::store::{Label, LimitPolicy, SessionLimit, SessionRef};
use tower_httpsession::{
    MemoryStore, Session, SessionConfig, SessionError, SessionLayer, SessionStore,
};

/// Where a held request stops: it says when it has read the session, and
/// waits to be let go.
#[derive(Default)]
struct Gate {
    loaded: Notify,
    go: Notify,
}

fn app(layer: SessionLayer, gate: Arc<Gate>) -> Router {
    Router::new()
        .route(
            "/login/{user}",
            post(
                |session: Session, headers: HeaderMap, Path(user): Path<String>| async move {
                    session.login(&user).await?;
                    let agent = headers
                        .get(header::USER_AGENT)
                        .and_then(|v| v.to_str().ok())
                        .and_then(Label::lossy);
                    if let Some(agent) = agent {
                        session.set_label(agent.as_str()).await?;
                    }
                    Ok::<_, SessionError>("welcome")
                },
            ),
        )
        .route(
            "/me",
            get(|session: Session| async move {
                let user = session.principal().await?;
                let cart: Option<Vec<String>> = session.get("cart").await?;
                Ok::<_, SessionError>(format!(
                    "{} {}",
                    user.unwrap_or_default(),
                    cart.unwrap_or_default().join(",")
                ))
            }),
        )
        .route(
            "/add/{item}",
            post(|session: Session, Path(item): Path<String>| async move {
                let cart = session
                    .update("cart", |cart: Option<Vec<String>>| {
                        let mut cart = cart.unwrap_or_default();
                        cart.push(item.clone());
                        cart
                    })
                    .await?;
                Ok::<_, SessionError>(cart.join(","))
            }),
        )
        .route(
            "/sessions",
            get(|session: Session| async move {
                let listed = session.principal_sessions().await?;
                let lines: Vec<String> = listed
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {} {}",
                            s.reference,
                            if s.current { "current" } else { "other" },
                            s.label.as_deref().unwrap_or("-")
                        )
                    })
                    .collect();
                Ok::<_, SessionError>(lines.join("\n"))
            }),
        )
        .route(
            "/sessions/{reference}/revoke",
            post(
                |session: Session, Path(reference): Path<String>| async move {
                    let Ok(reference) = reference.parse::<SessionRef>() else {
                        return Ok((
                            StatusCode::BAD_REQUEST,
                            "not a session reference".to_owned(),
                        ));
                    };
                    let revoked = session.revoke_session(&reference).await?;
                    Ok::<_, SessionError>((StatusCode::OK, revoked.to_string()))
                },
            ),
        )
        .route(
            "/sessions/revoke-others",
            post(|session: Session| async move {
                Ok::<_, SessionError>(session.revoke_other_sessions().await?.to_string())
            }),
        )
        .route(
            "/logout",
            post(|session: Session| async move {
                session.invalidate().await?;
                Ok::<_, SessionError>("bye")
            }),
        )
        .route(
            "/held",
            post(|session: Session| async move {
                let _: Option<Vec<String>> = session.get("cart").await?;
                gate.loaded.notify_one();
                gate.go.notified().await;
                session.set("cart", &vec!["evil"]).await?;
                Ok::<_, SessionError>("held")
            }),
        )
        .layer(layer)
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    cookie: Option<String>,
    removes_cookie: bool,
    body: String,
}

/// A browser: it keeps the cookie the app last set.
#[derive(Debug, Clone, Default)]
struct Browser {
    cookie: Option<String>,
    agent: Option<&'static str>,
}

impl Browser {
    fn with_agent(agent: &'static str) -> Self {
        Self {
            cookie: None,
            agent: Some(agent),
        }
    }

    async fn send(&mut self, app: &Router, method: &str, uri: &str) -> Answer {
        let answer = send(app, method, uri, self.cookie.as_deref(), self.agent).await;
        if answer.removes_cookie {
            self.cookie = None;
        }
        if let Some(cookie) = &answer.cookie {
            self.cookie = Some(cookie.clone());
        }
        answer
    }
}

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    cookie: Option<&str>,
    agent: Option<&str>,
) -> Answer {
    let mut headers = Vec::new();
    if let Some(cookie) = cookie {
        headers.push((header::COOKIE, cookie));
    }
    if let Some(agent) = agent {
        headers.push((header::USER_AGENT, agent));
    }
    let reply = common::oneshot(app, method, uri, &headers).await;
    let removes_cookie = reply
        .set_cookie
        .as_deref()
        .is_some_and(|c| c.contains("Max-Age=0"));
    let cookie = reply
        .set_cookie
        .filter(|_| !removes_cookie)
        .map(|c| c.split(';').next().unwrap().to_owned());
    Answer {
        status: reply.status,
        cookie,
        removes_cookie,
        body: reply.body,
    }
}

fn layer(store: &Arc<dyn SessionStore>, config: SessionConfig) -> SessionLayer {
    SessionLayer::with_config(store.clone(), config).unwrap()
}

fn unique(name: &str) -> String {
    let key = tower_httpsession::store::StoreKey::random().unwrap();
    format!("{name}-{}", &key.as_str()[..8])
}

/// A login changes the id and binds the principal in one write; the
/// pre-login cookie names nothing afterwards.
async fn login_binds_and_rotates(store: Arc<dyn SessionStore>) {
    let layer = layer(&store, common::config());
    let registry = layer.registry().unwrap();
    let app = app(layer, Arc::default());
    let alice = unique("alice");
    let mut browser = Browser::default();
    let added = browser.send(&app, "POST", "/add/teapot").await;
    assert_eq!(added.status, StatusCode::OK);
    let anonymous = browser.cookie.clone().unwrap();
    assert!(registry.sessions(&alice).await.unwrap().is_empty());

    let login = browser.send(&app, "POST", &format!("/login/{alice}")).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let logged_in = login.cookie.expect("a login sends a new cookie");
    assert_ne!(logged_in, anonymous, "the id changed");
    assert_eq!(
        browser.send(&app, "GET", "/me").await.body,
        format!("{alice} teapot"),
        "the cart survived the login"
    );
    let old = send(&app, "GET", "/me", Some(&anonymous), None).await;
    assert_eq!(old.body, " ", "the pre-login cookie names nothing");
    assert_eq!(registry.sessions(&alice).await.unwrap().len(), 1);
}

/// "Your devices": each device is listed once, this one marked, with the
/// label the app gave it; references are neither cookies nor keys.
async fn devices_are_listed_and_revoked(store: Arc<dyn SessionStore>) {
    let layer = layer(&store, common::config());
    let registry = layer.registry().unwrap();
    let app = app(layer, Arc::default());
    let alice = unique("alice");
    let bob = unique("bob");
    let mut laptop = Browser::with_agent("Firefox on Linux");
    let mut phone = Browser::with_agent("Safari on iPhone");
    let mut bobs = Browser::with_agent("Chrome");
    for (browser, user) in [
        (&mut laptop, &alice),
        (&mut phone, &alice),
        (&mut bobs, &bob),
    ] {
        let login = browser.send(&app, "POST", &format!("/login/{user}")).await;
        assert_eq!(login.status, StatusCode::OK);
    }
    let listed = laptop.send(&app, "GET", "/sessions").await.body;
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("current Firefox on Linux")),
        "{listed}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("other Safari on iPhone")),
        "{listed}"
    );
    let phone_ref = lines
        .iter()
        .find(|l| l.contains("Safari"))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_owned();
    for cookie in [&laptop.cookie, &phone.cookie] {
        let value = cookie.as_deref().unwrap().split_once('=').unwrap().1;
        assert!(!value.contains(&phone_ref), "a reference is not a cookie");
    }

    // Bob cannot revoke alice's phone, nor can a forged or malformed
    // reference revoke anything.
    let foreign = bobs
        .send(&app, "POST", &format!("/sessions/{phone_ref}/revoke"))
        .await;
    assert_eq!(
        (foreign.status, foreign.body.as_str()),
        (StatusCode::OK, "false")
    );
    let forged = laptop
        .send(&app, "POST", "/sessions/AAAAAAAAAAAAAAAAAAAAAA/revoke")
        .await;
    assert_eq!(forged.body, "false");
    let malformed = laptop.send(&app, "POST", "/sessions/nonsense/revoke").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(registry.sessions(&alice).await.unwrap().len(), 2);

    // The laptop signs the phone out.
    let revoked = laptop
        .send(&app, "POST", &format!("/sessions/{phone_ref}/revoke"))
        .await;
    assert_eq!(revoked.body, "true");
    assert_eq!(
        phone.send(&app, "GET", "/me").await.body,
        " ",
        "the phone is signed out"
    );
    let again = laptop
        .send(&app, "POST", &format!("/sessions/{phone_ref}/revoke"))
        .await;
    assert_eq!(again.body, "false", "already gone");
    assert_eq!(registry.sessions(&bob).await.unwrap().len(), 1);
}

/// "Sign out everywhere else" keeps this device only; logging out takes
/// the session out of the list.
async fn other_sessions_end_and_logout_leaves_the_list(store: Arc<dyn SessionStore>) {
    let layer = layer(&store, common::config());
    let registry = layer.registry().unwrap();
    let app = app(layer, Arc::default());
    let alice = unique("alice");
    let mut browsers = [Browser::default(), Browser::default(), Browser::default()];
    for browser in &mut browsers {
        browser.send(&app, "POST", &format!("/login/{alice}")).await;
        browser.send(&app, "POST", "/add/cup").await;
    }
    let ended = browsers[0]
        .send(&app, "POST", "/sessions/revoke-others")
        .await;
    assert_eq!(ended.body, "2");
    assert_eq!(
        browsers[0].send(&app, "GET", "/me").await.body,
        format!("{alice} cup")
    );
    for browser in &mut browsers[1..] {
        assert_eq!(browser.send(&app, "GET", "/me").await.body, " ");
    }
    assert_eq!(registry.sessions(&alice).await.unwrap().len(), 1);
    browsers[0].send(&app, "POST", "/logout").await;
    assert!(registry.sessions(&alice).await.unwrap().is_empty());
}

/// An administrator's "end every session" stops a request that read its
/// session before and writes after: it gets 409 and writes nothing.
async fn revocation_stops_requests_in_flight(store: Arc<dyn SessionStore>) {
    let layer = layer(&store, common::config());
    let registry = layer.registry().unwrap();
    let gate = Arc::new(Gate::default());
    let app = app(layer, gate.clone());
    let alice = unique("alice");
    let mut browser = Browser::default();
    browser.send(&app, "POST", &format!("/login/{alice}")).await;
    browser.send(&app, "POST", "/add/teapot").await;
    let cookie = browser.cookie.clone().unwrap();

    let held = tokio::spawn({
        let app = app.clone();
        async move { send(&app, "POST", "/held", Some(&cookie), None).await }
    });
    gate.loaded.notified().await;
    assert_eq!(registry.revoke_all(&alice).await.unwrap(), 1);
    gate.go.notify_one();
    let held = held.await.unwrap();
    assert_eq!(held.status, StatusCode::CONFLICT, "{}", held.body);
    assert!(held.removes_cookie);
    assert!(registry.sessions(&alice).await.unwrap().is_empty());
    assert_eq!(
        browser.send(&app, "GET", "/me").await.body,
        " ",
        "nothing came back"
    );
}

/// With a limit and the refusing policy, a login past it is answered 409
/// with words that say why; the browser keeps its anonymous session.
async fn refused_login_is_409(store: Arc<dyn SessionStore>) {
    let limit = SessionLimit::new(1, LimitPolicy::RefuseNewLogin).unwrap();
    let layer = layer(&store, common::config().with_session_limit(limit));
    let app = app(layer, Arc::default());
    let alice = unique("alice");
    let mut first = Browser::default();
    assert_eq!(
        first
            .send(&app, "POST", &format!("/login/{alice}"))
            .await
            .status,
        StatusCode::OK
    );
    let mut second = Browser::default();
    second.send(&app, "POST", "/add/spoon").await;
    let refused = second.send(&app, "POST", &format!("/login/{alice}")).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(
        refused.body.contains("most sessions allowed"),
        "{}",
        refused.body
    );
    assert!(!refused.removes_cookie);
    assert_eq!(second.send(&app, "GET", "/me").await.body, " spoon");
    assert_eq!(
        first.send(&app, "GET", "/me").await.body,
        format!("{alice} ")
    );
}

/// With a limit of two and eviction, the third login ends the least
/// recently used session at once.
async fn eviction_ends_the_least_recently_used(store: Arc<dyn SessionStore>) {
    let limit = SessionLimit::new(2, LimitPolicy::EvictLeastRecentlyUsed).unwrap();
    let layer = layer(&store, common::config().with_session_limit(limit));
    let app = app(layer, Arc::default());
    let alice = unique("alice");
    let mut browsers = [Browser::default(), Browser::default(), Browser::default()];
    for (i, browser) in browsers.iter_mut().enumerate() {
        browser.send(&app, "POST", &format!("/login/{alice}")).await;
        if i < 2 {
            // The first two sessions' last access moves into the past, the
            // first one furthest.
            let by = std::time::Duration::from_secs(600 - 60 * i as u64);
            common::rewind(&*store, browser.cookie.as_deref().unwrap(), by).await;
        }
    }
    assert_eq!(browsers[0].send(&app, "GET", "/me").await.body, " ");
    assert_eq!(
        browsers[1].send(&app, "GET", "/me").await.body,
        format!("{alice} ")
    );
    assert_eq!(
        browsers[2].send(&app, "GET", "/me").await.body,
        format!("{alice} ")
    );
}

/// 64 browsers log in as one user at once with a limit of one, twenty
/// times per policy: exactly one of them is logged in afterwards.
async fn simultaneous_logins_leave_exactly_the_limit(store: Arc<dyn SessionStore>) {
    for policy in [
        LimitPolicy::EvictLeastRecentlyUsed,
        LimitPolicy::RefuseNewLogin,
    ] {
        let limit = SessionLimit::new(1, policy).unwrap();
        let layer = layer(&store, common::config().with_session_limit(limit));
        let registry = layer.registry().unwrap();
        let app = app(layer, Arc::default());
        for round in 0..20 {
            let alice = unique("alice");
            let logins = (0..64).map(|_| {
                let app = app.clone();
                let alice = alice.clone();
                tokio::spawn(async move {
                    let mut browser = Browser::default();
                    let answer = browser.send(&app, "POST", &format!("/login/{alice}")).await;
                    assert!(
                        [StatusCode::OK, StatusCode::CONFLICT].contains(&answer.status),
                        "{answer:?}"
                    );
                    browser
                })
            });
            let mut browsers = Vec::new();
            for login in logins.collect::<Vec<_>>() {
                browsers.push(login.await.unwrap());
            }
            let mut logged_in = 0;
            for browser in &mut browsers {
                if browser.cookie.is_some()
                    && browser.send(&app, "GET", "/me").await.body == format!("{alice} ")
                {
                    logged_in += 1;
                }
            }
            assert_eq!(
                logged_in, 1,
                "{policy:?}, round {round}: {logged_in} logged in"
            );
            assert_eq!(registry.sessions(&alice).await.unwrap().len(), 1);
        }
    }
}

/// Principal names and labels out of bounds are 400, never a panic.
async fn bad_names_are_400(store: Arc<dyn SessionStore>) {
    let app = app(layer(&store, common::config()), Arc::default());
    let mut browser = Browser::default();
    let long = "x".repeat(300);
    let answer = browser.send(&app, "POST", &format!("/login/{long}")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.body.contains("at most 256 bytes"), "{}", answer.body);
    let answer = browser.send(&app, "POST", "/login/al%0Aice").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        !answer.body.contains("ice"),
        "the name is not echoed: {}",
        answer.body
    );
}

async fn every_check(store: Arc<dyn SessionStore>) {
    login_binds_and_rotates(store.clone()).await;
    devices_are_listed_and_revoked(store.clone()).await;
    other_sessions_end_and_logout_leaves_the_list(store.clone()).await;
    revocation_stops_requests_in_flight(store.clone()).await;
    refused_login_is_409(store.clone()).await;
    eviction_ends_the_least_recently_used(store.clone()).await;
    simultaneous_logins_leave_exactly_the_limit(store.clone()).await;
    bad_names_are_400(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    every_check(Arc::new(MemoryStore::default())).await;
}

#[cfg(all(feature = "redis", feature = "testing"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    let store = redis_support::clean_store("principals").await;
    every_check(Arc::new(store)).await;
}

#[cfg(all(feature = "redis", feature = "testing"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster() {
    let cluster = tokio::task::spawn_blocking(redis_support::Cluster::shared)
        .await
        .unwrap();
    let store = tower_httpsession::store::redis::RedisStore::builder_for_cluster(cluster.urls())
        .with_key_prefix(redis_support::unique_prefix("principals"))
        .with_command_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    every_check(Arc::new(store)).await;
}

#[cfg(all(feature = "postgres", feature = "testing"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let store = postgres_support::suite_store().await;
    every_check(Arc::new(store)).await;
}

/// 10,000 logins of one user whose sessions expire leave the memory
/// store's index no bigger than the limit, or, without a limit, than the
/// live sessions: nothing grows with the number of logins.
#[cfg(feature = "testing")]
#[tokio::test]
async fn memory_index_stays_bounded_over_login_expire_cycles() {
    use std::time::Duration;
    use tower_httpsession::store::Created;
    use tower_httpsession::store::testing::{fresh_key, fresh_principal, record};

    for limit in [
        Some(SessionLimit::new(3, LimitPolicy::EvictLeastRecentlyUsed).unwrap()),
        Some(SessionLimit::new(3, LimitPolicy::RefuseNewLogin).unwrap()),
        None,
    ] {
        let store = MemoryStore::default();
        let alice = fresh_principal();
        for cycle in 0..10_000 {
            let (id, key) = fresh_key();
            // Already expired when stored: as if it expired right after.
            let mut rec = record(&id, Duration::from_secs(1), &[("a", "1")])
                .with_principal(Some(alice.clone()));
            rec.expires_at -= Duration::from_secs(2);
            let created = store.create(&key, &rec, limit.as_ref()).await.unwrap();
            assert_eq!(created, Created::Stored, "{limit:?}, cycle {cycle}");
            if cycle % 1_000 == 999 {
                // With a limit, the limit; without one, the pruning floor.
                let bound = if limit.is_some() { 3 } else { 16 };
                let held = store.principal_index_len(&alice);
                assert!(
                    held <= bound,
                    "{limit:?}: {held} entries after {} cycles",
                    cycle + 1
                );
            }
        }
    }
}

/// A store that keeps no principal index is refused when the layer is
/// built with a limit or a declared index, and a registry over it is
/// refused; a login on it fails with a message that says why.
#[cfg(feature = "tower-sessions")]
#[tokio::test]
async fn stores_without_an_index_are_refused_up_front() {
    use tower_httpsession::store::tower_sessions::TowerSessionsStore;
    use tower_httpsession::{ConfigError, SessionRegistry};

    let adapter = || TowerSessionsStore::new(tower_sessions_memory_store::MemoryStore::default());
    let limit = SessionLimit::new(2, LimitPolicy::RefuseNewLogin).unwrap();
    for config in [
        common::config().with_session_limit(limit),
        common::config().with_principal_index(),
    ] {
        let refused = SessionLayer::with_config(adapter(), config).unwrap_err();
        assert!(matches!(refused, ConfigError::PrincipalsUnsupported { .. }));
        assert!(
            refused.to_string().contains("keeps no principal index"),
            "{refused}"
        );
    }
    assert!(matches!(
        SessionRegistry::new(adapter()),
        Err(SessionError::PrincipalsUnsupported { .. })
    ));
    let app = app(
        SessionLayer::with_config(adapter(), common::config()).unwrap(),
        Arc::default(),
    );
    let answer = send(&app, "POST", "/login/alice", None, None).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
}
