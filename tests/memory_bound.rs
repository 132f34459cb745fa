//! The memory store under churn stays at its capacity: many new sessions a
//! second for a bounded time, and the process's resident memory at the end
//! of the steady phase is within 10% of what it was at its start.
//!
//! Alone in its binary so that nothing else allocates while it measures.
#![cfg(target_os = "linux")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::{Request, StatusCode, header};
use tower::ServiceExt as _;
use tower_httpsession::{MemoryStore, Session, SessionConfig, SessionError, SessionLayer};

const CAPACITY: u64 = 5_000;
/// Bytes of attribute each session holds, so the held sessions dominate
/// the measured memory.
const VALUE_BYTES: usize = 2_048;
const STEADY: Duration = Duration::from_secs(20);

/// The process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

fn app(store: Arc<MemoryStore>) -> Router {
    let config = SessionConfig::default().with_insecure_cookie_over_http();
    let layer = SessionLayer::with_config(store, config).expect("config");
    Router::new()
        .route(
            "/login",
            post(|session: Session| async move {
                session.set("profile", &"p".repeat(VALUE_BYTES)).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .layer(layer)
}

/// Starts one new session; returns whether it got a cookie.
async fn churn_once(app: &Router) -> bool {
    let request = Request::post("/login")
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    response.headers().contains_key(header::SET_COOKIE)
}

#[tokio::test(flavor = "current_thread")]
async fn memory_store_under_churn_stays_at_capacity() {
    let store = Arc::new(MemoryStore::new(CAPACITY));
    let app = app(store.clone());

    // Warm up: fill the store several times over, so the cache, the
    // allocator and the runtime reach their steady sizes.
    for _ in 0..4 * CAPACITY {
        assert!(churn_once(&app).await);
    }
    let start_rss = rss_kib();
    let start_len = store.len();
    assert!(start_len <= CAPACITY, "{start_len} sessions held");

    let started = Instant::now();
    let mut created: u64 = 0;
    let mut peak_len = start_len;
    while started.elapsed() < STEADY {
        for _ in 0..1_000 {
            assert!(churn_once(&app).await);
        }
        created += 1_000;
        peak_len = peak_len.max(store.len());
    }
    let end_rss = rss_kib();
    let end_len = store.len();
    let rate = created as f64 / started.elapsed().as_secs_f64();

    // The run must be able to tell: unbounded, the sessions created in the
    // steady phase would at least double the starting memory (on a quiet
    // machine they would hold ten times it).
    let would_hold_kib = created * (VALUE_BYTES as u64) / 1024;
    assert!(
        would_hold_kib > start_rss,
        "too little churn to tell: {created} sessions at {rate:.0}/s"
    );
    assert!(peak_len <= CAPACITY, "{peak_len} sessions held");
    assert!(end_len <= CAPACITY, "{end_len} sessions held");
    let growth = end_rss.abs_diff(start_rss) as f64 / start_rss as f64;
    println!(
        "{created} sessions at {rate:.0}/s; held {start_len} then {end_len} (capacity {CAPACITY}); \
         RSS {start_rss} KiB then {end_rss} KiB ({:+.1}%); unbounded would add {would_hold_kib} KiB",
        growth * 100.0
    );
    assert!(
        growth < 0.10,
        "resident memory moved {:.1}% (from {start_rss} KiB to {end_rss} KiB)",
        growth * 100.0
    );
}
