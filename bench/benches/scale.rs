//! Scale benchmark: this crate beside tower-sessions with up to a million
//! live sessions in Redis and PostgreSQL.
//!
//! `cargo bench -p tower-httpsession-bench --bench scale` measures four
//! parts (`SCALE_PART=throughput,memory,cleanup,hot` picks some):
//!
//! 1. read and write throughput with 1,000, 100,000 and 1,000,000 live
//!    sessions in the store;
//! 2. memory (Redis) and disk (PostgreSQL) per session;
//! 3. the PostgreSQL store's expiry cleanup deleting a million expired
//!    sessions under load;
//! 4. HOT updates and table growth over a sustained write run.
//!
//! A full run rewrites the "Cost at scale" results in `BENCHMARKS.md` and
//! the chart `docs/scaling.svg`; `SCALE_QUICK=1` (or `-- --quick`) walks
//! the same code paths at small sizes in well under a minute and, like a
//! run of some parts only, writes its report under `target/bench-scale/`.
//! So does a run with settings of its own: `SCALE_CLEANUP_EXPIRED`
//! (expired sessions of the cleanup part, per round), `SCALE_CLEANUP_BATCH`
//! and `SCALE_CLEANUP_PAUSE` (the cleanup task's batch and pause, in
//! percent of a batch's time) and `SCALE_HOT_SECS` (the length of part 4).
//!
//! The apps run on a tokio runtime of one worker thread, the load
//! generator and the bulk seeding on a single-threaded runtime on the main
//! thread, as in the load bench. Redis runs as private `redis-server`
//! processes the bench starts and stops; PostgreSQL is the shared server,
//! in a database of the bench's own that it drops at the end.

#[path = "load/apps.rs"]
#[allow(
    dead_code,
    reason = "the scale bench uses some of the load bench's routes"
)]
mod apps;
#[path = "scale/chart.rs"]
#[allow(clippy::cast_precision_loss, reason = "chart coordinates are small")]
mod chart;
#[path = "scale/cleanup.rs"]
mod cleanup;
#[path = "load/client.rs"]
#[allow(
    dead_code,
    clippy::cast_precision_loss,
    reason = "shared with the load bench; request counts are far below 2^52"
)]
mod client;
#[path = "scale/fleet.rs"]
mod fleet;
#[path = "scale/hot.rs"]
#[allow(
    clippy::cast_precision_loss,
    reason = "sizes and counts are far below 2^52"
)]
mod hot;
#[path = "scale/memory.rs"]
#[allow(
    clippy::cast_precision_loss,
    reason = "sizes and counts are far below 2^52"
)]
mod memory;
#[path = "scale/mixed.rs"]
#[allow(
    clippy::cast_precision_loss,
    reason = "latencies and counts are far below 2^52"
)]
mod mixed;
#[path = "scale/report.rs"]
#[allow(clippy::cast_precision_loss, reason = "figures are far below 2^52")]
mod report;
#[path = "scale/seed.rs"]
mod seed;
#[path = "scale/servers.rs"]
#[allow(
    clippy::cast_precision_loss,
    reason = "memory sizes are far below 2^52"
)]
mod servers;
#[path = "scale/throughput.rs"]
#[allow(
    clippy::cast_precision_loss,
    reason = "latencies and counts are far below 2^52"
)]
mod throughput;

use std::path::Path;
use std::time::{Duration, Instant};

use tower_httpsession::store::postgres::{CleanupOptions, DEFAULT_CLEANUP_PAUSE_PERCENT};

use crate::report::Results;

/// The error type of the bench's plumbing.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sizes, durations and counts of a run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) quick: bool,
    /// Live sessions in the store, smallest first.
    pub(crate) sizes: Vec<u64>,
    /// Connections of the load, each with a session of its own.
    pub(crate) connections: usize,
    pub(crate) warmup: Duration,
    pub(crate) run: Duration,
    /// Rounds of the throughput part; medians are reported.
    pub(crate) runs: usize,
    /// Sessions the memory part copies.
    pub(crate) memory_sessions: u64,
    /// Expired sessions the cleanup part leaves to the cleanup task.
    pub(crate) expired: u64,
    /// How the cleanup part starts the cleanup task.
    pub(crate) cleanup_options: CleanupOptions,
    /// The load windows before and after the cleanup.
    pub(crate) cleanup_window: Duration,
    /// The most the cleanup may take before the bench gives up on it.
    pub(crate) cleanup_limit: Duration,
    pub(crate) hot: Duration,
    pub(crate) hot_every: Duration,
}

impl Settings {
    fn full() -> Result<Self, BoxError> {
        Ok(Self {
            quick: false,
            sizes: vec![1_000, 100_000, 1_000_000],
            connections: 32,
            warmup: Duration::from_secs(1),
            run: Duration::from_secs(2),
            runs: 5,
            memory_sessions: 10_000,
            expired: env_number("SCALE_CLEANUP_EXPIRED", 1_000_000)?,
            cleanup_options: cleanup_options()?,
            cleanup_window: Duration::from_secs(30),
            cleanup_limit: Duration::from_secs(30 * 60),
            hot: Duration::from_secs(env_number("SCALE_HOT_SECS", 600)?),
            hot_every: Duration::from_secs(30),
        })
    }

    fn quick() -> Result<Self, BoxError> {
        Ok(Self {
            quick: true,
            sizes: vec![100, 1_000, 5_000],
            connections: 8,
            warmup: Duration::from_millis(100),
            run: Duration::from_millis(300),
            runs: 2,
            memory_sessions: 300,
            expired: env_number("SCALE_CLEANUP_EXPIRED", 5_000)?,
            cleanup_options: cleanup_options()?,
            cleanup_window: Duration::from_secs(1),
            cleanup_limit: Duration::from_secs(30),
            hot: Duration::from_secs(env_number("SCALE_HOT_SECS", 6)?),
            hot_every: Duration::from_secs(2),
        })
    }
}

/// The environment variables that change the settings of a full run.
const CUSTOM_SETTINGS: [&str; 4] = [
    "SCALE_CLEANUP_EXPIRED",
    "SCALE_CLEANUP_BATCH",
    "SCALE_CLEANUP_PAUSE",
    "SCALE_HOT_SECS",
];

/// The whole number in the environment variable `name`, or `default` if
/// it is unset or empty.
fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, BoxError> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value
            .parse()
            .map_err(|_| format!("{name}={value}: expected a whole number").into()),
        _ => Ok(default),
    }
}

/// The cleanup task's options: the store's documented start,
/// `spawn_cleanup(60 s, 100)` with its default pause, unless
/// `SCALE_CLEANUP_BATCH` or `SCALE_CLEANUP_PAUSE` (percent of a batch's
/// time) say otherwise.
fn cleanup_options() -> Result<CleanupOptions, BoxError> {
    Ok(CleanupOptions::new(
        cleanup::INTERVAL,
        env_number("SCALE_CLEANUP_BATCH", cleanup::BATCH)?,
    )
    .with_pause_percent(env_number(
        "SCALE_CLEANUP_PAUSE",
        DEFAULT_CLEANUP_PAUSE_PERCENT,
    )?))
}

/// The parts of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Throughput,
    Memory,
    Cleanup,
    Hot,
}

impl Part {
    const ALL: [Self; 4] = [Self::Throughput, Self::Memory, Self::Cleanup, Self::Hot];

    fn label(self) -> &'static str {
        match self {
            Self::Throughput => "throughput",
            Self::Memory => "memory",
            Self::Cleanup => "cleanup",
            Self::Hot => "hot",
        }
    }

    /// `SCALE_PART`: part names separated by commas; every part if unset.
    fn selected() -> Result<Vec<Self>, BoxError> {
        let Some(names) = std::env::var("SCALE_PART").ok().filter(|v| !v.is_empty()) else {
            return Ok(Self::ALL.to_vec());
        };
        let mut parts = Vec::new();
        for name in names.split(',').map(str::trim) {
            let part = Self::ALL
                .into_iter()
                .find(|p| p.label() == name)
                .ok_or_else(|| {
                    format!("SCALE_PART: unknown part {name:?} (throughput, memory, cleanup, hot)")
                })?;
            parts.push(part);
        }
        Ok(Self::ALL
            .into_iter()
            .filter(|p| parts.contains(p))
            .collect())
    }
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn main() -> Result<(), BoxError> {
    let quick = std::env::var_os("SCALE_QUICK").is_some_and(|v| !v.is_empty() && v != "0")
        || std::env::args().any(|a| a == "--quick");
    let settings = if quick {
        Settings::quick()?
    } else {
        Settings::full()?
    };
    let parts = Part::selected()?;
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-server")
        .enable_all()
        .build()?;
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pg = servers::Postgres::from_environment();
    client.block_on(pg.create())?;
    let started = Instant::now();
    let outcome = run_parts(&server, &client, &pg, &settings, &parts);
    // Whatever happened, leave no database behind (the private Redis
    // servers stop as each part ends).
    let dropped = client.block_on(pg.drop_database());
    let results = outcome?;
    dropped?;
    let elapsed = started.elapsed();

    // A run with sizes or settings of its own is not the documented one.
    let own_settings = CUSTOM_SETTINGS
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    let partial = parts.len() < Part::ALL.len() || !results.failures.is_empty() || own_settings;
    let facts = report::facts(&settings, &parts, elapsed);
    let markdown = results.markdown(&settings, &facts);
    println!("\n{markdown}");
    let bench_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = bench_dir.parent().unwrap_or(bench_dir);
    let (doc, chart) = if quick || partial {
        let dir = root.join("target/bench-scale");
        std::fs::create_dir_all(&dir)?;
        (dir.join("BENCHMARKS.md"), dir.join("scaling.svg"))
    } else {
        (root.join("BENCHMARKS.md"), root.join("docs/scaling.svg"))
    };
    results.chart(&chart, &report::subtitle(&settings))?;
    report::write_section(&doc, &markdown)?;
    println!("wrote {} and {}", doc.display(), chart.display());
    if let Some((part, error)) = results.failures.first() {
        return Err(format!("part {part} failed: {error}").into());
    }
    Ok(())
}

fn run_parts(
    server: &tokio::runtime::Runtime,
    client: &tokio::runtime::Runtime,
    pg: &servers::Postgres,
    settings: &Settings,
    parts: &[Part],
) -> Result<Results, BoxError> {
    let mut results = Results::default();
    for part in parts {
        let began = Instant::now();
        eprintln!("==== {}", part.label());
        let done = run_part(*part, server, client, pg, settings, &mut results);
        let took = began.elapsed();
        match done {
            Ok(()) => eprintln!("==== {} took {:.0} s", part.label(), took.as_secs_f64()),
            Err(error) => {
                // The other parts still run; the run counts as partial.
                eprintln!(
                    "==== {} FAILED after {:.0} s: {error}",
                    part.label(),
                    took.as_secs_f64()
                );
                results.failures.push((part.label(), error.to_string()));
            }
        }
        results.durations.push((part.label(), took));
        // What is known so far, in case a later part ends the process.
        eprintln!("{}", results.markdown(settings, "(results so far)"));
    }
    Ok(results)
}

fn run_part(
    part: Part,
    server: &tokio::runtime::Runtime,
    client: &tokio::runtime::Runtime,
    pg: &servers::Postgres,
    settings: &Settings,
    results: &mut Results,
) -> Result<(), BoxError> {
    match part {
        Part::Throughput => {
            results.throughput = Some(throughput::run(server, client, pg, settings)?);
        }
        Part::Memory => {
            results.memory = Some(memory::run(server, client, pg, settings.memory_sessions)?);
        }
        Part::Cleanup => {
            results.cleanup = Some(cleanup::run(
                server,
                client,
                pg,
                settings.expired,
                settings.cleanup_options,
                settings.cleanup_window,
                settings.cleanup_limit,
            )?);
        }
        Part::Hot => {
            results.hot = Some(hot::run(
                server,
                client,
                pg,
                settings.hot,
                settings.hot_every,
                settings.connections,
            )?);
        }
    }
    Ok(())
}
