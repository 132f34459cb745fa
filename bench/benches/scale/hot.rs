//! Part 4: a sustained write run on the PostgreSQL store, with touches,
//! sampling how many row updates were HOT (heap-only: no index entry
//! written, the old version reclaimable without `VACUUM`) and how large the
//! tables grow.

use std::time::{Duration, Instant};

use tower_sessions_sqlx_store::sqlx::{self, PgPool};

use crate::BoxError;
use crate::fleet::{self, App, Backend, Krate, Namespace, Options};
use crate::mixed::{self, Window};
use crate::servers::{self, Postgres};
use crate::throughput::{ATTRIBUTE_BYTES, ATTRIBUTES};

/// The touch interval of the run's sessions: every write to a session more
/// than this after its last touch also moves its expiry.
pub(crate) const TOUCH_INTERVAL: Duration = Duration::from_secs(1);

/// The store's tables, as their statistics name them.
const TABLES: [&str; 2] = ["sessions", "attributes"];

/// One table's counters and size at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TableStats {
    pub(crate) updates: i64,
    pub(crate) hot_updates: i64,
    pub(crate) bytes: i64,
}

/// The tables at one moment of the run.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) at: Duration,
    /// In the order of [`TABLES`].
    pub(crate) tables: [TableStats; 2],
}

impl Sample {
    pub(crate) fn bytes(&self) -> i64 {
        self.tables.iter().map(|t| t.bytes).sum()
    }
}

pub(crate) struct Hot {
    pub(crate) duration: Duration,
    pub(crate) every: Duration,
    /// Sessions written to, one per connection.
    pub(crate) sessions: usize,
    pub(crate) start: Sample,
    pub(crate) samples: Vec<Sample>,
    pub(crate) load: Window,
}

impl Hot {
    /// HOT updates over updates since the start: one table's, or (`None`)
    /// both tables', up to the last sample.
    pub(crate) fn ratio(&self, table: Option<usize>) -> f64 {
        self.samples
            .last()
            .map_or(f64::NAN, |end| self.ratio_at(end, table))
    }

    /// As [`ratio`](Self::ratio), up to `sample`.
    pub(crate) fn ratio_at(&self, sample: &Sample, table: Option<usize>) -> f64 {
        let pick = |s: &Sample| -> (i64, i64) {
            s.tables
                .iter()
                .enumerate()
                .filter(|(i, _)| table.is_none_or(|t| t == *i))
                .fold((0, 0), |(u, h), (_, t)| (u + t.updates, h + t.hot_updates))
        };
        let (u0, h0) = pick(&self.start);
        let (u1, h1) = pick(sample);
        (h1 - h0) as f64 / ((u1 - u0).max(1)) as f64
    }

    pub(crate) fn table_label(index: usize) -> &'static str {
        TABLES[index]
    }

    /// The sample the size bar starts from: the first taken a minute or
    /// more into the run (the first at all in a shorter run).
    pub(crate) fn first_minute(&self) -> Option<&Sample> {
        self.samples
            .iter()
            .find(|s| s.at >= Duration::from_secs(60))
            .or_else(|| self.samples.first())
    }
}

pub(crate) fn run(
    server: &tokio::runtime::Runtime,
    client: &tokio::runtime::Runtime,
    pg: &Postgres,
    duration: Duration,
    every: Duration,
    connections: usize,
) -> Result<Hot, BoxError> {
    let namespace = Namespace::new(Krate::Ours, Backend::Postgres, 0, "hot");
    let options = Options {
        touch_interval: Some(TOUCH_INTERVAL),
    };
    let app = server.block_on(App::start(namespace, None, pg, options))?;
    let result = client.block_on(measure(&app, pg, duration, every, connections));
    server.block_on(app.stop());
    result
}

async fn measure(
    app: &App,
    pg: &Postgres,
    duration: Duration,
    every: Duration,
    connections: usize,
) -> Result<Hot, BoxError> {
    let schema = app.namespace.schema.clone();
    let pool = servers::connect(&pg.url, 1).await?;
    let writers = fleet::seed_http(app.addr, connections, ATTRIBUTES, ATTRIBUTE_BYTES).await?;
    // Let the seeding backends report their counters.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let began = Instant::now();
    let start = sample(&pool, &schema, Duration::ZERO).await?;
    eprintln!(
        "== hot: {} s of writes on {connections} sessions, a sample every {} s",
        duration.as_secs(),
        every.as_secs()
    );
    let running = mixed::start(app.addr, &[], &writers, duration + every).await?;
    let mut samples = Vec::new();
    while began.elapsed() < duration {
        let next = every.min(duration.saturating_sub(began.elapsed()));
        tokio::time::sleep(next).await;
        let sample = sample(&pool, &schema, began.elapsed()).await?;
        eprintln!(
            "   {:>5.0} s: {:.1} MiB, sessions {} HOT of {} updates, attributes {} of {}",
            sample.at.as_secs_f64(),
            sample.bytes() as f64 / f64::from(1 << 20),
            sample.tables[0].hot_updates - start.tables[0].hot_updates,
            sample.tables[0].updates - start.tables[0].updates,
            sample.tables[1].hot_updates - start.tables[1].hot_updates,
            sample.tables[1].updates - start.tables[1].updates,
        );
        samples.push(sample);
    }
    let load = running.finish().await?;
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(Hot {
        duration,
        every,
        sessions: connections,
        start,
        samples,
        load,
    })
}

/// The tables' update counters (fresh: the snapshot of the statistics is
/// cleared first) and sizes.
async fn sample(pool: &PgPool, schema: &str, at: Duration) -> Result<Sample, BoxError> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await?;
    let mut tables = [TableStats::default(); 2];
    for (stats, table) in tables.iter_mut().zip(TABLES) {
        let (updates, hot_updates, bytes): (i64, i64, i64) = sqlx::query_as(
            "SELECT n_tup_upd, n_tup_hot_upd, pg_total_relation_size(relid) \
             FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2",
        )
        .bind(schema)
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
        *stats = TableStats {
            updates,
            hot_updates,
            bytes,
        };
    }
    Ok(Sample { at, tables })
}
