//! Touches and attribute writes update the PostgreSQL store's rows in
//! place (heap-only tuples), and the tables keep their size under a
//! sustained write load.
//!
//! One test in a binary of its own, so that no other test of this crate
//! loads the server while it measures. Run it with
//! `cargo itest --all-features --test postgres_hot -- --nocapture` to see
//! the figures: the store's schema, and the same schema with the index set
//! of migration 0002 (an index on `expires_at`), side by side.
#![cfg(all(feature = "postgres", feature = "testing"))]

mod postgres_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use postgres_support::{SchemaGuard, connect, store};
use sqlx::{Connection, PgConnection};
use tower_httpsession::SessionStore;
use tower_httpsession::store::postgres::PostgresStore;
use tower_httpsession::store::testing::{fresh_key, record};
use tower_httpsession::store::{Applied, ChangeSet, Created, StoreKey, Touch, VerifierHash};

/// Sessions written to, each with this many attributes of ~100 bytes.
const SESSIONS: usize = 200;
const ATTRIBUTES: usize = 5;
/// Writes per half of the run, spread over this many tasks.
const WRITES_PER_HALF: usize = 4_000;
const TASKS: usize = 8;
/// The bars: the share of updates that are HOT, and how much the tables
/// may grow in the second half of the run.
const HOT_BAR: f64 = 0.90;
const GROWTH_BAR: f64 = 1.10;
/// Runs disturbed by other transactions are repeated up to this many times
/// in all.
const ATTEMPTS: usize = 3;

/// `n_tup_upd` and `n_tup_hot_upd` of one table.
#[derive(Debug, Clone, Copy, Default)]
struct Updates {
    all: i64,
    hot: i64,
}

impl Updates {
    fn since(self, before: Self) -> Self {
        Self {
            all: self.all - before.all,
            hot: self.hot - before.hot,
        }
    }

    fn plus(self, other: Self) -> Self {
        Self {
            all: self.all + other.all,
            hot: self.hot + other.hot,
        }
    }

    #[allow(clippy::cast_precision_loss)]
    fn ratio(self) -> f64 {
        if self.all == 0 {
            0.0
        } else {
            self.hot as f64 / self.all as f64
        }
    }
}

/// What one run measured.
#[derive(Debug)]
struct Figures {
    sessions: Updates,
    attributes: Updates,
    /// `pg_total_relation_size` of both tables: at the start, after the
    /// first half, after the second.
    sizes: [i64; 3],
    /// Whether another transaction, in any database of the server, held a
    /// snapshot or a transaction id for a while during the run: the old
    /// row versions it might still see cannot be pruned, so the pages fill
    /// up and updates stop being HOT whatever the schema.
    disturbed: bool,
}

impl Figures {
    fn total(&self) -> Updates {
        self.sessions.plus(self.attributes)
    }

    #[allow(clippy::cast_precision_loss)]
    fn growth(&self) -> f64 {
        self.sizes[2] as f64 / self.sizes[1] as f64
    }

    /// Which bar the run missed, if any.
    fn missed(&self) -> Option<String> {
        for (table, updates) in [
            ("sessions", self.sessions),
            ("attributes", self.attributes),
            ("both tables", self.total()),
        ] {
            if updates.ratio() < HOT_BAR {
                return Some(format!(
                    "{table}: {:.1}% of updates HOT, want at least {:.0}%",
                    100.0 * updates.ratio(),
                    100.0 * HOT_BAR
                ));
            }
        }
        (self.growth() > GROWTH_BAR).then(|| {
            format!(
                "the tables grew by x{:.3} in the second half",
                self.growth()
            )
        })
    }

    fn print(&self, what: &str) {
        println!(
            "{what}: HOT sessions {:.1}% ({}/{}), attributes {:.1}% ({}/{}), together {:.1}%; \
             size start {} B, after half 1 {} B, after half 2 {} B (x{:.3}){}",
            100.0 * self.sessions.ratio(),
            self.sessions.hot,
            self.sessions.all,
            100.0 * self.attributes.ratio(),
            self.attributes.hot,
            self.attributes.all,
            100.0 * self.total().ratio(),
            self.sizes[0],
            self.sizes[1],
            self.sizes[2],
            self.growth(),
            if self.disturbed {
                "; disturbed by another long transaction"
            } else {
                ""
            },
        );
    }
}

/// Makes every connection of the store's pool report its statistics at
/// the end of its next transaction (PostgreSQL 15 otherwise delays the
/// report by up to a second, or ten when the backend goes idle).
async fn flush_stats(store: &PostgresStore) {
    let pool = store.pool();
    let mut held = Vec::new();
    while let Ok(Some(conn)) = tokio::time::timeout(Duration::from_millis(200), async {
        Some(pool.acquire().await.expect("acquire"))
    })
    .await
    {
        held.push(conn);
        if held.len() >= 64 {
            break;
        }
    }
    for conn in &mut held {
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(&mut **conn)
            .await
            .expect("flush");
    }
}

async fn updates(conn: &mut PgConnection, schema: &str, table: &str) -> Updates {
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await
        .expect("clear snapshot");
    let (all, hot): (i64, i64) = sqlx::query_as(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables \
         WHERE schemaname = $1 AND relname = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(&mut *conn)
    .await
    .expect("table statistics");
    Updates { all, hot }
}

async fn size(conn: &mut PgConnection, schema: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT pg_total_relation_size('{schema}.sessions') \
              + pg_total_relation_size('{schema}.attributes')"
    ))
    .fetch_one(&mut *conn)
    .await
    .expect("size")
}

/// `WRITES_PER_HALF` writes from `TASKS` tasks, each setting one attribute
/// of a session in turn and touching it (the touch interval is zero, so
/// every write's touch is due and rewrites the session row).
async fn half(store: &PostgresStore, sessions: &[(VerifierHash, StoreKey)], round: usize) {
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        let sessions = sessions.to_vec();
        tasks.push(tokio::spawn(async move {
            for i in (task..WRITES_PER_HALF).step_by(TASKS) {
                let (id, key) = &sessions[i % sessions.len()];
                let value = format!("\"{round}-{i:06}-{}\"", "v".repeat(90));
                let changes = ChangeSet::builder()
                    .with_attribute(format!("a{}", i % ATTRIBUTES), value)
                    .with_required_verifier(*id)
                    .with_touch(Touch::new(
                        time::OffsetDateTime::now_utc(),
                        None,
                        Some(Duration::ZERO),
                    ))
                    .build();
                let applied = store.apply(key, &changes).await.expect("apply");
                assert_eq!(applied, Applied::Written);
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
}

/// Watches, until `stop`, for other transactions that hold back the
/// pruning of old row versions: ones (in any database) that have held a
/// snapshot or a transaction id for more than two seconds.
async fn watch_horizon(stop: Arc<AtomicBool>) -> bool {
    let mut conn = connect().await;
    let mut seen = false;
    while !stop.load(Ordering::Relaxed) {
        let holding: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() \
               AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) \
               AND xact_start < now() - interval '2 seconds'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("activity");
        seen |= holding > 0;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = conn.close().await;
    seen
}

/// Seeds the sessions, runs two halves of writes, and measures.
async fn run(store: &PostgresStore, schema: &str) -> Figures {
    let mut conn = connect().await;
    // Vacuum does not run during the measurement: what keeps the size is
    // the in-page pruning of HOT chains alone.
    for table in ["sessions", "attributes"] {
        sqlx::query(&format!(
            "ALTER TABLE {schema}.{table} SET (autovacuum_enabled = false)"
        ))
        .execute(&mut conn)
        .await
        .expect("autovacuum off");
    }
    let value = format!("\"{}\"", "v".repeat(98));
    let attributes: Vec<(String, &str)> = (0..ATTRIBUTES)
        .map(|i| (format!("a{i}"), value.as_str()))
        .collect();
    let attributes: Vec<(&str, &str)> = attributes.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        let (id, key) = fresh_key();
        let rec = record(&id, Duration::from_secs(3600), &attributes);
        assert_eq!(
            store.create(&key, &rec, None).await.expect("create"),
            Created::Stored
        );
        sessions.push((id, key));
    }
    flush_stats(store).await;
    let before = (
        updates(&mut conn, schema, "sessions").await,
        updates(&mut conn, schema, "attributes").await,
    );
    let start = size(&mut conn, schema).await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_horizon(stop.clone()));
    half(store, &sessions, 1).await;
    let first = size(&mut conn, schema).await;
    half(store, &sessions, 2).await;
    let second = size(&mut conn, schema).await;
    stop.store(true, Ordering::Relaxed);
    let disturbed = watcher.await.expect("watcher");
    flush_stats(store).await;
    let figures = Figures {
        sessions: updates(&mut conn, schema, "sessions").await.since(before.0),
        attributes: updates(&mut conn, schema, "attributes")
            .await
            .since(before.1),
        sizes: [start, first, second],
        disturbed,
    };
    let _ = conn.close().await;
    // Every write updated its session row and one attribute row.
    let writes = i64::try_from(2 * WRITES_PER_HALF).expect("count");
    assert_eq!(figures.sessions.all, writes, "{figures:?}");
    assert_eq!(figures.attributes.all, writes, "{figures:?}");
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn touches_and_writes_update_in_place_and_the_tables_keep_their_size() {
    let started = Instant::now();
    // Another transaction that holds back pruning (say, a bulk load
    // elsewhere on the server) can only make updates less HOT: a run that
    // misses the bars while one was seen is repeated, a bounded number of
    // times; a run that meets them counts either way.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (store, schema) = store().await;
        let figures = run(&store, &schema.name).await;
        figures.print("schema 0003 (sweep_at)");
        match figures.missed() {
            None => break,
            Some(missed) if !figures.disturbed => panic!("{missed}: {figures:?}"),
            Some(missed) if attempt >= ATTEMPTS => panic!(
                "{missed}, in each of {ATTEMPTS} runs, each disturbed by another transaction \
                 that held back pruning on the server; run the test again when none runs: \
                 {figures:?}"
            ),
            Some(_) => tokio::time::sleep(Duration::from_secs(3)).await,
        }
    }

    // The same load on the index set of migration 0002, for comparison: an
    // index on `expires_at`, which every touch changes.
    let (old, old_schema) = store_with_0002_indexes().await;
    let old_figures = run(&old, &old_schema.name).await;
    old_figures.print("index on expires_at (0002)");
    println!("both runs took {:?}", started.elapsed());

    // The measurement tells the two apart: with the expiry indexed, a
    // touch is never HOT.
    assert!(
        old_figures.sessions.ratio() < 0.1,
        "touches with an index on expires_at: {old_figures:?}"
    );
}

/// A migrated store whose sessions table has the indexes of migration 0002
/// instead of 0003's.
async fn store_with_0002_indexes() -> (PostgresStore, SchemaGuard) {
    let (store, schema) = store().await;
    let mut conn = connect().await;
    for statement in [
        format!("DROP INDEX {}.sessions_sweep_at", schema.name),
        format!(
            "CREATE INDEX sessions_expires_at ON {}.sessions (expires_at)",
            schema.name
        ),
    ] {
        sqlx::query(&statement)
            .execute(&mut conn)
            .await
            .expect("0002 indexes");
    }
    let _ = conn.close().await;
    (store, schema)
}
