//! Every health endpoint and status, through `oneshot`.
#![cfg(feature = "health")]
// helpers outside #[test] fns unwrap too: a test should fail loudly
#![allow(clippy::unwrap_used)]

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::connect_info::MockConnectInfo;
use http::{Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_httpsession::health::{
    Acl, ComponentHealth, Health, HealthBuilder, HealthIndicator, TrafficPhase, TrafficState,
};
use tower_httpsession::store::{
    Applied, ChangeSet, Created, Record, SessionLimit, StoreHealth, StoreKey, Swap, VerifierHash,
};
use tower_httpsession::{MemoryStore, SessionStore, StoreError};

const TOKEN: &str = "s3cr3t-rotation-token";
const OPERATOR: [u8; 4] = [10, 0, 0, 7];
const STRANGER: [u8; 4] = [203, 0, 113, 9];

/// A memory store whose health check can be made to fail or hang.
#[derive(Debug, Clone, Default)]
struct ControlledStore {
    inner: MemoryStore,
    /// 0: up, 1: down, 2: never answers.
    mode: Arc<AtomicU8>,
}

impl ControlledStore {
    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

#[async_trait]
impl SessionStore for ControlledStore {
    fn backend(&self) -> &'static str {
        "controlled"
    }
    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.inner.load(key).await
    }
    async fn create(
        &self,
        key: &StoreKey,
        record: &Record,
        limit: Option<&SessionLimit>,
    ) -> Result<Created, StoreError> {
        self.inner.create(key, record, limit).await
    }
    async fn apply(&self, key: &StoreKey, changes: &ChangeSet) -> Result<Applied, StoreError> {
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
        self.inner
            .compare_and_set(key, verifier, name, expected, new)
            .await
    }
    async fn delete(&self, key: &StoreKey, verifier: &VerifierHash) -> Result<(), StoreError> {
        self.inner.delete(key, verifier).await
    }
    async fn health(&self) -> StoreHealth {
        match self.mode.load(Ordering::SeqCst) {
            0 => self.inner.health().await,
            1 => StoreHealth::down("controlled", Duration::from_millis(3), "connection refused"),
            _ => std::future::pending().await,
        }
    }
}

/// An indicator that answers after `delay` with `report`.
#[derive(Debug)]
struct Slow {
    delay: Duration,
    report: ComponentHealth,
}

#[async_trait]
impl HealthIndicator for Slow {
    async fn check(&self) -> ComponentHealth {
        tokio::time::sleep(self.delay).await;
        self.report.clone()
    }
}

#[derive(Debug)]
struct Panics;

#[async_trait]
impl HealthIndicator for Panics {
    async fn check(&self) -> ComponentHealth {
        panic!("indicator bug")
    }
}

fn acl() -> Acl {
    Acl::builder()
        .with_allowed_network("10.0.0.0/24")
        .with_bearer_token(TOKEN)
        .build()
        .unwrap()
}

/// The app the tests share: a page, and the health router with an ACL.
fn app(health: &Health) -> Router {
    Router::new()
        .route("/", axum::routing::get(|| async { "hello" }))
        .merge(health.router())
}

/// The health endpoints with the tests' ACL, to set up further.
fn configured(store: &ControlledStore) -> HealthBuilder {
    Health::builder(store.clone()).with_acl(acl())
}

fn health(store: &ControlledStore) -> Health {
    configured(store).build().unwrap()
}

fn get(path: &str, from: Option<[u8; 4]>) -> Request<Body> {
    let mut request = Request::get(path).body(Body::empty()).unwrap();
    if let Some(ip) = from {
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 41_000))));
    }
    request
}

fn put(body: &str, from: Option<[u8; 4]>) -> Request<Body> {
    let mut request = Request::put("/actuator/health")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    if let Some(ip) = from {
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 41_000))));
    }
    request
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    (status, json_body(response).await)
}

async fn json_body(response: Response<Body>) -> Value {
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
}

#[tokio::test]
async fn health_is_up_and_hides_details_from_strangers() {
    let store = ControlledStore::default();
    let app = app(&health(&store));
    let response = app
        .clone()
        .oneshot(get("/actuator/health", Some(STRANGER)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(json_body(response).await, json!({ "status": "UP" }));
}

#[tokio::test]
async fn health_shows_details_to_allowed_callers() {
    let store = ControlledStore::default();
    let app = app(&health(&store));
    let (status, body) = send(&app, get("/actuator/health", Some(OPERATOR))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "UP");
    assert_eq!(body["traffic"], "RUNNING");
    let store_component = &body["components"]["sessionStore"];
    assert_eq!(store_component["status"], "UP");
    assert_eq!(store_component["details"]["backend"], "memory");
    assert_eq!(store_component["details"]["sessions"], 0);
    assert!(store_component["details"]["latencyMs"].is_number());

    // by token, from anywhere
    let mut request = get("/actuator/health", Some(STRANGER));
    request.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    let (_, body) = send(&app, request).await;
    assert!(body["components"].is_object());
}

#[tokio::test]
async fn without_acl_or_connect_info_no_one_sees_details() {
    let store = ControlledStore::default();
    let app = app(&Health::new(store.clone()));
    let (status, body) = send(&app, get("/actuator/health", Some(OPERATOR))).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "status": "UP" })));

    let app = self::app(&health(&store));
    let (status, body) = send(&app, get("/actuator/health", None)).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "status": "UP" })));
}

#[tokio::test]
async fn store_down_makes_health_and_readiness_down_but_not_liveness() {
    let store = ControlledStore::default();
    store.set(1);
    let app = app(&health(&store));
    let (status, body) = send(&app, get("/actuator/health", Some(OPERATOR))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "DOWN");
    let details = &body["components"]["sessionStore"]["details"];
    assert_eq!(details["error"], "connection refused");
    assert_eq!(details["backend"], "controlled");

    let (status, body) = send(&app, get("/actuator/health/readiness", Some(STRANGER))).await;
    assert_eq!(
        (status, body),
        (StatusCode::SERVICE_UNAVAILABLE, json!({ "status": "DOWN" }))
    );
    let (status, _) = send(&app, get("/actuator/health/liveness", None)).await;
    assert_eq!(status, StatusCode::OK);

    store.set(0);
    let (status, _) = send(&app, get("/actuator/health/readiness", None)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_store_that_never_answers_is_down_after_the_timeout() {
    let store = ControlledStore::default();
    store.set(2);
    let health = configured(&store)
        .with_check_timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    let app = app(&health);
    let started = tokio::time::Instant::now();
    let (status, body) = send(&app, get("/actuator/health", Some(OPERATOR))).await;
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let component = &body["components"]["sessionStore"];
    assert_eq!(component["status"], "DOWN");
    assert_eq!(component["details"]["error"], "no answer within 250 ms");
}

#[tokio::test(start_paused = true)]
async fn indicators_run_concurrently_and_slow_ones_are_down() {
    let store = ControlledStore::default();
    let slow = |ms, report| Slow {
        delay: Duration::from_millis(ms),
        report,
    };
    let health = configured(&store)
        .with_check_timeout(Duration::from_secs(1))
        .with_indicator("a", slow(800, ComponentHealth::up()))
        .with_indicator("b", slow(800, ComponentHealth::up()))
        .with_indicator(
            "c",
            slow(
                700,
                ComponentHealth::up().with_details(json!({ "version": "1.2" })),
            ),
        );
    let app = app(&health.clone().build().unwrap());
    let started = tokio::time::Instant::now();
    let (status, body) = send(&app, get("/actuator/health", Some(OPERATOR))).await;
    // three checks of 0.8 s, 0.8 s and 0.7 s in 0.8 s: concurrent
    assert_eq!(started.elapsed(), Duration::from_millis(800));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["components"]["c"]["details"]["version"], "1.2");

    let health = health.with_indicator("slow", slow(60_000, ComponentHealth::up()));
    let app = self::app(&health.build().unwrap());
    let started = tokio::time::Instant::now();
    let (status, body) = send(&app, get("/actuator/health", Some(OPERATOR))).await;
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["components"]["slow"]["status"], "DOWN");
    assert_eq!(body["components"]["a"]["status"], "UP");
}

#[tokio::test]
async fn a_down_or_panicking_indicator_fails_health_but_not_readiness() {
    let store = ControlledStore::default();
    let health = configured(&store)
        .with_indicator("broken", Panics)
        .with_indicator(
            "payments",
            Slow {
                delay: Duration::ZERO,
                report: ComponentHealth::down(),
            },
        )
        .build()
        .unwrap();
    let app = app(&health);
    let (status, body) = send(&app, get("/actuator/health", Some(OPERATOR))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["components"]["broken"]["status"], "DOWN");
    assert_eq!(
        body["components"]["broken"]["details"]["error"],
        "check panicked"
    );
    assert_eq!(body["components"]["payments"], json!({ "status": "DOWN" }));
    let (status, _) = send(&app, get("/actuator/health/readiness", None)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn readiness_follows_the_traffic_state_and_liveness_does_not() {
    let store = ControlledStore::default();
    let state = TrafficState::starting();
    let health = configured(&store).with_traffic_state(state.clone());
    let app = app(&health.build().unwrap());
    let probe = |path: &'static str| {
        let app = app.clone();
        async move { send(&app, get(path, None)).await }
    };

    let expect = [
        (
            TrafficPhase::Starting,
            StatusCode::SERVICE_UNAVAILABLE,
            "OUT_OF_SERVICE",
        ),
        (TrafficPhase::Running, StatusCode::OK, "UP"),
        (
            TrafficPhase::OutOfService,
            StatusCode::SERVICE_UNAVAILABLE,
            "OUT_OF_SERVICE",
        ),
        (TrafficPhase::Running, StatusCode::OK, "UP"),
        (
            TrafficPhase::ShuttingDown,
            StatusCode::SERVICE_UNAVAILABLE,
            "OUT_OF_SERVICE",
        ),
    ];
    for (phase, code, word) in expect {
        if phase != TrafficPhase::Starting {
            state.transition(phase).unwrap();
        }
        for path in ["/actuator/health/readiness", "/actuator/health"] {
            let (status, body) = probe(path).await;
            assert_eq!(
                (status, &body["status"]),
                (code, &json!(word)),
                "{phase} {path}"
            );
        }
        let (status, body) = probe("/actuator/health/liveness").await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({ "status": "UP" })),
            "{phase}"
        );
    }
}

#[tokio::test]
async fn l7_alias_answers_readiness_as_a_word() {
    let store = ControlledStore::default();
    let health = configured(&store)
        .with_l7_check_path("/monitor/l7check")
        .build()
        .unwrap();
    let app = app(&health);
    let response = app
        .clone()
        .oneshot(get("/monitor/l7check", None))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_body(response).await, json!("UP"));

    health.traffic_state().mark_out_of_service().unwrap();
    let (status, body) = send(&app, get("/monitor/l7check", None)).await;
    assert_eq!(
        (status, body),
        (StatusCode::SERVICE_UNAVAILABLE, json!("OUT_OF_SERVICE"))
    );

    let head = Request::head("/monitor/l7check")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(head).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    health.traffic_state().mark_running().unwrap();
    store.set(1);
    let (status, body) = send(&app, get("/monitor/l7check", None)).await;
    assert_eq!(
        (status, body),
        (StatusCode::SERVICE_UNAVAILABLE, json!("DOWN"))
    );
}

#[tokio::test]
async fn put_takes_the_instance_out_of_rotation_and_back() {
    let store = ControlledStore::default();
    let health = health(&store);
    let app = app(&health);

    let (status, body) = send(&app, put(r#"{"status": "OUT_OF_SERVICE"}"#, Some(OPERATOR))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "status": "OUT_OF_SERVICE", "traffic": "OUT_OF_SERVICE", "previous": "RUNNING" })
    );
    assert_eq!(health.traffic_state().phase(), TrafficPhase::OutOfService);
    let (status, _) = send(&app, get("/actuator/health/readiness", None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // the rest of the app keeps serving
    let (status, _) = send(&app, get("/", None)).await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = send(&app, put(r#"{"status": "UP"}"#, Some(OPERATOR))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "status": "UP", "traffic": "RUNNING", "previous": "OUT_OF_SERVICE" })
    );
    let (status, _) = send(&app, get("/actuator/health/readiness", None)).await;
    assert_eq!(status, StatusCode::OK);

    // DOWN is an operator's OUT_OF_SERVICE
    let (status, body) = send(&app, put(r#"{"status":"DOWN"}"#, Some(OPERATOR))).await;
    assert_eq!(
        (status, &body["traffic"]),
        (StatusCode::OK, &json!("OUT_OF_SERVICE"))
    );
    // and setting it twice is not an error
    let (status, body) = send(&app, put(r#"{"status":"DOWN"}"#, Some(OPERATOR))).await;
    assert_eq!(
        (status, &body["previous"]),
        (StatusCode::OK, &json!("OUT_OF_SERVICE"))
    );
}

#[tokio::test]
async fn put_by_token_from_any_address() {
    let store = ControlledStore::default();
    let health = health(&store);
    let app = app(&health);
    let mut request = put(r#"{"status": "OUT_OF_SERVICE"}"#, Some(STRANGER));
    request.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    let (status, _) = send(&app, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health.traffic_state().phase(), TrafficPhase::OutOfService);

    let mut request = put(r#"{"status": "UP"}"#, Some(STRANGER));
    request.headers_mut().insert(
        header::AUTHORIZATION,
        "Bearer not-the-token-at-all".parse().unwrap(),
    );
    let (status, body) = send(&app, request).await;
    assert_eq!(
        (status, body),
        (StatusCode::FORBIDDEN, json!({ "error": "forbidden" }))
    );
    assert_eq!(health.traffic_state().phase(), TrafficPhase::OutOfService);
}

#[tokio::test]
async fn put_is_refused_without_acl_outside_it_or_without_connect_info() {
    let store = ControlledStore::default();
    let cases = [
        ("no ACL", Health::new(store.clone()), Some(OPERATOR)),
        ("outside the ACL", health(&store), Some(STRANGER)),
        ("no ConnectInfo", health(&store), None),
    ];
    for (case, health, from) in cases {
        let app = app(&health);
        let (status, body) = send(&app, put(r#"{"status": "OUT_OF_SERVICE"}"#, from)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{case}");
        assert_eq!(body, json!({ "error": "forbidden" }), "{case}");
        assert_eq!(
            health.traffic_state().phase(),
            TrafficPhase::Running,
            "{case}"
        );
    }
}

#[tokio::test]
async fn a_refused_caller_gets_403_even_with_a_bad_body() {
    let store = ControlledStore::default();
    let app = app(&health(&store));
    let (status, _) = send(&app, put("not json", Some(STRANGER))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn mock_connect_info_is_understood() {
    let store = ControlledStore::default();
    let health = health(&store);
    let app = app(&health).layer(MockConnectInfo(SocketAddr::from((OPERATOR, 1))));
    let (status, _) = send(&app, put(r#"{"status": "OUT_OF_SERVICE"}"#, None)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_bodies_get_400_with_a_message_and_change_nothing() {
    let store = ControlledStore::default();
    let health = health(&store);
    let app = app(&health);
    const SHAPE: &str = r#"the body must be {"status": "UP" | "DOWN" | "OUT_OF_SERVICE"}"#;
    let oversized = format!(
        r#"{{"status": "OUT_OF_SERVICE", "pad": "{}"}}"#,
        "x".repeat(2000)
    );
    let bodies = [
        ("not json", SHAPE),
        (r#"{"status": "MAINTENANCE"}"#, "unknown variant"),
        (r#"{"status": "out_of_service"}"#, "unknown variant"),
        (r#"{"status": 1}"#, SHAPE),
        (r#"{}"#, "missing field"),
        (r#"{"status": "UP", "extra": true}"#, "unknown field"),
        (r#"["UP"]"#, SHAPE),
        ("", SHAPE),
        (&oversized, "larger than 1024 bytes"),
    ];
    for (body, message) in bodies {
        let (status, answer) = send(&app, put(body, Some(OPERATOR))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(message), "{body}: {error}");
    }
    for content_type in [None, Some("text/plain"), Some("application/jsonx")] {
        let mut request = Request::put("/actuator/health");
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let mut request = request
            .body(Body::from(r#"{"status": "OUT_OF_SERVICE"}"#))
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((OPERATOR, 1))));
        let (status, answer) = send(&app, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{content_type:?}");
        assert_eq!(answer["error"], "the body must be application/json");
    }
    assert_eq!(health.traffic_state().phase(), TrafficPhase::Running);

    // a charset parameter is fine
    let mut request = Request::put("/actuator/health")
        .header(header::CONTENT_TYPE, "Application/JSON; charset=utf-8")
        .body(Body::from(r#"{"status": "OUT_OF_SERVICE"}"#))
        .unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((OPERATOR, 1))));
    let (status, _) = send(&app, request).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn repeated_or_unknown_keys_are_400_and_change_nothing() {
    let store = ControlledStore::default();
    let health = health(&store);
    let app = app(&health);
    let bodies = [
        (
            r#"{"status": "UP", "status": "OUT_OF_SERVICE"}"#,
            "duplicate field `status`",
        ),
        (
            r#"{"status": "OUT_OF_SERVICE", "status": "OUT_OF_SERVICE"}"#,
            "duplicate field `status`",
        ),
        // the same key, spelled with an escape
        (
            r#"{"status": "UP", "st\u0061tus": "DOWN"}"#,
            "duplicate field `status`",
        ),
        (
            r#"{"status": "UP", "extra": null}"#,
            "unknown field `extra`",
        ),
        (r#"{"extra": 1, "status": "DOWN"}"#, "unknown field `extra`"),
        (
            r#"{"status": "DOWN", "Status": "DOWN"}"#,
            "unknown field `Status`",
        ),
        (r#"{"status": "DOWN", "": 0}"#, "unknown field ``"),
    ];
    for (body, message) in bodies {
        let (status, answer) = send(&app, put(body, Some(OPERATOR))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(message), "{body}: {error}");
        assert_eq!(
            health.traffic_state().phase(),
            TrafficPhase::Running,
            "{body} took effect"
        );
    }
}

#[tokio::test]
async fn up_while_shutting_down_is_a_conflict() {
    let store = ControlledStore::default();
    let health = health(&store);
    let app = app(&health);
    health.traffic_state().mark_shutting_down();
    for target in ["UP", "OUT_OF_SERVICE"] {
        let body = format!(r#"{{"status": "{target}"}}"#);
        let (status, answer) = send(&app, put(&body, Some(OPERATOR))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{target}");
        assert_eq!(answer["traffic"], "SHUTTING_DOWN");
        assert!(answer["error"].as_str().unwrap().contains("SHUTTING_DOWN"));
    }
    assert_eq!(health.traffic_state().phase(), TrafficPhase::ShuttingDown);
}

#[tokio::test]
async fn paths_are_configurable_and_other_methods_are_405() {
    let store = ControlledStore::default();
    let health = configured(&store)
        .with_path("/manage/health")
        .with_readiness_path("/ready")
        .build()
        .unwrap();
    let app = app(&health);
    for (path, code) in [
        ("/manage/health", StatusCode::OK),
        ("/manage/health/liveness", StatusCode::OK),
        ("/ready", StatusCode::OK),
        ("/actuator/health", StatusCode::NOT_FOUND),
        ("/manage/health/readiness", StatusCode::NOT_FOUND),
    ] {
        let response = app.clone().oneshot(get(path, None)).await.unwrap();
        assert_eq!(response.status(), code, "{path}");
    }
    let post = Request::builder()
        .method(Method::POST)
        .uri("/manage/health")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(post).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// A `tracing` writer into a buffer the test reads.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn refusals_are_logged_with_the_address_and_never_the_token() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let store = ControlledStore::default();
    let app = app(&health(&store));
    let mut request = put(r#"{"status": "UP"}"#, Some(STRANGER));
    request.headers_mut().insert(
        header::AUTHORIZATION,
        "Bearer almost-the-secret-token".parse().unwrap(),
    );
    let (status, _) = send(&app, request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(&app, put("{", Some(OPERATOR))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = send(&app, put("{}", None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // the right token and address, through a rebound name
    let acl = Acl::builder()
        .with_allowed_network("10.0.0.0/24")
        .with_bearer_token(TOKEN)
        .with_allowed_host("shop-1.internal")
        .build()
        .unwrap();
    let hosted = Health::builder(store.clone())
        .with_acl(acl)
        .build()
        .unwrap()
        .router();
    let mut request = put(r#"{"status": "UP"}"#, Some(OPERATOR));
    let headers = request.headers_mut();
    headers.insert(header::HOST, "attacker.example".parse().unwrap());
    headers.insert(
        header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    let (status, _) = send(&hosted, request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let text = logs.text();
    assert!(text.contains("Host not in the allowed hosts"), "{text}");
    assert!(text.contains("traffic state change refused"), "{text}");
    assert!(
        text.contains("203.0.113.9") && text.contains("wrong bearer token"),
        "{text}"
    );
    assert!(
        text.contains("traffic state change rejected") && text.contains("10.0.0.7"),
        "{text}"
    );
    assert!(
        text.contains("into_make_service_with_connect_info"),
        "{text}"
    );
    assert!(
        !text.contains("almost-the-secret") && !text.contains(TOKEN),
        "{text}"
    );
}
