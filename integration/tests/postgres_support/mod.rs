//! Per-test schemas on the real PostgreSQL server, dropped after the test.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};
use tower_httpsession::SessionStore;
use tower_httpsession::store::StoreKey;
use tower_httpsession::store::postgres::PostgresStore;
use tower_httpsession::store::testing::Guarded;

/// Schemas of this prefix belong to these tests.
const PREFIX: &str = "ths_test_";
/// Schemas older than this are left over from an aborted run.
const STALE_AFTER_SECS: u64 = 3600;

/// The server to test against: `DATABASE_URL`, read at run time.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A name no other test in any process uses at the same time.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}{}_{}_{}",
        unix_secs(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn connect() -> PgConnection {
    PgConnection::connect(&database_url())
        .await
        .expect("connect")
}

/// A schema dropped (with everything in it) when the guard drops, even if
/// the test panicked.
#[derive(Debug)]
pub struct SchemaGuard {
    pub name: String,
}

impl SchemaGuard {
    /// A fresh schema name; stale schemas of earlier runs are dropped first.
    pub async fn new() -> Self {
        drop_stale().await;
        Self {
            name: unique_name(PREFIX),
        }
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A runtime of its own, so this works from a test's runtime and
        // while unwinding.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&database_url()).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// Drops test schemas left behind by runs that were killed.
async fn drop_stale() {
    let mut conn = connect().await;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(PREFIX)
            .fetch_all(&mut conn)
            .await
            .expect("list schemas");
    let now = unix_secs();
    for name in names {
        let born = name[PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|s| s.parse::<u64>().ok());
        if born.is_some_and(|b| b + STALE_AFTER_SECS < now) {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .execute(&mut conn)
                .await;
        }
    }
    let _ = conn.close().await;
}

/// A migrated store in a fresh schema, with connections named `app_name`.
pub async fn store_named(app_name: &str) -> (PostgresStore, SchemaGuard) {
    let guard = SchemaGuard::new().await;
    let store = PostgresStore::builder(database_url())
        .with_schema(&guard.name)
        .with_application_name(app_name)
        .with_max_connections(8)
        .connect()
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    (store, guard)
}

/// A migrated store in a fresh schema.
pub async fn store() -> (PostgresStore, SchemaGuard) {
    store_named(&unique_name("ths-test-")).await
}

/// Terminates every server connection named `app_name`, and waits until
/// their backends have gone; answers how many there were.
pub async fn kill_connections(app_name: &str) -> i64 {
    let mut conn = connect().await;
    // In the select list, not the filter: only the rows the filter keeps
    // are terminated.
    let terminated: Vec<(i32, bool)> = sqlx::query_as(
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(app_name)
    .fetch_all(&mut conn)
    .await
    .expect("terminate");
    let pids: Vec<i32> = terminated.iter().map(|(pid, _)| *pid).collect();
    // Termination is a signal: a backend may still answer for a moment.
    // Polled, with a deadline far past the few milliseconds it takes.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                .bind(&pids)
                .fetch_one(&mut conn)
                .await
                .expect("backends left");
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} terminated backends still there"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = conn.close().await;
    i64::try_from(pids.len()).expect("a count")
}

/// A store that drops its schema when dropped: what the behavioural suite
/// builds for each check.
pub type SuiteStore = Guarded<PostgresStore, SchemaGuard>;

/// A [`SuiteStore`] in a fresh schema.
pub async fn suite_store() -> SuiteStore {
    let (store, schema) = store().await;
    Guarded::new(store, schema)
}

/// Asserts that every session of `keys` loads, with `attributes` attributes.
pub async fn assert_all_live(store: &PostgresStore, keys: &[StoreKey], attributes: usize) {
    for key in keys {
        let rec = store
            .load(key)
            .await
            .expect("load")
            .expect("live session kept");
        assert_eq!(rec.attributes.len(), attributes);
    }
}

/// Runs `sql`, failing the test if it fails.
pub async fn execute(conn: &mut PgConnection, sql: &str) {
    sqlx::query(sql)
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Expired sessions seeded by [`seed_expired`] hold this many attributes.
pub const SEEDED_ATTRIBUTES: i64 = 3;

/// Seeds `n` expired sessions in one statement, keys of the store's format
/// (22 characters of base64url) and 32-byte verifier hashes, expired a
/// minute ago and more (each a millisecond earlier than the last), with
/// `SEEDED_ATTRIBUTES` attributes each. `columns` are the expiry columns
/// to fill (`expires_at`, plus `sweep_at` from 0003 on).
pub async fn seed_expired(conn: &mut PgConnection, schema: &str, n: i64, columns: &[&str]) {
    let expiry = "now() - interval '1 minute' - g * interval '1 millisecond'";
    let names = columns.join(", ");
    let values = vec![expiry; columns.len()].join(", ");
    execute(
        conn,
        &format!(
            "INSERT INTO {schema}.sessions \
                 (key, verifier, created_at, last_accessed_at, idle_timeout_ms, {names}) \
             SELECT substr(translate(encode(sha256(('{schema}' || g)::bytea), 'base64'), \
                                     '+/', '-_'), 1, 22), \
                    sha256(('v' || g)::bytea), now() - interval '2 hours', \
                    now() - interval '2 hours', 3600000, {values} \
             FROM generate_series(1, {n}) g"
        ),
    )
    .await;
    execute(
        conn,
        &format!(
            "INSERT INTO {schema}.attributes (session_key, name, value) \
             SELECT s.key, 'attr' || i, '\"value ' || i || '\"' \
             FROM {schema}.sessions s, generate_series(1, {SEEDED_ATTRIBUTES}) i \
             WHERE s.expires_at <= now()"
        ),
    )
    .await;
}
