//! No secret in the logs: every `tracing` event at every level, captured
//! while sessions are created, rotated, forged, ended, refused and failed,
//! holds no cookie value, no store key and no health token.
//!
//! The tests share one global subscriber and its buffer; each looks for its
//! own secrets only.
#![cfg(feature = "health")]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path};
use axum::routing::{get, post};
use common::{Captured, Switchable};
use http::{Request, StatusCode, header};
use tower::ServiceExt as _;
use tower_httpsession::health::{Acl, Health};
use tower_httpsession::{
    Session, SessionConfig, SessionError, SessionId, SessionLayer, SessionStore,
};

mod common;
#[cfg(all(feature = "postgres", feature = "testing"))]
mod postgres_support;
#[cfg(all(feature = "redis", feature = "testing"))]
mod redis_support;

const TOKEN: &str = "log-test-token-0123456789abcdef";

impl Captured {
    /// The buffer of the global TRACE subscriber, installed on first use.
    fn global() -> Self {
        static CAPTURED: OnceLock<Captured> = OnceLock::new();
        CAPTURED
            .get_or_init(|| {
                let captured = Captured::default();
                let writer = captured.clone();
                tracing_subscriber::fmt()
                    .with_max_level(tracing::Level::TRACE)
                    .with_ansi(false)
                    .with_writer(move || writer.clone())
                    .init();
                captured
            })
            .clone()
    }
}

fn app(store: Arc<Switchable>) -> Router {
    routes(store)
}

/// The routes over any store, with the health endpoints behind an ACL.
fn routes(store: Arc<dyn SessionStore>) -> Router {
    let config = SessionConfig::default()
        .with_insecure_cookie_over_http()
        .with_max_attribute_bytes(1024);
    let layer = SessionLayer::with_config(store.clone(), config).expect("config");
    let acl = Acl::builder()
        .with_allowed_network("10.0.0.0/8")
        .with_bearer_token(TOKEN)
        .build()
        .expect("acl");
    let health = Health::builder(store)
        .with_acl(acl)
        .build()
        .expect("health");
    Router::new()
        .route(
            "/login/{user}",
            post(|session: Session, Path(user): Path<String>| async move {
                session.change_id().await?;
                session.set("user", &user).await?;
                Ok::<_, SessionError>("welcome")
            }),
        )
        .route(
            "/user",
            get(|session: Session| async move {
                let user: Option<String> = session.get("user").await?;
                Ok::<_, SessionError>(user.unwrap_or_default())
            }),
        )
        .route(
            "/incr",
            post(|session: Session| async move {
                let n = session
                    .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await?;
                Ok::<_, SessionError>(n.to_string())
            }),
        )
        .route(
            "/blob",
            post(|session: Session| async move {
                session.set("blob", &"x".repeat(4096)).await?;
                Ok::<_, SessionError>("stored")
            }),
        )
        .route(
            "/typed",
            get(|session: Session| async move {
                let n: Option<u64> = session.get("user").await?;
                Ok::<_, SessionError>(n.unwrap_or_default().to_string())
            }),
        )
        .route(
            "/bind/{user}",
            post(|session: Session, Path(user): Path<String>| async move {
                session.login(&user).await?;
                session.set_label(&format!("device of {user}")).await?;
                Ok::<_, SessionError>("bound")
            }),
        )
        .route(
            "/devices",
            get(|session: Session| async move {
                let listed = session.principal_sessions().await?;
                let ended = session.revoke_other_sessions().await?;
                Ok::<_, SessionError>(format!("{} {ended}", listed.len()))
            }),
        )
        .route(
            "/logout",
            post(|session: Session| async move {
                session.invalidate().await?;
                Ok::<_, SessionError>("bye")
            }),
        )
        .layer(layer)
        .route("/unlayered", get(|_: Session| async { "never" }))
        .merge(health.router())
}

struct Exchange {
    status: StatusCode,
    cookies: Vec<String>,
}

async fn call(app: &Router, method: &str, uri: &str, headers: &[(&str, &str)]) -> Exchange {
    call_with(app, method, uri, headers, "").await
}

async fn call_with(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Exchange {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::from(body)).expect("request");
    let peer = SocketAddr::from(([203, 0, 113, 9], 4000));
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = app.clone().oneshot(request).await.expect("infallible");
    let cookies = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|c| !c.contains("Max-Age=0"))
        .map(|c| c.split(';').next().unwrap_or_default().to_owned())
        .collect();
    Exchange {
        status: response.status(),
        cookies,
    }
}

#[tokio::test]
async fn no_session_id_or_token_reaches_the_logs() {
    let captured = Captured::global();
    let store = Arc::new(Switchable::default());
    let app = app(store.clone());
    let mut secrets: Vec<String> = vec![TOKEN.to_owned()];
    let mut remember = |exchange: &Exchange| {
        for pair in &exchange.cookies {
            secrets.push(pair.split_once('=').expect("pair").1.to_owned());
        }
        exchange.cookies.first().map(|c| c.to_owned())
    };

    // Log in, read, rotate: the old cookie turns stale.
    let first = call(&app, "POST", "/login/alice", &[]).await;
    let alice = remember(&first).expect("a cookie");
    call(&app, "GET", "/user", &[("cookie", &alice)]).await;
    call(&app, "POST", "/incr", &[("cookie", &alice)]).await;
    let rotated = call(&app, "POST", "/login/alice", &[("cookie", &alice)]).await;
    let alice2 = remember(&rotated).expect("a rotated cookie");
    assert_eq!(
        call(&app, "GET", "/user", &[("cookie", &alice)])
            .await
            .status,
        StatusCode::OK
    );

    // Forged, unknown and malformed cookies.
    let unknown = format!(
        "SESSION={}",
        SessionId::generate().expect("rng").expose_cookie_value()
    );
    secrets.push(unknown["SESSION=".len()..].to_owned());
    let value2 = &alice2["SESSION=".len()..];
    let forged = format!("SESSION={}{}", &value2[..22], "A".repeat(42));
    secrets.push(forged["SESSION=".len()..].to_owned());
    for cookie in [unknown.as_str(), forged.as_str(), "SESSION=%%%", "SESSION="] {
        call(&app, "GET", "/user", &[("cookie", cookie)]).await;
        call(&app, "POST", "/logout", &[("cookie", cookie)]).await;
    }

    // Errors the handler sees: too large, wrong type, missing layer.
    let blob = call(&app, "POST", "/blob", &[("cookie", &alice2)]).await;
    assert_eq!(blob.status, StatusCode::PAYLOAD_TOO_LARGE);
    let typed = call(&app, "GET", "/typed", &[("cookie", &alice2)]).await;
    assert_eq!(typed.status, StatusCode::INTERNAL_SERVER_ERROR);
    call(&app, "GET", "/unlayered", &[("cookie", &alice2)]).await;

    // The store goes down and comes back.
    store.down.store(true, Ordering::SeqCst);
    for (method, uri) in [
        ("GET", "/user"),
        ("POST", "/incr"),
        ("POST", "/login/bob"),
        ("POST", "/logout"),
    ] {
        let failed = call(&app, method, uri, &[("cookie", &alice2)]).await;
        assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
    }
    let fresh = call(&app, "POST", "/login/carol", &[]).await;
    assert_eq!(fresh.status, StatusCode::SERVICE_UNAVAILABLE);
    let bearer = format!("Bearer {TOKEN}");
    call(
        &app,
        "GET",
        "/actuator/health",
        &[("authorization", &bearer)],
    )
    .await;
    store.down.store(false, Ordering::SeqCst);

    // Log out; replay the dead cookie.
    call(&app, "POST", "/logout", &[("cookie", &alice2)]).await;
    call(&app, "GET", "/user", &[("cookie", &alice2)]).await;

    // The health toggle: wrong token, right token, details.
    let json = ("content-type", "application/json");
    call(
        &app,
        "PUT",
        "/actuator/health",
        &[json, ("authorization", "Bearer wrong-wrong-wrong-wrong")],
    )
    .await;
    call(
        &app,
        "PUT",
        "/actuator/health",
        &[json, ("authorization", &format!("Bearer {TOKEN}x"))],
    )
    .await;
    call(
        &app,
        "PUT",
        "/actuator/health",
        &[json, ("authorization", &bearer)],
    )
    .await;
    call(
        &app,
        "GET",
        "/actuator/health",
        &[("authorization", &bearer)],
    )
    .await;

    let logs = captured.text();
    // The capture works, at every level this drove.
    for expected in [
        "ERROR",
        "WARN",
        "DEBUG",
        "session error",
        "verifier does not match",
    ] {
        assert!(
            logs.contains(expected),
            "{expected:?} not captured:\n{logs}"
        );
    }
    let mut keys = Vec::new();
    for secret in &secrets {
        if let Some(id) = SessionId::from_cookie_value(secret) {
            keys.push(id.store_key().as_str().to_owned());
            // The verifier half on its own, as base64url.
            keys.push(secret[22..].to_owned());
        }
    }
    assert!(secrets.len() >= 5, "{secrets:?}");
    for secret in secrets.iter().chain(&keys) {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret reached the logs: {secret}\n{logs}"
        );
    }
}

/// A value kept in a session (a CSRF token, an access token, an e-mail
/// address) must not be quoted into the log when a handler reads it as the
/// wrong type.
#[tokio::test]
async fn attribute_values_do_not_reach_the_logs() {
    let captured = Captured::global();
    let store = Arc::new(Switchable::default());
    let app = app(store);
    let secret = "csrf-6f1d0c9a4b7e42d8a3c5e9f0b1d2c3a4";
    let login = call(&app, "POST", &format!("/login/{secret}"), &[]).await;
    let cookie = login.cookies.first().expect("a cookie").clone();
    let typed = call(&app, "GET", "/typed", &[("cookie", &cookie)]).await;
    assert_eq!(typed.status, StatusCode::INTERNAL_SERVER_ERROR);
    let logs = captured.text();
    assert!(logs.contains("could not be deserialized"), "{logs}");
    assert!(
        !logs.contains(secret),
        "an attribute value reached the logs:\n{logs}"
    );
}

/// Principal names and labels are personal data: a login that binds one,
/// the devices list, a revocation, a refused name, and every store call on
/// the way log neither, at any level.
#[tokio::test]
async fn principal_names_and_labels_do_not_reach_the_logs() {
    let captured = Captured::global();
    let app = routes(Arc::new(tower_httpsession::MemoryStore::default()));
    let name = "alice-7c1e4b2a9d0f@example.com";
    let mut cookies = Vec::new();
    for _ in 0..2 {
        let bound = call(&app, "POST", &format!("/bind/{name}"), &[]).await;
        assert_eq!(bound.status, StatusCode::OK);
        cookies.push(bound.cookies.first().expect("a cookie").clone());
    }
    let devices = call(&app, "GET", "/devices", &[("cookie", &cookies[0])]).await;
    assert_eq!(devices.status, StatusCode::OK);
    let refused = format!("{name}%0A");
    let bad = call(&app, "POST", &format!("/bind/{refused}"), &[]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let logs = captured.text();
    assert!(
        logs.contains("control character"),
        "the refusal was logged: {logs}"
    );
    assert!(
        !logs.contains("alice-7c1e4b2a9d0f"),
        "a principal name reached the logs:\n{logs}"
    );
}

/// Logins, reads, increments, rotations, stale, forged and unknown cookies,
/// oversized and mistyped values, logout and replay against `app`; answers
/// every cookie value it saw or forged.
#[cfg(all(feature = "testing", any(feature = "postgres", feature = "redis")))]
async fn drive(app: &Router) -> Vec<String> {
    let mut secrets = Vec::new();
    let login = call(app, "POST", "/login/alice", &[]).await;
    let first = login.cookies.first().expect("a cookie").clone();
    call(app, "GET", "/user", &[("cookie", &first)]).await;
    call(app, "POST", "/incr", &[("cookie", &first)]).await;
    let rotated = call(app, "POST", "/login/alice", &[("cookie", &first)]).await;
    let second = rotated.cookies.first().expect("a rotated cookie").clone();
    call(app, "GET", "/user", &[("cookie", &first)]).await;
    let value = &second["SESSION=".len()..];
    let forged = format!("SESSION={}{}", &value[..22], "A".repeat(42));
    let unknown = format!(
        "SESSION={}",
        SessionId::generate().expect("rng").expose_cookie_value()
    );
    for cookie in [&forged, &unknown] {
        call(app, "GET", "/user", &[("cookie", cookie)]).await;
        call(app, "POST", "/logout", &[("cookie", cookie)]).await;
    }
    call(app, "POST", "/blob", &[("cookie", &second)]).await;
    call(app, "GET", "/typed", &[("cookie", &second)]).await;
    call(app, "POST", "/logout", &[("cookie", &second)]).await;
    call(app, "GET", "/user", &[("cookie", &second)]).await;
    for cookie in [first, second, forged, unknown] {
        secrets.push(cookie["SESSION=".len()..].to_owned());
    }
    secrets
}

/// Asserts that `logs` holds none of `secrets`, their store keys or their
/// verifier halves.
#[cfg(all(feature = "testing", any(feature = "postgres", feature = "redis")))]
fn assert_clean(logs: &str, secrets: &[String]) {
    for secret in secrets {
        let id = SessionId::from_cookie_value(secret).expect("a well-formed value");
        for needle in [secret.as_str(), id.store_key().as_str(), &secret[22..]] {
            assert!(
                !logs.contains(needle),
                "a secret reached the logs: {needle}\n{logs}"
            );
        }
    }
}

#[cfg(all(feature = "postgres", feature = "testing"))]
#[tokio::test]
async fn no_session_id_reaches_the_logs_with_postgres() {
    let captured = Captured::global();
    let (store, _schema) = postgres_support::store().await;
    let app = routes(Arc::new(store));
    let secrets = drive(&app).await;
    let logs = captured.text();
    assert!(logs.contains("could not be deserialized"), "{logs}");
    assert_clean(&logs, &secrets);
}

#[cfg(all(feature = "redis", feature = "testing"))]
#[tokio::test]
async fn no_session_id_reaches_the_logs_with_redis() {
    let captured = Captured::global();
    let store = redis_support::clean_store("logs").await;
    let app = routes(Arc::new(store.store().clone()));
    let secrets = drive(&app).await;
    // A Redis that goes away mid-session: its errors are logged too.
    let server = redis_support::RedisServer::start();
    let down = tower_httpsession::store::redis::RedisStore::connect(&server.url())
        .await
        .expect("connect");
    let app = routes(Arc::new(down));
    let login = call(&app, "POST", "/login/alice", &[]).await;
    let cookie = login.cookies.first().expect("a cookie").clone();
    drop(server);
    let failed = call(&app, "GET", "/user", &[("cookie", &cookie)]).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    let logs = captured.text();
    assert!(logs.contains("redis store"), "{logs}");
    let mut all = secrets;
    all.push(cookie["SESSION=".len()..].to_owned());
    assert_clean(&logs, &all);
}
