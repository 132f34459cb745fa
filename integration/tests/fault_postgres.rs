//! PostgreSQL under bounded load while the server terminates the store's
//! backends again and again: no panic, every failure a 503 with
//! `Retry-After`, recovery within two seconds, every acknowledged write
//! kept, no invalidated session back.
#![cfg(all(feature = "postgres", feature = "testing"))]

mod fault_support;
mod postgres_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use postgres_support::{SchemaGuard, database_url, kill_connections, unique_name};
use tower_httpsession::SessionStore;
use tower_httpsession::store::postgres::PostgresStore;

const BROWSERS: u64 = 8;
const REQUESTS: u64 = 400;

async fn store(app_name: &str, checked: bool) -> (PostgresStore, SchemaGuard) {
    let guard = SchemaGuard::new().await;
    let mut builder = PostgresStore::builder(database_url())
        .with_schema(&guard.name)
        .with_application_name(app_name)
        .with_max_connections(8);
    if !checked {
        builder = builder.without_connection_check();
    }
    let store = builder.connect().await.expect("connect");
    store.migrate().await.expect("migrate");
    (store, guard)
}

async fn terminated_backends_under_load(checked: bool) {
    let name = unique_name("ths-fault-");
    let (store, _schema) = store(&name, checked).await;
    let store: Arc<dyn SessionStore> = Arc::new(store);
    let server = fault_support::serve(store.clone()).await;
    let killed = Arc::new(AtomicI64::new(0));
    let started = Instant::now();

    let kills = killed.clone();
    let reports = fault_support::load(
        &server.base,
        BROWSERS,
        REQUESTS,
        move |progress| async move {
            while !progress.stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                kills.fetch_add(kill_connections(&name).await, Ordering::SeqCst);
            }
        },
    )
    .await;
    // The promise: 2 s. It takes under half a second (the pool replaces
    // the killed connections), which leaves a loaded machine the rest.
    let recovered = fault_support::recovery(&server.base, Duration::from_secs(2)).await;
    let unavailable: u64 = reports.iter().map(|r| r.unavailable).sum();
    let ok: u64 = reports.iter().map(|r| r.ok).sum();
    println!(
        "checked={checked}: {ok} ok, {unavailable} 503, {} backends terminated, {:.1} s, \
         recovered in {recovered:?}",
        killed.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64()
    );
    assert!(
        killed.load(Ordering::SeqCst) > 0,
        "no backend was terminated"
    );
    assert!(
        recovered.is_some(),
        "no 2xx within two seconds of the last termination"
    );
    fault_support::verify(&*store, &server.base, &reports).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_under_load_lose_nothing() {
    terminated_backends_under_load(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_under_load_lose_nothing_unchecked_pool() {
    terminated_backends_under_load(false).await;
}
