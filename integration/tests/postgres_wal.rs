//! WAL written per request by the PostgreSQL store, measured on the server.
//!
//! One test in a binary of its own, so no other test of this crate writes
//! WAL while it measures. Run it with
//! `cargo test --all-features --test postgres_wal -- --nocapture` to see the
//! figures.
#![cfg(all(feature = "postgres", feature = "testing"))]

mod postgres_support;

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, post};
use http::{Request, StatusCode, header};
use sqlx::PgConnection;
use tower::ServiceExt;
use tower_httpsession::{Session, SessionConfig, SessionError, SessionLayer};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// 50 attributes of 1,000 bytes of JSON each.
const ATTRIBUTES: usize = 50;
const VALUE_BYTES: usize = 1_000;
/// Requests per measured round.
const REQUESTS: u64 = 200;
/// The budget per request that sets one small integer.
const WAL_BUDGET: u64 = 1_500;

/// Statements sqlx ran, counted from its `sqlx::query` log events.
static STATEMENTS: AtomicU64 = AtomicU64::new(0);

struct CountStatements;

impl<S: Subscriber> Layer<S> for CountStatements {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            STATEMENTS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route(
            "/fill",
            post(|session: Session| async move {
                let value = "x".repeat(VALUE_BYTES - 2); // plus two quotes
                for i in 0..ATTRIBUTES {
                    session.set(&format!("attr{i:02}"), &value).await?;
                }
                Ok::<_, SessionError>("filled")
            }),
        )
        .route(
            "/counter/{n}",
            post(|session: Session, Path(n): Path<u32>| async move {
                session.set("counter", &n).await?;
                Ok::<_, SessionError>("set")
            }),
        )
        .route(
            "/counter",
            get(|session: Session| async move {
                let n: Option<u32> = session.get("counter").await?;
                Ok::<_, SessionError>(n.unwrap_or_default().to_string())
            }),
        )
        .layer(layer)
}

async fn send(app: &Router, request: Request<Body>) -> http::Response<Body> {
    let response = app.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    response
}

async fn wal_position(conn: &mut PgConnection) -> u64 {
    let lsn: i64 =
        sqlx::query_scalar("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint")
            .fetch_one(&mut *conn)
            .await
            .expect("lsn");
    u64::try_from(lsn).expect("positive")
}

/// WAL bytes and statements for `requests` requests built by `request`.
async fn measure(
    conn: &mut PgConnection,
    app: &Router,
    requests: u64,
    request: impl Fn(u64) -> Request<Body>,
) -> (u64, u64) {
    let wal_before = wal_position(conn).await;
    let statements_before = STATEMENTS.load(Ordering::SeqCst);
    for i in 0..requests {
        send(app, request(i)).await;
    }
    let statements = STATEMENTS.load(Ordering::SeqCst) - statements_before;
    let wal = wal_position(conn).await - wal_before;
    (wal, statements)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_write_in_a_large_session_writes_little_wal() {
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(CountStatements))
        .expect("subscriber");
    let (store, schema) = postgres_support::store().await;
    let mut conn = postgres_support::connect().await;
    // Keep autovacuum off these two tables while measuring, so that only
    // the requests write WAL. (Settings of the test's schema, not the
    // store's.)
    for table in ["sessions", "attributes"] {
        sqlx::query(&format!(
            "ALTER TABLE {}.{table} SET (autovacuum_enabled = false)",
            schema.name
        ))
        .execute(&mut conn)
        .await
        .expect("alter");
    }
    let config = SessionConfig::default().with_insecure_cookie_over_http();
    let app = app(SessionLayer::with_config(store, config).expect("layer"));

    let response = send(
        &app,
        Request::post("/fill").body(Body::empty()).expect("request"),
    )
    .await;
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let set = |n: u64| {
        Request::post(format!("/counter/{n}"))
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .expect("request")
    };
    let read = |_| {
        Request::get("/counter")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .expect("request")
    };

    // Warm up: after a checkpoint, the first change to each page logs the
    // whole page once; that belongs to no request in particular.
    measure(&mut conn, &app, 20, set).await;
    // The least of three rounds, in case something else on the server wrote
    // WAL meanwhile.
    let mut rounds = Vec::new();
    for _ in 0..3 {
        rounds.push(measure(&mut conn, &app, REQUESTS, |i| set(i + 1_000)).await);
    }
    let (wal, statements) = rounds.iter().min().copied().expect("three rounds");
    let per_request = wal / REQUESTS;
    println!(
        "write: {ATTRIBUTES} attributes x {VALUE_BYTES} bytes, {REQUESTS} requests each setting \
         one integer: {per_request} WAL bytes/request (rounds: {:?} bytes), {} statements/request",
        rounds.iter().map(|(w, _)| w / REQUESTS).collect::<Vec<_>>(),
        statements as f64 / REQUESTS as f64
    );
    assert!(
        per_request <= WAL_BUDGET,
        "{per_request} WAL bytes per request, over the budget of {WAL_BUDGET}"
    );
    assert_eq!(
        statements, REQUESTS,
        "one apply per request, without a load first"
    );

    // Reads inside the touch interval: one statement, no write. Vacuum
    // first so that no read finds dead row versions to prune.
    for table in ["sessions", "attributes"] {
        sqlx::query(&format!("VACUUM {}.{table}", schema.name))
            .execute(&mut conn)
            .await
            .expect("vacuum");
    }
    measure(&mut conn, &app, 5, read).await;
    let mut rounds = Vec::new();
    for _ in 0..3 {
        rounds.push(measure(&mut conn, &app, 50, read).await);
    }
    let (wal, statements) = rounds.iter().min().copied().expect("three rounds");
    println!(
        "read-only: 50 requests inside the touch interval: {wal} WAL bytes in all \
         (rounds: {:?}), {} statements/request",
        rounds.iter().map(|(w, _)| *w).collect::<Vec<_>>(),
        statements as f64 / 50.0
    );
    assert_eq!(wal, 0, "a read-only request wrote WAL");
    assert_eq!(
        statements, 50,
        "one statement (the load) per read-only request"
    );
}
