//! Connections of the PostgreSQL store terminated by the server mid-test:
//! calls fail at most once, as unavailable, and the pool recovers by itself.
#![cfg(all(feature = "postgres", feature = "testing"))]

mod common;
mod postgres_support;

use std::time::Duration;

use postgres_support::{SchemaGuard, database_url, kill_connections, unique_name};
use reqwest::StatusCode;
use tower_httpsession::store::postgres::{self, PostgresStore};
use tower_httpsession::store::testing::{fresh_key, record};
use tower_httpsession::store::{Created, Operation};
use tower_httpsession::{SessionLayer, SessionStore};

/// When the pool checks a connection before handing it out.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// Every time.
    Always,
    /// The default: after it sat idle for a while.
    WhenIdle,
    /// Never.
    Never,
}

/// A migrated store whose connections are named `app_name`.
async fn store(app_name: &str, check: Check, max: u32) -> (PostgresStore, SchemaGuard) {
    let guard = SchemaGuard::new().await;
    let mut builder = PostgresStore::builder(database_url())
        .with_schema(&guard.name)
        .with_application_name(app_name)
        .with_max_connections(max);
    builder = match check {
        Check::Always => builder.with_connection_check_after(Duration::ZERO),
        Check::WhenIdle => builder,
        Check::Never => builder.without_connection_check(),
    };
    let store = builder.connect().await.expect("connect");
    store.migrate().await.expect("migrate");
    (store, guard)
}

/// Kills the store's connections, waits `idle`, then loads: at most
/// `max_failures` calls fail, as unavailable.
async fn terminated_then_recovers(check: Check, max: u32, idle: Duration, max_failures: usize) {
    let name = unique_name("ths-outage-");
    let (store, _schema) = store(&name, check, max).await;
    let (id, key) = fresh_key();
    let rec = record(&id, Duration::from_secs(600), &[("a", "1")]);
    assert_eq!(
        store.create(&key, &rec, None).await.expect("create"),
        Created::Stored
    );
    // Open several pooled connections.
    let loads: Vec<_> = (0..4).map(|_| store.load(&key)).collect();
    for loaded in futures_util::future::join_all(loads).await {
        assert!(loaded.expect("load").is_some());
    }
    assert!(kill_connections(&name).await >= 1, "no connection to kill");
    // The pool measures idleness on the real clock, so this waits for real;
    // a sleep only ever lasts longer, which a loaded machine cannot break.
    tokio::time::sleep(idle).await;

    let mut failures = Vec::new();
    for _ in 0..6 {
        match store.load(&key).await {
            Ok(loaded) => assert_eq!(loaded.as_ref(), Some(&rec)),
            Err(e) => failures.push(e),
        }
    }
    println!("{check:?} max={max}: {} failed call(s)", failures.len());
    assert!(failures.len() <= max_failures, "{failures:?}");
    for e in &failures {
        assert!(e.is_unavailable(), "{e:?}");
        assert_eq!(e.operation(), Operation::Load);
        assert_eq!(e.backend(), "postgres");
    }
    // Writes work again too.
    let changes = tower_httpsession::store::ChangeSet::builder()
        .with_attribute("b", "2")
        .build();
    assert_eq!(
        store
            .apply(&key, &changes)
            .await
            .expect("apply after recovery"),
        tower_httpsession::store::Applied::Written
    );
}

#[tokio::test]
async fn checked_pool_hides_terminated_connections() {
    terminated_then_recovers(Check::Always, 4, Duration::ZERO, 0).await;
}

#[tokio::test]
async fn default_pool_checks_connections_that_sat_idle() {
    let idle = postgres::DEFAULT_CHECK_IDLE_AFTER + Duration::from_millis(200);
    terminated_then_recovers(Check::WhenIdle, 4, idle, 0).await;
}

#[tokio::test]
async fn default_pool_fails_once_on_a_connection_broken_while_busy() {
    terminated_then_recovers(Check::WhenIdle, 1, Duration::ZERO, 1).await;
}

#[tokio::test]
async fn unchecked_pool_fails_once_then_recovers() {
    terminated_then_recovers(Check::Never, 1, Duration::ZERO, 1).await;
}

/// Through the session layer: the client sees at most one 503, with
/// `Retry-After`, and the session survives.
async fn http_outage(check: Check) {
    let name = unique_name("ths-outage-http-");
    let (store, _schema) = store(&name, check, 1).await;
    let layer = SessionLayer::with_config(store.clone(), common::config()).expect("layer");
    let addr = common::serve(common::app(layer)).await;
    let client = common::browser();
    let base = format!("http://{addr}");

    let response = client
        .post(format!("{base}/incr/n"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(kill_connections(&name).await >= 1);

    let mut unavailable = 0;
    let mut last = 1;
    for _ in 0..5 {
        let response = client
            .post(format!("{base}/incr/n"))
            .send()
            .await
            .expect("send");
        match response.status() {
            StatusCode::OK => {
                last = response
                    .text()
                    .await
                    .expect("body")
                    .parse()
                    .expect("number");
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(
                    response
                        .headers()
                        .contains_key(reqwest::header::RETRY_AFTER),
                    "a 503 must say when to retry"
                );
                unavailable += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    println!("{check:?}: {unavailable} response(s) 503");
    assert!(unavailable <= 1, "{unavailable} responses were 503");
    // Each successful request counted once; the session was never lost.
    assert_eq!(last, 1 + 5 - unavailable);
}

#[tokio::test]
async fn http_client_sees_no_503_with_a_checked_pool() {
    http_outage(Check::Always).await;
}

#[tokio::test]
async fn http_client_sees_at_most_one_503_with_an_unchecked_pool() {
    http_outage(Check::Never).await;
}

#[tokio::test]
async fn http_client_sees_at_most_one_503_with_the_default_pool() {
    http_outage(Check::WhenIdle).await;
}
