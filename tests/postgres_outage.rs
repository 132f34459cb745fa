//! Connections of the PostgreSQL store terminated by the server mid-test:
//! calls fail at most once, as unavailable, and the pool recovers by itself.
#![cfg(all(feature = "postgres", feature = "testing"))]

mod common;
mod postgres_support;

use std::time::Duration;

use postgres_support::{SchemaGuard, database_url, kill_connections, unique_name};
use reqwest::StatusCode;
use tower_httpsession::store::postgres::PostgresStore;
use tower_httpsession::store::testing::{fresh_key, record};
use tower_httpsession::store::{Created, Operation};
use tower_httpsession::{SessionLayer, SessionStore};

/// A migrated store whose connections are named `app_name`; `checked`
/// keeps the pool's check before each use.
async fn store(app_name: &str, checked: bool, max: u32) -> (PostgresStore, SchemaGuard) {
    let guard = SchemaGuard::new().await;
    let mut builder = PostgresStore::builder(database_url())
        .with_schema(&guard.name)
        .with_application_name(app_name)
        .with_max_connections(max);
    if !checked {
        builder = builder.with_unchecked_connections();
    }
    let store = builder.connect().await.expect("connect");
    store.migrate().await.expect("migrate");
    (store, guard)
}

async fn terminated_then_recovers(checked: bool, max: u32) {
    let name = unique_name("ths-outage-");
    let (store, _schema) = store(&name, checked, max).await;
    let (id, key) = fresh_key();
    let rec = record(&id, Duration::from_secs(600), &[("a", "1")]);
    assert_eq!(
        store.create(&key, &rec).await.expect("create"),
        Created::Stored
    );
    // Open several pooled connections.
    let loads: Vec<_> = (0..4).map(|_| store.load(&key)).collect();
    for loaded in futures_util::future::join_all(loads).await {
        assert!(loaded.expect("load").is_some());
    }
    assert!(kill_connections(&name).await >= 1, "no connection to kill");

    let mut failures = Vec::new();
    for _ in 0..6 {
        match store.load(&key).await {
            Ok(loaded) => assert_eq!(loaded.as_ref(), Some(&rec)),
            Err(e) => failures.push(e),
        }
    }
    println!(
        "checked={checked} max={max}: {} failed call(s)",
        failures.len()
    );
    assert!(failures.len() <= 1, "{failures:?}");
    for e in &failures {
        assert!(e.is_unavailable(), "{e:?}");
        assert_eq!(e.operation(), Operation::Load);
        assert_eq!(e.backend(), "postgres");
    }
    // Writes work again too.
    let mut changes = tower_httpsession::store::ChangeSet::new();
    changes.set_attribute("b", "2");
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
    terminated_then_recovers(true, 4).await;
}

#[tokio::test]
async fn unchecked_pool_fails_once_then_recovers() {
    terminated_then_recovers(false, 1).await;
}

/// Through the session layer: the client sees at most one 503, with
/// `Retry-After`, and the session survives.
async fn http_outage(checked: bool) {
    let name = unique_name("ths-outage-http-");
    let (store, _schema) = store(&name, checked, 1).await;
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
    println!("checked={checked}: {unavailable} response(s) 503");
    assert!(unavailable <= 1, "{unavailable} responses were 503");
    // Each successful request counted once; the session was never lost.
    assert_eq!(last, 1 + 5 - unavailable);
}

#[tokio::test]
async fn http_client_sees_no_503_with_a_checked_pool() {
    http_outage(true).await;
}

#[tokio::test]
async fn http_client_sees_at_most_one_503_with_an_unchecked_pool() {
    http_outage(false).await;
}
