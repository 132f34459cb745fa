//! The PostgreSQL store against a real server: the behavioural suite, the
//! migrations, the cleanup task and the error paths.
#![cfg(all(feature = "postgres", feature = "testing"))]

mod postgres_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use postgres_support::{
    SchemaGuard, SuiteStore, assert_all_live, connect, database_url, store, suite_store,
    unique_name,
};
use sqlx::Connection;
use tower_httpsession::SessionStore;
use tower_httpsession::store::postgres::PostgresStore;
use tower_httpsession::store::testing::{fresh_key, record};
use tower_httpsession::store::{
    Applied, ChangeSet, Created, HealthStatus, Operation, StoreErrorKind, Swap,
};

async fn make_store() -> SuiteStore {
    suite_store().await
}

tower_httpsession::store_suite!(make_store);
tower_httpsession::principal_suite!(make_store);

/// The rows of one table of `schema`.
async fn count(schema: &str, table: &str) -> i64 {
    let mut conn = connect().await;
    let n = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.{table}"))
        .fetch_one(&mut conn)
        .await
        .expect("count");
    let _ = conn.close().await;
    n
}

#[tokio::test]
async fn concurrent_migrations_succeed_and_leave_the_apps_own_alone() {
    let schema = SchemaGuard::new().await;
    let app_schema = SchemaGuard::new().await;
    let mut conn = connect().await;
    let public_before: Option<(i64, Option<i64>)> = public_migrations(&mut conn).await;
    // The application's own migrations, in its own schema, claim version 1
    // with another checksum: a migrator that read this table would fail.
    for statement in [
        format!("CREATE SCHEMA {}", app_schema.name),
        format!(
            "CREATE TABLE {}._sqlx_migrations (version BIGINT PRIMARY KEY, \
             description TEXT NOT NULL, installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), \
             success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)",
            app_schema.name
        ),
        format!(
            "INSERT INTO {}._sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES (1, 'app', true, '\\x00', 1)",
            app_schema.name
        ),
    ] {
        sqlx::query(&statement)
            .execute(&mut conn)
            .await
            .expect("app schema");
    }
    // The application's connections resolve names in its schema first.
    let url = format!(
        "{}?options=-c%20search_path%3D{}",
        database_url(),
        app_schema.name
    );
    let build = || {
        PostgresStore::builder(url.clone())
            .with_schema(&schema.name)
            .with_max_connections(2)
            .connect()
    };
    let (a, b) = (build().await.expect("a"), build().await.expect("b"));
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.expect("first concurrent migrate");
    rb.expect("second concurrent migrate");
    a.migrate().await.expect("migrating again is a no-op");

    let ours: Vec<(i64, bool)> = sqlx::query_as(&format!(
        "SELECT version, success FROM {}._sqlx_migrations ORDER BY version",
        schema.name
    ))
    .fetch_all(&mut conn)
    .await
    .expect("store's migrations");
    assert_eq!(ours, [(1, true), (2, true), (3, true)]);
    let theirs: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(&format!(
        "SELECT version, description, checksum FROM {}._sqlx_migrations",
        app_schema.name
    ))
    .fetch_all(&mut conn)
    .await
    .expect("app's migrations");
    assert_eq!(theirs, [(1, "app".to_owned(), vec![0u8])]);
    assert_eq!(public_migrations(&mut conn).await, public_before);

    // The store works through the application's search_path.
    let (id, key) = fresh_key();
    let rec = record(&id, Duration::from_secs(60), &[("a", "1")]);
    assert_eq!(
        a.create(&key, &rec, None).await.expect("create"),
        Created::Stored
    );
    assert_eq!(b.load(&key).await.expect("load"), Some(rec));
    let _ = conn.close().await;
}

/// Rows and highest version of `public._sqlx_migrations`, if it exists.
async fn public_migrations(conn: &mut sqlx::PgConnection) -> Option<(i64, Option<i64>)> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await
            .expect("regclass");
    if !exists {
        return None;
    }
    Some(
        sqlx::query_as("SELECT count(*), max(version) FROM public._sqlx_migrations")
            .fetch_one(&mut *conn)
            .await
            .expect("public migrations"),
    )
}

#[tokio::test]
async fn cleanup_removes_expired_sessions_and_only_those() {
    let (store, schema) = store().await;
    let mut live = Vec::new();
    for _ in 0..3 {
        let (id, key) = fresh_key();
        let rec = record(&id, Duration::from_secs(600), &[("a", "1"), ("b", "2")]);
        assert_eq!(
            store.create(&key, &rec, None).await.expect("create"),
            Created::Stored
        );
        live.push(key);
    }
    for _ in 0..5 {
        let (id, key) = fresh_key();
        let mut rec = record(&id, Duration::from_secs(600), &[("x", "1"), ("y", "2")]);
        rec.expires_at = rec.created - Duration::from_secs(1);
        assert_eq!(
            store.create(&key, &rec, None).await.expect("create"),
            Created::Stored
        );
    }
    assert_eq!(count(&schema.name, "sessions").await, 8);

    // One bounded batch by hand.
    assert_eq!(store.delete_expired(2).await.expect("batch"), 2);
    assert_eq!(count(&schema.name, "sessions").await, 6);

    // The task takes the rest, in batches of two.
    let handle = store.spawn_cleanup(Duration::from_millis(50), 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&schema.name, "sessions").await > 3 {
        assert!(Instant::now() < deadline, "cleanup did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.stop().await;
    assert_eq!(count(&schema.name, "sessions").await, 3);
    assert_eq!(count(&schema.name, "attributes").await, 6);
    assert_all_live(&store, &live, 2).await;
    assert_eq!(store.delete_expired(100).await.expect("batch"), 0);
}

/// Counts the warnings the crate logs on this thread.
#[derive(Clone, Default)]
struct Warnings(Arc<AtomicU64>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() == tracing::Level::WARN && meta.target().starts_with("tower_httpsession") {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Polls `done` every 10 ms until it holds, failing after `limit`.
async fn eventually(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// A current-thread runtime: the cleanup task logs on the test's thread,
// where the counting subscriber is the default.
#[tokio::test(flavor = "current_thread")]
async fn cleanup_survives_database_errors() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let warnings = Warnings::default();
    let _logging =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(warnings.clone()));
    // A schema that was never migrated: every batch fails, the task goes on.
    let schema = SchemaGuard::new().await;
    let store = PostgresStore::builder(database_url())
        .with_schema(&schema.name)
        .connect()
        .await
        .expect("connect");
    let e = store.delete_expired(10).await.expect_err("no table");
    assert_eq!(e.operation(), Operation::Cleanup);
    let handle = store.spawn_cleanup(Duration::from_millis(20), 10);
    eventually("three failed sweeps", Duration::from_secs(20), async || {
        warnings.0.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert!(
        !handle.is_finished(),
        "the task must keep going after errors"
    );

    // Once the tables exist, the same task deletes what expired.
    store.migrate().await.expect("migrate");
    let (id, key) = fresh_key();
    let mut rec = record(&id, Duration::from_secs(600), &[("a", "1")]);
    rec.expires_at = rec.created - Duration::from_secs(1);
    assert_eq!(
        store.create(&key, &rec, None).await.expect("create"),
        Created::Stored
    );
    eventually(
        "the expired session deleted",
        Duration::from_secs(20),
        async || count(&schema.name, "sessions").await == 0,
    )
    .await;
    handle.stop().await;
}

#[tokio::test]
async fn create_takes_a_key_held_only_by_an_expired_session() {
    let (store, _schema) = store().await;
    let (id, key) = fresh_key();
    let mut old = record(&id, Duration::from_secs(600), &[("old", "1")]);
    old.expires_at = old.created - Duration::from_secs(1);
    assert_eq!(
        store.create(&key, &old, None).await.expect("create"),
        Created::Stored
    );
    let new = record(&id, Duration::from_secs(600), &[("new", "2")]);
    assert_eq!(
        store.create(&key, &new, None).await.expect("create"),
        Created::Stored
    );
    assert_eq!(store.load(&key).await.expect("load"), Some(new));
}

#[tokio::test]
async fn apply_writes_metadata_without_attributes_and_keeps_millis() {
    let (store, _schema) = store().await;
    let (id, key) = fresh_key();
    let rec = record(&id, Duration::from_secs(600), &[("a", "1")]);
    assert_eq!(
        store.create(&key, &rec, None).await.expect("create"),
        Created::Stored
    );
    let changes = ChangeSet::builder()
        .with_max_inactive(Duration::from_millis(1_234_567))
        .build();
    assert_eq!(
        store.apply(&key, &changes).await.expect("apply"),
        Applied::Written
    );
    let loaded = store.load(&key).await.expect("load").expect("stored");
    assert_eq!(loaded.max_inactive, Duration::from_millis(1_234_567));
    assert_eq!(loaded.expires_at, rec.expires_at, "no touch, no new expiry");
}

#[tokio::test]
async fn health_counts_sessions_and_reports_missing_tables() {
    let (store, schema) = store().await;
    for _ in 0..4 {
        let (id, key) = fresh_key();
        let rec = record(&id, Duration::from_secs(600), &[]);
        assert_eq!(
            store.create(&key, &rec, None).await.expect("create"),
            Created::Stored
        );
    }
    let mut conn = connect().await;
    sqlx::query(&format!("ANALYZE {}.sessions", schema.name))
        .execute(&mut conn)
        .await
        .expect("analyze");
    let _ = conn.close().await;
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Up, "{health:?}");
    assert_eq!(health.backend, "postgres");
    assert_eq!(health.sessions, Some(4));

    let unmigrated = SchemaGuard::new().await;
    let store = PostgresStore::builder(database_url())
        .with_schema(&unmigrated.name)
        .connect()
        .await
        .expect("connect");
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Down);
    assert!(
        health
            .error
            .as_deref()
            .is_some_and(|e| e.contains("migrate")),
        "{health:?}"
    );
}

#[tokio::test]
async fn errors_name_backend_and_operation_and_keep_their_source() {
    let unmigrated = SchemaGuard::new().await;
    let store = PostgresStore::builder(database_url())
        .with_schema(&unmigrated.name)
        .connect()
        .await
        .expect("connect");
    let (id, key) = fresh_key();
    let e = store.load(&key).await.expect_err("no table");
    assert_eq!(e.backend(), "postgres");
    assert_eq!(e.operation(), Operation::Load);
    assert_eq!(e.kind(), StoreErrorKind::Config, "undefined table");
    let source = std::error::Error::source(&e).expect("source kept");
    assert!(source.downcast_ref::<sqlx::Error>().is_some());
    let e = store.delete(&key, &id).await.expect_err("no table");
    assert_eq!(e.operation(), Operation::Delete);
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_as_unavailable() {
    const ACQUIRE: Duration = Duration::from_millis(300);
    // What a call may take past its acquire timeout: a loaded two-core
    // machine runs timers late by tens of milliseconds, 700 ms is many
    // times that, and a call that waited for the default acquire timeout
    // (1 s) instead still fails the bound.
    const SLACK: Duration = Duration::from_millis(700);
    let url = "postgres://postgres:secret-password@127.0.0.1:1/test";
    let started = Instant::now();
    let e = PostgresStore::builder(url)
        .with_acquire_timeout(ACQUIRE)
        .connect()
        .await
        .expect_err("nothing listens on port 1");
    let took = started.elapsed();
    assert!(e.is_unavailable(), "{e:?}");
    assert_eq!(e.operation(), Operation::Connect);
    assert!(took < ACQUIRE + SLACK, "connect took {took:?}");

    let store = PostgresStore::builder(url)
        .with_acquire_timeout(ACQUIRE)
        .connect_lazy()
        .expect("lazy");
    let (_, key) = fresh_key();
    let started = Instant::now();
    let e = store.load(&key).await.expect_err("down");
    let took = started.elapsed();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(took < ACQUIRE + SLACK, "load took {took:?}");
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Down);
    assert!(!format!("{store:?} {e:?} {health:?}").contains("secret-password"));
}

#[tokio::test]
async fn debug_prints_neither_password_nor_key() {
    let (store, _schema) = store().await;
    let (id, key) = fresh_key();
    let rec = record(&id, Duration::from_secs(600), &[("a", "1")]);
    assert_eq!(
        store.create(&key, &rec, None).await.expect("create"),
        Created::Stored
    );
    let printed = format!("{store:?} {key:?} {rec:?}");
    assert!(!printed.contains(key.as_str()), "{printed}");
    let builder = PostgresStore::builder("postgres://u:pw-1234@127.0.0.1/test");
    assert!(!format!("{builder:?}").contains("pw-1234"));
    let _ = unique_name("x");
}

/// 50 attributes of 1,000 bytes of JSON each, and a small counter.
const LARGE_ATTRIBUTES: usize = 50;
const LARGE_VALUE_BYTES: usize = 1_000;

#[tokio::test]
async fn load_some_of_a_large_session_returns_only_the_named() {
    let (store, _schema) = store().await;
    let (id, key) = fresh_key();
    let value = format!("\"{}\"", "x".repeat(LARGE_VALUE_BYTES - 2));
    let names: Vec<String> = (0..LARGE_ATTRIBUTES)
        .map(|i| format!("attr{i:02}"))
        .collect();
    let mut attributes: Vec<(&str, &str)> =
        names.iter().map(|n| (n.as_str(), value.as_str())).collect();
    attributes.push(("counter", "7"));
    let rec = record(&id, Duration::from_secs(600), &attributes);
    assert_eq!(
        store.create(&key, &rec, None).await.expect("create"),
        Created::Stored
    );

    let some = store
        .load_some(&key, &["counter"])
        .await
        .expect("load_some")
        .expect("stored");
    let mut expected = rec.clone();
    expected.attributes.retain(|name, _| name == "counter");
    assert_eq!(some.record, expected, "the metadata and the counter only");
    assert_eq!(some.record.attributes["counter"], "7");

    let some = store
        .load_some(&key, &["attr17", "absent"])
        .await
        .expect("load_some")
        .expect("stored");
    assert_eq!(some.record.attributes.len(), 1);
    assert_eq!(some.record.attributes["attr17"], value);

    // The figures, for the record: the whole session against one value.
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        store.load(&key).await.expect("load").expect("stored");
    }
    let whole = started.elapsed() / rounds;
    let started = Instant::now();
    for _ in 0..rounds {
        store
            .load_some(&key, &["counter"])
            .await
            .expect("load_some")
            .expect("stored");
    }
    let one = started.elapsed() / rounds;
    println!(
        "{LARGE_ATTRIBUTES} attributes x {LARGE_VALUE_BYTES} bytes: load {whole:?}, \
         load_some of one name {one:?} per call"
    );
}

/// 32 clients incrementing one counter: every increment kept, and every
/// mismatch answers the newest value, so a client fails only when another
/// swapped since it last looked: the k-th to win needs at most k calls, all
/// 32 at most 528. Prints the calls it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_increments_are_answered_the_newest_value() {
    let (store, _schema) = store().await;
    let (id, key) = fresh_key();
    let rec = record(&id, Duration::from_secs(600), &[("n", "0")]);
    assert_eq!(
        store.create(&key, &rec, None).await.expect("create"),
        Created::Stored
    );
    let verifier = id;
    let attempts = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            let key = key.clone();
            let attempts = attempts.clone();
            tokio::spawn(async move {
                let mut current = Some("0".to_owned());
                loop {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    let n: u64 = current.as_deref().map_or(0, |v| v.parse().expect("number"));
                    match store
                        .compare_and_set(
                            &key,
                            &verifier,
                            "n",
                            current.as_deref(),
                            Some(&(n + 1).to_string()),
                        )
                        .await
                        .expect("cas")
                    {
                        Swap::Swapped => return,
                        Swap::Mismatch { current: now } => current = now,
                        other => panic!("the session vanished: {other:?}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let elapsed = started.elapsed();
    let loaded = store.load(&key).await.expect("load").expect("stored");
    assert_eq!(loaded.attributes["n"], "32");
    let attempts = attempts.load(Ordering::Relaxed);
    println!(
        "32 concurrent increments: {attempts} compare-and-set calls in {elapsed:?} \
         (at most 32 x 33 / 2 = 528 when every mismatch answers the newest value)"
    );
    assert!(
        attempts <= 528,
        "{attempts} attempts: a mismatch answered a stale value"
    );
}

#[tokio::test]
async fn commits_wait_for_the_flush_unless_told_not_to() {
    let schema = SchemaGuard::new().await;
    let setting = |store: PostgresStore| async move {
        let value: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(store.pool())
            .await
            .expect("show");
        value
    };
    let builder = || PostgresStore::builder(database_url()).with_schema(&schema.name);
    let waiting = builder().connect().await.expect("connect");
    assert_eq!(setting(waiting).await, "on");
    let not_waiting = builder()
        .with_commits_not_waiting_for_flush()
        .connect()
        .await
        .expect("connect");
    assert_eq!(setting(not_waiting.clone()).await, "off");
    // The store works as ever.
    not_waiting.migrate().await.expect("migrate");
    let (id, key) = fresh_key();
    let rec = record(&id, Duration::from_secs(60), &[("a", "1")]);
    assert_eq!(
        not_waiting.create(&key, &rec, None).await.expect("create"),
        Created::Stored
    );
    assert_eq!(not_waiting.load(&key).await.expect("load"), Some(rec));
}
