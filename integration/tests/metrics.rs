//! The metrics a known sequence of requests records, counted exactly.
//!
//! A recorder is process-wide, so this binary installs one and runs one
//! test: logins, writes, an update, a logout, an expiry and a store outage
//! through the real layer over the memory store (behind a switch that
//! fails it, a third-party store to the layer, whose `db.system.name` is
//! its own backend name), then the counters, the store call histograms and
//! the labels.
#![cfg(feature = "metrics")]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, post};
use common::Switchable;
use http::{Request, StatusCode, header};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::ServiceExt;
use tower_httpsession::store::Created;
use tower_httpsession::{
    MemoryStore, Session, SessionConfig, SessionError, SessionId, SessionLayer, SessionStore,
};

fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route(
            "/visit",
            post(|session: Session| async move {
                session.set("visits", &1).await?;
                Ok::<_, SessionError>("visited")
            }),
        )
        .route(
            "/login/{user}",
            post(|session: Session, Path(user): Path<String>| async move {
                session.change_id().await?;
                session.set("user", &user).await?;
                Ok::<_, SessionError>("logged in")
            }),
        )
        .route(
            "/write/{n}",
            post(|session: Session, Path(n): Path<u32>| async move {
                session.set("w", &n).await?;
                Ok::<_, SessionError>("written")
            }),
        )
        .route(
            "/hit",
            post(|session: Session| async move {
                let hits = session
                    .update("hits", |n: Option<u32>| n.unwrap_or(0) + 1)
                    .await?;
                Ok::<_, SessionError>(hits.to_string())
            }),
        )
        .route(
            "/logout",
            post(|session: Session| async move {
                session.invalidate().await?;
                Ok::<_, SessionError>("logged out")
            }),
        )
        .route(
            "/read",
            get(|session: Session| async move {
                let user: Option<String> = session.get("user").await?;
                Ok::<_, SessionError>(user.unwrap_or_default())
            }),
        )
        .layer(layer)
}

/// Sends one request with `cookie` (a cookie value) and returns the status
/// and the new cookie value, if the response sets one.
async fn send(
    app: &Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
) -> (StatusCode, Option<String>) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, format!("SESSION={cookie}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .and_then(|pair| pair.strip_prefix("SESSION="))
        .filter(|value| !value.is_empty())
        .map(str::to_owned);
    (response.status(), cookie)
}

/// A metric's name and its labels, sorted.
type Series = (String, Vec<(String, String)>);

/// The snapshot as series and values.
fn values(snapshotter: &Snapshotter) -> HashMap<Series, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), value)
        })
        .collect()
}

fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    (name.to_owned(), labels)
}

fn counter(all: &HashMap<Series, DebugValue>, name: &str, labels: &[(&str, &str)]) -> u64 {
    match all.get(&series(name, labels)) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

fn samples(all: &HashMap<Series, DebugValue>, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    match all.get(&series(name, labels)) {
        Some(DebugValue::Histogram(values)) => values.iter().map(|v| v.0).collect(),
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

fn store_calls(all: &HashMap<Series, DebugValue>, operation: &str) -> usize {
    let labels = [
        ("db.system.name", "switchable"),
        ("db.operation.name", operation),
    ];
    samples(all, "db.client.operation.duration", &labels).len()
}

/// Moves a stored session's creation `by` into the past, leaving its
/// expiry: past an absolute timeout, it is met expired when next read.
async fn age(store: &MemoryStore, cookie: &str, by: Duration) {
    let key = SessionId::from_cookie_value(cookie)
        .expect("a session id")
        .store_key();
    let mut record = store.load(&key).await.expect("load").expect("stored");
    record.created -= by;
    store.delete(&key, &record.verifier).await.expect("delete");
    assert_eq!(
        store.create(&key, &record, None).await.expect("create"),
        Created::Stored
    );
}

#[tokio::test]
async fn a_known_sequence_records_exact_counts_and_no_secret() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");

    let store = Arc::new(Switchable::default());
    let config = SessionConfig::default()
        .with_insecure_cookie_over_http()
        .with_absolute_timeout(Duration::from_secs(3600));
    let layer = SessionLayer::with_config(Arc::clone(&store), config).expect("config");
    let app = app(layer);
    let mut cookies = Vec::new();

    // Two users visit (2 created), then log in (2 rotated).
    let mut users = Vec::new();
    for user in ["alice", "bob"] {
        let (status, cookie) = send(&app, "POST", "/visit", None).await;
        assert_eq!(status, StatusCode::OK);
        let cookie = cookie.expect("a new session");
        let (status, rotated) = send(&app, "POST", &format!("/login/{user}"), Some(&cookie)).await;
        assert_eq!(status, StatusCode::OK);
        let rotated = rotated.expect("a new id at login");
        cookies.extend([cookie, rotated.clone()]);
        users.push(rotated);
    }
    let (alice, bob) = (users[0].clone(), users[1].clone());

    // Three blind writes, two updates, one logout.
    for n in 1..=3 {
        let (status, _) = send(&app, "POST", &format!("/write/{n}"), Some(&alice)).await;
        assert_eq!(status, StatusCode::OK);
    }
    for _ in 0..2 {
        let (status, _) = send(&app, "POST", "/hit", Some(&bob)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = send(&app, "POST", "/logout", Some(&alice)).await;
    assert_eq!(status, StatusCode::OK);

    // A third session (the third created), met past its absolute timeout.
    let (_, carol) = send(&app, "POST", "/visit", None).await;
    let carol = carol.expect("a new session");
    age(&store.inner, &carol, Duration::from_secs(7200)).await;
    let (status, _) = send(&app, "GET", "/read", Some(&carol)).await;
    assert_eq!(status, StatusCode::OK);
    cookies.push(carol);

    // The store goes out for one request.
    store.down.store(true, Ordering::SeqCst);
    let (status, _) = send(&app, "GET", "/read", Some(&bob)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    store.down.store(false, Ordering::SeqCst);

    let all = values(&snapshotter);
    let none: &[(&str, &str)] = &[];
    assert_eq!(counter(&all, "httpsession.sessions.created", none), 3);
    assert_eq!(counter(&all, "httpsession.sessions.rotated", none), 2);
    assert_eq!(counter(&all, "httpsession.sessions.invalidated", none), 1);
    assert_eq!(counter(&all, "httpsession.sessions.expired", none), 1);
    // 3 creates, 2 logins, 3 writes; the updates write at once, the
    // logout and the expiry delete.
    assert_eq!(counter(&all, "httpsession.commits", none), 8);
    assert_eq!(
        counter(&all, "httpsession.compare_and_set.attempts", none),
        2
    );
    assert_eq!(counter(&all, "httpsession.compare_and_set.losses", none), 0);
    assert_eq!(counter(&all, "httpsession.responses.unavailable", none), 1);
    let failed = [
        ("db.system.name", "switchable"),
        ("db.operation.name", "load_some"),
        ("error.type", "unavailable"),
    ];
    assert_eq!(counter(&all, "httpsession.store.errors", &failed), 1);
    assert_eq!(
        samples(&all, "db.client.operation.duration", &failed).len(),
        1
    );
    let errors: u64 = all
        .iter()
        .filter(|((name, _), _)| name == "httpsession.store.errors")
        .map(|(_, value)| match value {
            DebugValue::Counter(n) => *n,
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(errors, 1, "one store error in all");

    // Bytes of names and values: `visits` and `1` three times, `user` and
    // `"alice"`, `user` and `"bob"`, `w` and a digit three times.
    let sizes = samples(&all, "httpsession.commit.size", none);
    assert_eq!(sizes.len(), 8);
    assert!((sizes.iter().sum::<f64>() - 47.0).abs() < f64::EPSILON);

    assert_eq!(store_calls(&all, "create"), 3);
    assert_eq!(store_calls(&all, "apply"), 5);
    assert_eq!(store_calls(&all, "compare_and_set"), 2);
    assert_eq!(store_calls(&all, "delete"), 2);

    // No label holds a cookie value, a store key or an attribute value;
    // the label names are OpenTelemetry's three.
    let mut secrets: Vec<String> = Vec::new();
    for cookie in &cookies {
        let id = SessionId::from_cookie_value(cookie).expect("a session id");
        secrets.push(cookie.clone());
        secrets.push(id.store_key().as_str().to_owned());
    }
    secrets.extend(["alice".to_owned(), "bob".to_owned()]);
    for (name, labels) in all.keys() {
        for (key, value) in labels {
            assert!(
                ["db.system.name", "db.operation.name", "error.type"].contains(&key.as_str()),
                "{name}: label {key}"
            );
            for secret in &secrets {
                assert!(!value.contains(secret.as_str()), "{name}: {key}={value}");
            }
        }
    }

    #[cfg(feature = "health")]
    health_reports_the_gauge(&store, &snapshotter).await;
}

/// The health details and the live sessions gauge show the same sample.
#[cfg(feature = "health")]
async fn health_reports_the_gauge(store: &Arc<Switchable>, snapshotter: &Snapshotter) {
    use axum::extract::ConnectInfo;
    use tower_httpsession::health::{Acl, Health};

    let acl = Acl::builder()
        .with_allowed_network("127.0.0.0/8")
        .build()
        .expect("acl");
    let health = Health::builder(Arc::clone(store))
        .with_acl(acl)
        .build()
        .expect("health");
    let mut request = Request::get("/actuator/health")
        .body(Body::empty())
        .expect("request");
    request
        .extensions_mut()
        .insert(ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            4000,
        ))));
    let response = health.router().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    let report: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let details = &report["components"]["sessionStore"]["details"];
    let sessions = details["sessions"].as_f64().expect("a session count");
    let latency_ms = details["latencyMs"].as_f64().expect("a latency");

    let all = values(snapshotter);
    let live = series(
        "httpsession.sessions.live",
        &[("db.system.name", "switchable")],
    );
    match all.get(&live) {
        Some(DebugValue::Gauge(value)) => assert!((value.0 - sessions).abs() < f64::EPSILON),
        other => panic!("live sessions: {other:?}"),
    }
    let checks = samples(
        &all,
        "db.client.operation.duration",
        &[
            ("db.system.name", "switchable"),
            ("db.operation.name", "health"),
        ],
    );
    assert_eq!(checks.len(), 1);
    assert!((checks[0] * 1000.0 - latency_ms).abs() < 1e-9);
}
