//! Part 3: the PostgreSQL store's expiry cleanup deleting a million expired
//! sessions while reads and writes run on live ones.
//!
//! The expired sessions are copies of a template of a few attributes whose
//! expiry is set in the past as they are inserted: expired, and left for
//! the cleanup task. Load runs in three windows: before the cleanup task
//! starts, while it runs (until no expired session is left), and after it
//! stopped. Two rounds: first with every connection sending its next
//! request as soon as the answer is in (the server saturated: whatever
//! the cleanup takes of the CPU, the requests lose), then, on a million
//! new expired sessions, at a fixed rate of half what the first round's
//! window before the cleanup answered, as a service runs.

use std::time::{Duration, Instant};

use tower_sessions_sqlx_store::sqlx::{self, PgPool};

use tower_httpsession::store::postgres::CleanupOptions;

use crate::BoxError;
use crate::fleet::{self, App, Backend, Krate, Namespace, Options};
use crate::mixed::{self, Window};
use crate::seed;
use crate::servers::{self, Postgres};
use crate::throughput::{ATTRIBUTE_BYTES, ATTRIBUTES};

/// The cleanup task's settings, as the store's documentation starts it
/// (`SCALE_CLEANUP_BATCH` and `SCALE_CLEANUP_PAUSE` change them).
pub(crate) const INTERVAL: Duration = Duration::from_secs(60);
pub(crate) const BATCH: u32 = 100;
/// Attributes of each expired session.
pub(crate) const EXPIRED_ATTRIBUTES: usize = 3;

/// How often the bench looks whether expired sessions are left.
const POLL: Duration = Duration::from_secs(1);

/// The paced round's rate, as a share of the saturated round's requests a
/// second before the cleanup.
pub(crate) const PACED_SHARE: f64 = 0.5;

/// One round's windows.
pub(crate) struct Round {
    pub(crate) before: Window,
    pub(crate) during: Window,
    pub(crate) after: Window,
    /// From the task's start until no expired session was left, or `None`
    /// if some were left at the time limit.
    pub(crate) took: Option<Duration>,
}

/// The paced round: its rate and its windows.
pub(crate) struct Paced {
    pub(crate) rate: f64,
    pub(crate) round: Round,
}

pub(crate) struct Cleanup {
    pub(crate) expired: u64,
    /// How the task ran.
    pub(crate) options: CleanupOptions,
    pub(crate) seeding: Duration,
    /// The saturated round.
    pub(crate) saturated: Round,
    /// The round at a fixed rate.
    pub(crate) paced: Paced,
    pub(crate) expired_left: i64,
    pub(crate) live_kept: i64,
    pub(crate) live: i64,
    pub(crate) stray_attributes: i64,
}

pub(crate) fn run(
    server: &tokio::runtime::Runtime,
    client: &tokio::runtime::Runtime,
    pg: &Postgres,
    expired: u64,
    options: CleanupOptions,
    window: Duration,
    limit: Duration,
) -> Result<Cleanup, BoxError> {
    let namespace = Namespace::new(Krate::Ours, Backend::Postgres, 0, "cleanup");
    let app = server.block_on(App::start(namespace, None, pg, Options::default()))?;
    let result = client.block_on(measure(server, &app, pg, expired, options, window, limit));
    server.block_on(app.stop());
    result
}

async fn measure(
    server: &tokio::runtime::Runtime,
    app: &App,
    pg: &Postgres,
    expired: u64,
    options: CleanupOptions,
    window: Duration,
    limit: Duration,
) -> Result<Cleanup, BoxError> {
    let namespace = &app.namespace;
    let store = app.store.clone().ok_or("the cleanup app has a store")?;
    let pool = servers::connect(&pg.url, 1).await?;
    let seeding = Instant::now();
    fleet::seed_http(app.addr, 1, EXPIRED_ATTRIBUTES, ATTRIBUTE_BYTES).await?;
    let template = seed::pg_template(&pool, namespace).await?;
    seed_expired(&pool, namespace, &template, 3, expired).await?;
    // The template was made through the app: it expires on its own time.
    let live = fleet::seed_http(app.addr, 32, ATTRIBUTES, ATTRIBUTE_BYTES).await?;
    let seeding = seeding.elapsed();
    let (readers, writers) = live.split_at(live.len() / 2);
    let sessions = format!("{}.sessions", namespace.schema);
    let live_keys: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT key FROM {sessions} WHERE expires_at > now()"
    ))
    .fetch_all(&pool)
    .await?;
    eprintln!(
        "== cleanup: {expired} expired sessions, {} live, seeded in {:.0} s",
        live_keys.len(),
        seeding.as_secs_f64()
    );

    let mut load = Load {
        addr: app.addr,
        readers,
        writers,
        window,
        limit,
        rate: None,
        options,
    };
    let saturated = round(server, &store, &pool, &sessions, &load).await?;

    let rate = saturated.before.requests_per_second() * PACED_SHARE;
    // Keys of their own, should some of the first million be left.
    seed_expired(&pool, namespace, &template, 4, expired).await?;
    eprintln!("== cleanup at a fixed rate of {rate:.0} req/s: {expired} new expired sessions");
    load.rate = Some(rate);
    let paced = round(server, &store, &pool, &sessions, &load).await?;

    let expired_left = expired_left(&pool, &sessions, false).await?;
    let live_kept: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {sessions} WHERE key = ANY($1)"
    ))
    .bind(&live_keys)
    .fetch_one(&pool)
    .await?;
    let stray_attributes: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}.attributes WHERE NOT session_key = ANY($1)",
        namespace.schema
    ))
    .bind(&live_keys)
    .fetch_one(&pool)
    .await?;
    sqlx::raw_sql(&format!("DROP SCHEMA {} CASCADE", namespace.schema))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(Cleanup {
        expired,
        options,
        seeding,
        saturated,
        paced: Paced { rate, round: paced },
        expired_left,
        live_kept,
        live: i64::try_from(live_keys.len())?,
        stray_attributes,
    })
}

/// Copies `template` `expired` times with an expiry in the past, with
/// keys made from `salt`.
async fn seed_expired(
    pool: &PgPool,
    namespace: &Namespace,
    template: &str,
    salt: u64,
    expired: u64,
) -> Result<(), BoxError> {
    seed::pg_copies(
        pool,
        namespace,
        template,
        salt,
        expired,
        &[
            ("expires_at", "now() - interval '1 second'"),
            // The cleanup's mark is never later than the expiry (the
            // store's schema checks it).
            ("sweep_at", "now() - interval '1 second'"),
        ],
    )
    .await?;
    settle(pool).await
}

/// Writes out what seeding left in memory before any window is measured:
/// a `CHECKPOINT`, then the kernel's dirty pages (`sync`). Seeding a
/// million sessions in seconds leaves gigabytes of dirty pages that the
/// kernel would otherwise write back during the next windows, stalling
/// the live requests' WAL flushes with writes no deployment has pending
/// when its expired sessions are swept.
async fn settle(pool: &PgPool) -> Result<(), BoxError> {
    let started = Instant::now();
    let dirty = dirty_kib();
    sqlx::raw_sql("CHECKPOINT").execute(pool).await?;
    tokio::task::spawn_blocking(|| std::process::Command::new("sync").status()).await??;
    eprintln!(
        "   settled in {:.1} s: {} MiB dirty before, {} MiB after",
        started.elapsed().as_secs_f64(),
        dirty.unwrap_or(0) / 1024,
        dirty_kib().unwrap_or(0) / 1024
    );
    Ok(())
}

/// The kernel's dirty page cache, from `/proc/meminfo`.
fn dirty_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("Dirty:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The load of a round.
#[derive(Clone, Copy)]
struct Load<'a> {
    addr: std::net::SocketAddr,
    readers: &'a [Option<String>],
    writers: &'a [Option<String>],
    /// The windows before and after the cleanup.
    window: Duration,
    /// The most the cleanup may take.
    limit: Duration,
    /// A fixed rate, or `None`: each connection as fast as it is answered.
    rate: Option<f64>,
    /// How the cleanup task runs.
    options: CleanupOptions,
}

/// One round: a window of load, then the cleanup task under load until no
/// expired session is left (or `limit`), then a window after it stopped.
async fn round(
    server: &tokio::runtime::Runtime,
    store: &tower_httpsession::store::postgres::PostgresStore,
    pool: &PgPool,
    sessions: &str,
    load: &Load<'_>,
) -> Result<Round, BoxError> {
    let Load {
        addr,
        readers,
        writers,
        window,
        limit,
        rate,
        options,
    } = *load;
    let before = mixed::window_at(addr, readers, writers, window, rate).await?;
    eprintln!("   before: {}", describe(&before));
    let running = mixed::start_at(addr, readers, writers, limit, rate).await?;
    let began = Instant::now();
    let handle = {
        let _entered = server.enter();
        // On the app's runtime, as an app would run it.
        store.spawn_cleanup_with(options)
    };
    let mut took = None;
    while began.elapsed() < limit {
        tokio::time::sleep(POLL).await;
        if expired_left(pool, sessions, true).await? == 0 {
            took = Some(began.elapsed());
            break;
        }
    }
    let during = running.finish().await?;
    // The task lives on the server runtime; its handle is awaited here.
    handle.stop().await;
    eprintln!(
        "   during ({}): {}",
        took.map_or_else(
            || "not done".to_owned(),
            |t| format!("{:.1} s", t.as_secs_f64())
        ),
        describe(&during)
    );
    let after = mixed::window_at(addr, readers, writers, window, rate).await?;
    eprintln!("   after: {}", describe(&after));
    Ok(Round {
        before,
        during,
        after,
        took,
    })
}

/// Expired sessions left (with `any`: 1 if there is one, through the
/// expiry index, which is cheap to ask often).
async fn expired_left(pool: &PgPool, sessions: &str, any: bool) -> Result<i64, BoxError> {
    let limit = if any { " LIMIT 1" } else { "" };
    Ok(sqlx::query_scalar(&format!(
        // An expired session's cleanup mark is due too (`sweep_at <=
        // expires_at`), so the mark's index finds them without a scan of
        // the table, which would weigh on the load being measured.
        "SELECT count(*) FROM (SELECT 1 FROM {sessions} \
         WHERE sweep_at <= now() AND expires_at <= now(){limit}) e"
    ))
    .fetch_one(pool)
    .await?)
}

pub(crate) fn describe(window: &Window) -> String {
    format!(
        "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} failed",
        window.requests_per_second(),
        window.ms(0.50),
        window.ms(0.99),
        window.failed
    )
}
