//! The PostgreSQL cleanup working off a large backlog of expired sessions
//! while requests go on: the requests' p99 latency in windows without and
//! with the cleanup running.
//!
//! A measurement, ignored by default (it seeds a large backlog and runs for
//! a minute or more). Run it in a binary of its own, with the backlog size
//! in `CLEANUP_LOAD_EXPIRED` (default 200,000):
//! `cargo itest --all-features --test postgres_cleanup_load -- --ignored --nocapture`.
#![cfg(all(feature = "postgres", feature = "testing"))]

mod postgres_support;

use std::time::{Duration, Instant};

use postgres_support::{SEEDED_ATTRIBUTES, connect, execute, seed_expired, store};
use sqlx::Connection;
use tower_httpsession::SessionStore;
use tower_httpsession::store::postgres::{CleanupOptions, PostgresStore};
use tower_httpsession::store::testing::{fresh_key, record};
use tower_httpsession::store::{Applied, ChangeSet, Created, StoreKey, Touch, VerifierHash};

/// Tasks sending requests, each one after the other, and the live sessions
/// they use.
const TASKS: usize = 8;
const LIVE: usize = 64;
/// The window without the cleanup, before and after the one with it.
const QUIET_WINDOW: Duration = Duration::from_secs(10);
/// The longest the cleanup may take; the load stops then at the latest.
const CLEANUP_LIMIT: Duration = Duration::from_secs(600);
/// The bar: p99 with the cleanup running, at most this times p99 without.
const P99_BAR: f64 = 1.2;

/// Latencies of one window, sorted.
struct Window(Vec<Duration>);

impl Window {
    fn quantile(&self, q: f64) -> Duration {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((self.0.len() as f64 * q).ceil() as usize).clamp(1, self.0.len()) - 1;
        self.0[i]
    }

    #[allow(clippy::cast_precision_loss)]
    fn describe(&self, took: Duration) -> String {
        format!(
            "{} requests, {:.0}/s, p50 {:?}, p99 {:?}",
            self.0.len(),
            self.0.len() as f64 / took.as_secs_f64(),
            self.quantile(0.5),
            self.quantile(0.99)
        )
    }
}

/// Sends requests from `TASKS` tasks (reads and writes in turn, a write
/// setting one attribute and touching the session when due) until `until`
/// answers true or `limit` passes, and answers their latencies.
async fn load(
    store: &PostgresStore,
    sessions: &[(VerifierHash, StoreKey)],
    limit: Duration,
    until: impl AsyncFn() -> bool,
) -> (Window, Duration) {
    let started = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (store, sessions, stop) = (store.clone(), sessions.to_vec(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = task;
            // Bounded in time and in count.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && latencies.len() < 1_000_000 {
                let (id, key) = &sessions[i % sessions.len()];
                let begun = Instant::now();
                if i % 2 == 0 {
                    let rec = store.load(key).await.expect("load");
                    assert!(rec.is_some(), "a live session is kept");
                } else {
                    let changes = ChangeSet::builder()
                        .with_attribute("n", i.to_string())
                        .with_required_verifier(*id)
                        .with_touch(Touch::new(time::OffsetDateTime::now_utc(), None, None))
                        .build();
                    let applied = store.apply(key, &changes).await.expect("apply");
                    assert_eq!(applied, Applied::Written);
                }
                latencies.push(begun.elapsed());
                i += TASKS;
            }
            latencies
        }));
    }
    let deadline = started + limit;
    while Instant::now() < deadline && !until().await {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    all.sort_unstable();
    (Window(all), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement of a minute or more; run it on its own"]
async fn the_cleanup_of_a_large_backlog_keeps_the_requests_p99() {
    let expired: i64 = std::env::var("CLEANUP_LOAD_EXPIRED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let (store, schema) = store().await;
    let s = &schema.name;
    let mut conn = connect().await;
    let seeding = Instant::now();
    seed_expired(&mut conn, s, expired, &["expires_at", "sweep_at"]).await;
    execute(&mut conn, &format!("VACUUM ANALYZE {s}.sessions")).await;
    execute(&mut conn, &format!("VACUUM ANALYZE {s}.attributes")).await;
    println!(
        "seeded {expired} expired sessions of {SEEDED_ATTRIBUTES} attributes in {:?}",
        seeding.elapsed()
    );
    let mut sessions = Vec::new();
    for _ in 0..LIVE {
        let (id, key) = fresh_key();
        let rec = record(
            &id,
            Duration::from_secs(3600),
            &[("a", "\"x\""), ("n", "0")],
        );
        assert_eq!(
            store.create(&key, &rec, None).await.expect("create"),
            Created::Stored
        );
        sessions.push((id, key));
    }

    let never = async || false;
    let (before, before_took) = load(&store, &sessions, QUIET_WINDOW, never).await;
    println!("without cleanup (before): {}", before.describe(before_took));

    let cleanup = store.spawn_cleanup_with(CleanupOptions::new(Duration::from_secs(1), 1_000));
    let count = format!("SELECT count(*) FROM {s}.sessions");
    let live = i64::try_from(LIVE).expect("count");
    let started = Instant::now();
    let (during, during_took) = load(&store, &sessions, CLEANUP_LIMIT, async || {
        let mut conn = connect().await;
        let n: i64 = sqlx::query_scalar(&count)
            .fetch_one(&mut conn)
            .await
            .expect("count");
        let _ = conn.close().await;
        n <= live
    })
    .await;
    let cleanup_took = started.elapsed();
    cleanup.stop().await;
    println!(
        "with cleanup: {} (deleting {expired} took {cleanup_took:?})",
        during.describe(during_took)
    );

    let (after, after_took) = load(&store, &sessions, QUIET_WINDOW, never).await;
    println!("without cleanup (after): {}", after.describe(after_took));

    let left: i64 = sqlx::query_scalar(&count)
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(left, live, "every expired session deleted, no live one");
    let _ = conn.close().await;
    let quiet = before.quantile(0.99).max(after.quantile(0.99));
    let ratio = during.quantile(0.99).as_secs_f64() / quiet.as_secs_f64();
    println!("p99 with cleanup / p99 without (the higher of the two windows): {ratio:.2}");
    assert!(ratio <= P99_BAR, "p99 rose x{ratio:.2} with the cleanup");
}
