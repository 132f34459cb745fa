//! Load benchmark: this crate side by side with bare axum and tower-sessions,
//! over the memory, Redis and PostgreSQL stores.
//!
//! `cargo bench -p tower-httpsession-bench` runs every scenario against
//! every app, prints one table with ratios and the bars the crate must
//! clear, and rewrites the results section of `BENCHMARKS.md` and the chart
//! `docs/benchmarks.svg`. `BENCH_QUICK=1 cargo bench -p
//! tower-httpsession-bench` (or `-- --quick`) walks the same code paths in
//! seconds and writes its report under `target/` instead.
//!
//! Server and load generator share the machine in one process: the apps run
//! on a tokio runtime of one worker thread, the load generator on a second,
//! single-threaded runtime on the main thread. Store servers (Redis,
//! PostgreSQL) are separate processes on the same machine. The last phase
//! (`load/cpu.rs`) runs the memory apps in child processes of their own and
//! measures their CPU time per request.

#[path = "load/accounting.rs"]
#[allow(clippy::cast_precision_loss, reason = "counters are far below 2^52")]
mod accounting;
#[path = "load/apps.rs"]
mod apps;
#[path = "load/ceiling.rs"]
mod ceiling;
#[path = "load/client.rs"]
#[allow(
    clippy::cast_precision_loss,
    reason = "request counts are far below 2^52"
)]
mod client;
#[path = "load/cpu.rs"]
#[allow(
    clippy::cast_precision_loss,
    reason = "counts and times are far below 2^52"
)]
mod cpu;
#[path = "load/report.rs"]
#[allow(clippy::cast_precision_loss, reason = "chart coordinates are small")]
mod report;
#[path = "load/scenarios.rs"]
#[allow(
    clippy::cast_precision_loss,
    reason = "latencies and counts are far below 2^52"
)]
mod scenarios;
#[path = "load/stores.rs"]
mod stores;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::apps::AppSpec;
use crate::report::{Outcome, Results};
use crate::scenarios::{Scenario, Settings, Target};

/// The error type of the bench's plumbing.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

const RESULTS_START: &str =
    "<!-- results:start (written by cargo bench -p tower-httpsession-bench) -->";
const RESULTS_END: &str = "<!-- results:end -->";

fn main() -> Result<(), BoxError> {
    if let Some(app) = cpu::child_app() {
        return cpu::serve(&app);
    }
    let quick = std::env::var_os("BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0")
        || std::env::args().any(|a| a == "--quick");
    let settings = if quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-server")
        .enable_all()
        .build()?;
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let env = stores::Env::from_environment();
    client.block_on(env.ensure_services())?;

    let started = Instant::now();
    let noise = client.block_on(idle_noise(&env))?;
    eprintln!("== idle noise on the store servers over 1 s: {noise}");
    let mut results = Results::default();
    let mut running = Vec::new();
    let only = Only::from_environment();
    // The metered apps come last (see `stores::install_recorder`), and only
    // when named.
    #[cfg(feature = "metrics")]
    let metered = AppSpec::METERED.into_iter().filter(|_| only.app.is_some());
    #[cfg(not(feature = "metrics"))]
    let metered = std::iter::empty::<AppSpec>();
    for spec in AppSpec::ALL
        .into_iter()
        .chain(metered)
        .filter(|a| only.app(*a))
    {
        if let Some(app) = start_app(&server, &client, &env, spec, &mut results)? {
            running.push(app);
        }
    }
    let mut targets: Vec<Target> = running.iter_mut().filter_map(|a| a.target.take()).collect();
    for scenario in Scenario::ALL
        .into_iter()
        .filter(|s| s.is_throughput() && only.scenario(*s))
    {
        let began = Instant::now();
        eprintln!("== {}: every app in turn", scenario.label());
        let mut ceiling =
            client.block_on(ceiling::for_scenario(&env, &targets, scenario, &settings));
        let outcomes = client.block_on(scenarios::throughput(
            &mut targets,
            scenario,
            &settings,
            ceiling.as_mut(),
        ));
        if let Some(ceiling) = ceiling {
            eprintln!(
                "   {:<44} {}",
                "pgbench, the apply statement alone",
                ceiling.summary()
            );
            results.ceiling = Some(ceiling.outcome());
        }
        for (target, outcome) in targets.iter().zip(outcomes) {
            let outcome = outcome.map_or_else(Outcome::Failed, Outcome::Measured);
            eprintln!("   {:<44} {}", target.spec.to_string(), summary(&outcome));
            results.push(target.spec, scenario, outcome);
        }
        eprintln!("   ({:.1} s)", began.elapsed().as_secs_f64());
    }
    for target in &mut targets {
        let spec = target.spec;
        for scenario in Scenario::ALL
            .into_iter()
            .filter(|s| !s.is_throughput() && s.applies_to(spec) && only.scenario(*s))
        {
            let began = Instant::now();
            let outcome = match client.block_on(scenarios::run_one(target, scenario, &settings)) {
                Ok(measured) => Outcome::Measured(measured),
                Err(error) => Outcome::Failed(error.to_string()),
            };
            eprintln!(
                "== {}, {} ({:.1} s): {}",
                target.spec,
                scenario.label(),
                began.elapsed().as_secs_f64(),
                summary(&outcome)
            );
            results.push(target.spec, scenario, outcome);
        }
    }
    drop(targets);
    for app in running {
        app.stop(&server);
    }
    let cpu = only.scenario_named("cpu").then(|| {
        let began = Instant::now();
        eprintln!("== cpu: app CPU time per request, each app in its own process");
        let figures = cpu::run(&if quick {
            cpu::CpuSettings::quick()
        } else {
            cpu::CpuSettings::full()
        });
        eprintln!("   ({:.1} s)", began.elapsed().as_secs_f64());
        figures
    });
    let elapsed = started.elapsed();

    let facts = machine_facts(quick, &settings, elapsed, &noise);
    let mut table = results.table();
    let mut checks = results.checks();
    if let Some(cpu) = &cpu {
        table.push_str(&cpu.table());
        checks.push_str(&cpu.checks());
    }
    let notes = results.notes();
    println!("\n{facts}\n{table}\n{checks}");
    if !notes.is_empty() {
        println!("Notes:\n{notes}");
    }

    // The repository root, one above this package.
    let bench_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = bench_dir.parent().unwrap_or(bench_dir);
    let (markdown, chart) = if quick || only.is_partial() {
        let dir = root.join("target/bench-load");
        std::fs::create_dir_all(&dir)?;
        (dir.join("BENCHMARKS.md"), dir.join("benchmarks.svg"))
    } else {
        (root.join("BENCHMARKS.md"), root.join("docs/benchmarks.svg"))
    };
    if let Some(dir) = chart.parent() {
        std::fs::create_dir_all(dir)?;
    }
    results.chart(&chart, &chart_subtitle())?;
    write_results(&markdown, &facts, &table, &checks, &notes)?;
    println!("wrote {} and {}", markdown.display(), chart.display());
    Ok(())
}

/// A part of the matrix, for profiling one app or scenario (or a run with
/// `BENCH_PG_SYNCHRONOUS_COMMIT` set, which changes the server's commits
/// for every app, or `BENCH_PG_GROUP_COMMIT=off`, or `BENCH_CPU_STORE`,
/// which measures the out-of-process phase over Redis): `BENCH_APP`
/// (substrings of app names, separated by commas, such as
/// `axum,httpsession / memory`) and
/// `BENCH_SCENARIO` (scenario names, separated by commas, or `cpu` for the
/// out-of-process phase). A partial run writes its report
/// under `target/`. Built with the feature `metrics`, `BENCH_APP` may also
/// name `tower-httpsession + metrics / memory` or `… / redis`: this crate
/// with a Prometheus recorder installed, which no full run measures.
struct Only {
    app: Option<String>,
    scenario: Option<String>,
}

impl Only {
    fn from_environment() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            app: var("BENCH_APP"),
            scenario: var("BENCH_SCENARIO"),
        }
    }

    fn app(&self, spec: AppSpec) -> bool {
        let name = spec.to_string();
        self.app
            .as_ref()
            .is_none_or(|parts| parts.split(',').any(|part| name.contains(part.trim())))
    }

    fn scenario(&self, scenario: Scenario) -> bool {
        self.scenario
            .as_ref()
            .is_none_or(|names| names.split(',').any(|name| scenario.label() == name.trim()))
    }

    /// Whether a phase outside [`Scenario::ALL`] runs: always, unless
    /// `BENCH_SCENARIO` leaves it out.
    fn scenario_named(&self, phase: &str) -> bool {
        self.scenario
            .as_ref()
            .is_none_or(|names| names.split(',').any(|name| name.trim() == phase))
    }

    fn is_partial(&self) -> bool {
        self.app.is_some()
            || self.scenario.is_some()
            || stores::synchronous_commit().is_ok_and(|setting| setting.is_some())
            || std::env::var_os("BENCH_PG_GROUP_COMMIT").is_some()
            || std::env::var_os(cpu::STORE).is_some()
    }
}

/// An app served on a loopback port.
struct RunningApp {
    target: Option<Target>,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    resources: stores::Resources,
}

impl RunningApp {
    /// Stops serving and closes the store's connections.
    fn stop(self, server: &tokio::runtime::Runtime) {
        let _ = self.stop.send(());
        let (serving, resources) = (self.serving, self.resources);
        server.block_on(async {
            // Keep-alive connections end with the load generator's tasks.
            let _ = tokio::time::timeout(Duration::from_secs(5), serving).await;
            resources.close().await;
        });
    }
}

/// Builds `spec` over an empty store and serves it on a loopback port; an
/// app that cannot be built is recorded as such in `results`.
fn start_app(
    server: &tokio::runtime::Runtime,
    client: &tokio::runtime::Runtime,
    env: &stores::Env,
    spec: AppSpec,
    results: &mut Results,
) -> Result<Option<RunningApp>, BoxError> {
    let scenarios = Scenario::ALL.into_iter().filter(|s| s.applies_to(spec));
    let (router, resources) = match server.block_on(stores::build(spec, env)) {
        Ok(Ok(built)) => built,
        Ok(Err(stores::Unavailable(why))) => {
            eprintln!("== {spec}: not measured: {why}");
            for scenario in scenarios {
                results.push(spec, scenario, Outcome::Unavailable(why));
            }
            return Ok(None);
        }
        Err(error) => {
            eprintln!("== {spec}: could not be built: {error}");
            for scenario in scenarios {
                results.push(spec, scenario, Outcome::Failed(error.to_string()));
            }
            return Ok(None);
        }
    };
    let listener = server.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = server.spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    let accounting = client.block_on(scenarios::accounting_for(spec, env))?;
    eprintln!("== {spec}: serving on {addr}");
    Ok(Some(RunningApp {
        target: Some(Target {
            addr,
            spec,
            accounting,
        }),
        stop,
        serving,
        resources,
    }))
}

fn summary(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Measured(m) => format!(
            "{:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms{}",
            m.requests_per_second,
            m.p50_ms,
            m.p99_ms,
            m.cost
                .map(|c| format!("  {}", c.describe()))
                .unwrap_or_default()
        ),
        Outcome::Unavailable(why) => format!("not measured: {why}"),
        Outcome::Failed(error) => format!("FAILED: {error}"),
    }
}

/// What the store servers counted over one idle second: other clients of
/// the same servers would show up here, and in the results.
async fn idle_noise(env: &stores::Env) -> Result<String, BoxError> {
    let mut redis = accounting::Resp::connect(&env.redis_addr).await?;
    let pg = stores::connect_pg(&env.bench_database_url, 1).await?;
    let redis_before = redis.snapshot().await?;
    let pg_before = accounting::pg_snapshot(&pg).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let redis_cost = redis_before.delta(redis.snapshot().await?);
    let pg_cost = pg_before.delta(accounting::pg_snapshot(&pg).await?);
    pg.close().await;
    Ok(format!(
        "Redis {}; PostgreSQL {}",
        redis_cost.describe(),
        pg_cost.describe()
    ))
}

fn machine_facts(quick: bool, settings: &Settings, elapsed: Duration, noise: &str) -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or_else(
            || "unknown".to_owned(),
            |kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0),
        );
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let mode = if quick {
        "QUICK MODE (smoke test, numbers mean nothing)"
    } else {
        "full run"
    };
    let commits = match stores::synchronous_commit() {
        Ok(Some(value)) => format!("`synchronous_commit = {value}` (BENCH_PG_SYNCHRONOUS_COMMIT)"),
        _ => "the server's `synchronous_commit` (on: a commit waits for its WAL flush)".to_owned(),
    };
    let date = time::OffsetDateTime::now_utc();
    format!(
        "- Command: `cargo bench -p tower-httpsession-bench` ({mode}, {:.0} s)\n\
         - Date: {} {:02}:{:02} UTC\n\
         - Machine: {cores} cores (`nproc`), {memory} memory, {cpu}, Linux {kernel}\n\
         - Load: {} keep-alive HTTP/1.1 connections, one session each; {:.1} s warm-up, \
         then {} rounds of {:.1} s per app, medians\n\
         - PostgreSQL commits: {commits}\n\
         - Idle noise on the store servers before the run, over 1 s: {noise}",
        elapsed.as_secs_f64(),
        date.date(),
        date.hour(),
        date.minute(),
        settings.connections,
        settings.warmup.as_secs_f64(),
        settings.runs,
        settings.run.as_secs_f64(),
    )
}

fn chart_subtitle() -> String {
    let date = time::OffsetDateTime::now_utc().date();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!(
        "cargo bench -p tower-httpsession-bench, {date}, {cores} cores; server on 1 tokio worker, load generator on another thread, 32 connections"
    )
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Replaces the results section of `path` (between the markers), or writes
/// a new file holding only that section.
fn write_results(
    path: &PathBuf,
    facts: &str,
    table: &str,
    checks: &str,
    notes: &str,
) -> Result<(), BoxError> {
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!("\nNotes from the run:\n\n{notes}")
    };
    let section = format!(
        "{RESULTS_START}\n{facts}\n\n{table}\n### The bars\n\n{checks}{notes}{RESULTS_END}"
    );
    let current = std::fs::read_to_string(path).unwrap_or_default();
    let updated = match (current.find(RESULTS_START), current.find(RESULTS_END)) {
        (Some(start), Some(end)) if start < end => format!(
            "{}{section}{}",
            &current[..start],
            &current[end + RESULTS_END.len()..]
        ),
        _ => format!("# Benchmarks\n\n{section}\n"),
    };
    std::fs::write(path, updated)?;
    Ok(())
}
