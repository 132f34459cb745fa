//! The PostgreSQL store's cleanup at scale, and the migration to the
//! cleanup mark `sweep_at` (migration 0003) from a deployment at 0002.
#![cfg(all(feature = "postgres", feature = "testing"))]

mod postgres_support;

use std::time::{Duration, Instant};

use postgres_support::{
    SchemaGuard, assert_all_live, connect, database_url, execute, seed_expired, store, unique_name,
};
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection};
use tower_httpsession::SessionStore;
use tower_httpsession::store::StoreKey;
use tower_httpsession::store::postgres::{CleanupOptions, MAX_CLEANUP_BATCH, PostgresStore};
use tower_httpsession::store::testing::{fresh_key, record};
use tower_httpsession::store::{Applied, ChangeSet, Created, Touch};

/// Expired sessions seeded in bulk.
const EXPIRED: i64 = 50_000;
const BATCH: u32 = 1_000;

async fn scalar(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A live session created through the store, with two attributes.
async fn live_session(store: &PostgresStore) -> StoreKey {
    let (id, key) = fresh_key();
    let rec = record(&id, Duration::from_secs(600), &[("a", "1"), ("b", "2")]);
    assert_eq!(
        store.create(&key, &rec, None).await.expect("create"),
        Created::Stored
    );
    key
}

#[tokio::test]
async fn the_cleanup_deletes_every_expired_session_in_bounded_batches_and_no_live_one() {
    let started = Instant::now();
    let (store, schema) = store().await;
    let s = &schema.name;
    let mut conn = connect().await;
    seed_expired(&mut conn, s, EXPIRED, &["expires_at", "sweep_at"]).await;
    let live: Vec<StoreKey> = {
        let mut keys = Vec::new();
        for _ in 0..20 {
            keys.push(live_session(&store).await);
        }
        keys
    };
    // One live session's mark is due, and older than every expired one's.
    let due = &live[0];
    execute(
        &mut conn,
        &format!(
            "UPDATE {s}.sessions SET sweep_at = now() - interval '1 hour' \
             WHERE key = '{}'",
            due.as_str()
        ),
    )
    .await;
    execute(&mut conn, &format!("ANALYZE {s}.sessions")).await;

    // The first batch visits the oldest marks first: the live session, kept
    // and scheduled at its expiry, then expired ones.
    let first = store.sweep_expired(BATCH).await.expect("batch");
    assert_eq!(
        (first.visited, first.deleted, first.rescheduled),
        (u64::from(BATCH), u64::from(BATCH) - 1, 1)
    );
    let moved = scalar(
        &mut conn,
        &format!(
            "SELECT count(*) FROM {s}.sessions \
             WHERE key = '{}' AND sweep_at = expires_at AND expires_at > now()",
            due.as_str()
        ),
    )
    .await;
    assert_eq!(moved, 1, "the due live session's mark moved to its expiry");
    // A batch asked for more than the bound visits no more than the bound.
    let big = store.sweep_expired(u32::MAX).await.expect("big batch");
    assert_eq!(big.visited, u64::from(MAX_CLEANUP_BATCH));
    assert_eq!(big.deleted, u64::from(MAX_CLEANUP_BATCH));

    // The task deletes the rest.
    let handle = store.spawn_cleanup_with(
        CleanupOptions::new(Duration::from_millis(20), BATCH).with_pause_percent(50),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let count_sessions = format!("SELECT count(*) FROM {s}.sessions");
    while scalar(&mut conn, &count_sessions).await > 20 {
        assert!(Instant::now() < deadline, "the cleanup did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.stop().await;
    assert_eq!(scalar(&mut conn, &count_sessions).await, 20);
    let attributes = format!("SELECT count(*) FROM {s}.attributes");
    assert_eq!(scalar(&mut conn, &attributes).await, 40);
    assert_all_live(&store, &live, 2).await;
    // Nothing is due any more: the live sessions' marks are their expiries.
    let rest = store.sweep_expired(BATCH).await.expect("batch");
    assert_eq!(rest.visited, 0);
    let _ = conn.close().await;
    println!("cleanup test took {:?}", started.elapsed());
}

/// A cleanup batch commits without waiting for the WAL flush, and that
/// setting ends with its own transaction: the next statement on the same
/// connection (the store's only one here), such as a session write, waits
/// for the flush as the server is configured to.
#[tokio::test]
async fn the_cleanup_skips_the_flush_wait_in_its_own_transaction_only() {
    let guard = SchemaGuard::new().await;
    let store = PostgresStore::builder(database_url())
        .with_schema(&guard.name)
        .with_max_connections(1)
        .connect()
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let mut conn = connect().await;
    let configured: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut conn)
        .await
        .expect("the server's setting");
    seed_expired(&mut conn, &guard.name, 10, &["expires_at", "sweep_at"]).await;
    let swept = store.sweep_expired(100).await.expect("sweep");
    assert_eq!(swept.deleted, 10, "every expired session deleted");
    let after: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(store.pool())
        .await
        .expect("the connection's setting");
    assert_eq!(
        after, configured,
        "the cleanup's setting outlived its transaction"
    );
}

#[tokio::test]
async fn a_touch_keeps_the_mark_unless_it_moves_the_expiry_before_it() {
    let (store, schema) = store().await;
    let s = &schema.name;
    let mut conn = connect().await;
    let (id, key) = fresh_key();
    let rec = record(&id, Duration::from_secs(600), &[("a", "1")]);
    assert_eq!(
        store.create(&key, &rec, None).await.expect("create"),
        Created::Stored
    );
    let mark = format!(
        "SELECT (extract(epoch FROM sweep_at) * 1000)::bigint FROM {s}.sessions WHERE key = '{}'",
        key.as_str()
    );
    let created_mark = scalar(&mut conn, &mark).await;
    let touch = |idle: Option<Duration>| {
        let mut changes = ChangeSet::builder()
            .with_required_verifier(id)
            .with_touch(Touch::new(
                time::OffsetDateTime::now_utc() + Duration::from_secs(5),
                None,
                Some(Duration::ZERO),
            ));
        if let Some(idle) = idle {
            changes = changes.with_max_inactive(idle);
        }
        changes.build()
    };
    // A touch that moves the expiry later leaves the mark.
    assert_eq!(
        store.apply(&key, &touch(None)).await.expect("touch"),
        Applied::Written
    );
    assert_eq!(scalar(&mut conn, &mark).await, created_mark);
    // One that moves it earlier (a shorter idle timeout) takes the mark
    // with it: the mark stays a lower bound of the expiry.
    assert_eq!(
        store
            .apply(&key, &touch(Some(Duration::from_secs(60))))
            .await
            .expect("shorter idle timeout"),
        Applied::Written
    );
    let bound = format!(
        "SELECT count(*) FROM {s}.sessions WHERE key = '{}' AND sweep_at = expires_at",
        key.as_str()
    );
    assert_eq!(scalar(&mut conn, &bound).await, 1);
    assert!(scalar(&mut conn, &mark).await < created_mark);
    // Nor can another writer move the expiry before the mark, which would
    // hide the session from the cleanup until the mark came.
    let hide = format!(
        "UPDATE {s}.sessions SET expires_at = sweep_at - interval '1 second' WHERE key = '{}'",
        key.as_str()
    );
    let refused = sqlx::query(&hide)
        .execute(&mut conn)
        .await
        .expect_err("the check constraint refuses it");
    let code = refused
        .as_database_error()
        .and_then(|e| e.code().map(|c| c.into_owned()));
    assert_eq!(code.as_deref(), Some("23514"), "{refused}");
    let _ = conn.close().await;
}

/// Applies migrations 0001 and 0002 only, from a copy of their files, to
/// `schema`, as a deployment of the previous version did.
async fn migrate_to_0002(schema: &str) {
    let dir = std::env::temp_dir().join(unique_name("ths-migrations-"));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    for file in ["0001_sessions.sql", "0002_principals.sql"] {
        std::fs::copy(source.join(file), dir.join(file)).expect("copy migration");
    }
    let migrator = Migrator::new(dir.as_path()).await.expect("migrations");
    let mut conn = connect().await;
    execute(&mut conn, &format!("CREATE SCHEMA {schema}")).await;
    let _ = conn.close().await;
    let url = format!("{}?options=-c%20search_path%3D{schema}", database_url());
    let mut conn = PgConnection::connect(&url).await.expect("connect");
    migrator.run(&mut conn).await.expect("0001 and 0002");
    let _ = conn.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_deployment_at_0002_migrates_in_place_and_its_sessions_are_kept_and_cleaned_up() {
    let schema = SchemaGuard::new().await;
    let s = &schema.name;
    migrate_to_0002(s).await;
    let store = PostgresStore::builder(database_url())
        .with_schema(s)
        .with_max_connections(4)
        .connect()
        .await
        .expect("connect");
    let mut conn = connect().await;
    // Sessions written by the previous version: live ones through its
    // columns, and expired ones.
    let mut live = Vec::new();
    for i in 0..5 {
        let (id, key) = fresh_key();
        execute(
            &mut conn,
            &format!(
                "INSERT INTO {s}.sessions \
                     (key, verifier, created_at, last_accessed_at, idle_timeout_ms, expires_at) \
                 VALUES ('{}', '\\x{}', now(), now(), 600000, now() + interval '10 minutes')",
                key.as_str(),
                hex(id.as_bytes()),
            ),
        )
        .await;
        execute(
            &mut conn,
            &format!(
                "INSERT INTO {s}.attributes VALUES ('{}', 'n', '{i}')",
                key.as_str()
            ),
        )
        .await;
        live.push((id, key, i));
    }
    seed_expired(&mut conn, s, 500, &["expires_at"]).await;

    store.migrate().await.expect("migrate to 0003");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 AND tablename = 'sessions' \
         ORDER BY 1",
    )
    .bind(s)
    .fetch_all(&mut conn)
    .await
    .expect("indexes");
    assert_eq!(
        indexes,
        ["sessions_pkey", "sessions_principal", "sessions_sweep_at"]
    );

    // The sessions are still there, and still usable.
    for (id, key, i) in &live {
        let rec = store.load(key).await.expect("load").expect("kept");
        assert_eq!(rec.verifier, *id);
        assert_eq!(
            rec.attributes.get("n").map(String::as_str),
            Some(&*i.to_string())
        );
    }
    // The cleanup visits every existing session once: the expired ones are
    // deleted, the live ones scheduled at their expiry.
    let mut deleted = 0;
    loop {
        let batch = store.sweep_expired(100).await.expect("batch");
        deleted += batch.deleted;
        if batch.visited < 100 {
            break;
        }
    }
    assert_eq!(deleted, 500);
    let sessions = format!("SELECT count(*) FROM {s}.sessions");
    assert_eq!(scalar(&mut conn, &sessions).await, 5);
    let scheduled = format!("SELECT count(*) FROM {s}.sessions WHERE sweep_at = expires_at");
    assert_eq!(scalar(&mut conn, &scheduled).await, 5);
    let attributes = format!("SELECT count(*) FROM {s}.attributes");
    assert_eq!(scalar(&mut conn, &attributes).await, 5);
    let _ = conn.close().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
