//! The apps' own CPU time per request, measured out of process.
//!
//! Each app runs in a child process (this bench executable again, with
//! [`CHILD_APP`] naming the app), pinned to one CPU, on a tokio runtime of
//! one worker. The load generator runs in this process on a thread pinned to
//! another CPU: 32 keep-alive connections, closed loop. The child's CPU time
//! over a window (the sum of `/proc/<pid>/task/*/schedstat`'s first field,
//! nanoseconds on a CPU, over all its threads) divided by the requests
//! answered in that window is what a request costs the app, whatever else
//! the machine is doing: unlike requests per second, it does not depend on
//! how much of the CPU the app gets.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method;
use tokio::task::JoinSet;

use crate::BoxError;
use crate::apps::{AppSpec, Crate, READ_BYTES};
use crate::client::Conn;
use crate::stores;

/// Set in a child: the name of the app it serves.
const CHILD_APP: &str = "BENCH_CPU_SERVE";
/// Set in a child: the CPU it runs on.
const CHILD_CPU: &str = "BENCH_CPU_CORE";

/// The apps measured, each in its own child process.
const APPS: [AppSpec; 3] = [
    AppSpec::ALL[0], // axum (no session)
    AppSpec::ALL[1], // tower-httpsession / memory
    AppSpec::ALL[2], // tower-sessions 0.14 / memory
];

/// Set in the bench's process to `redis`: the two session apps over Redis
/// instead of their memory stores, to see what the store's client costs
/// the app (a partial run).
pub(crate) const STORE: &str = "BENCH_CPU_STORE";

/// The apps of this run: [`APPS`], or their Redis counterparts.
fn apps() -> [AppSpec; 3] {
    if std::env::var(STORE).is_ok_and(|v| v == "redis") {
        [AppSpec::ALL[0], AppSpec::ALL[3], AppSpec::ALL[4]]
    } else {
        APPS
    }
}

/// Set in the bench's process: another build of this bench (its `load`
/// executable), whose tower-httpsession memory app is measured beside this
/// build's, in the same rounds: to compare a change with the code before it.
const BASELINE: &str = "BENCH_CPU_BASELINE";

/// The routes of each app, in table order. `/read` returns one attribute of
/// the session; `/bare` touches none; `/incr` increments a counter in one
/// session that every connection shares (the counter scenario; the session
/// apps only).
const PATHS: [&str; 3] = [BARE, READ, COUNTER];
const BARE: &str = "/bare";
const READ: &str = "/read";
const COUNTER: &str = "/incr";

/// Whether the app of `spec` serves `path`.
fn serves(spec: AppSpec, path: &str) -> bool {
    path != COUNTER || spec.krate != Crate::Bare
}

/// One app of the phase: what it is, and which executable serves it.
struct Served {
    spec: AppSpec,
    exe: std::path::PathBuf,
    label: String,
}

/// [`APPS`] from this executable, and the baseline build's app if
/// [`BASELINE`] names one.
fn served() -> Result<Vec<Served>, BoxError> {
    let exe = std::env::current_exe()?;
    let chosen = apps();
    let mut apps: Vec<Served> = chosen
        .into_iter()
        .map(|spec| Served {
            spec,
            exe: exe.clone(),
            label: spec.to_string(),
        })
        .collect();
    if let Some(baseline) = std::env::var_os(BASELINE).filter(|v| !v.is_empty()) {
        apps.push(Served {
            spec: chosen[1],
            exe: baseline.into(),
            label: format!("{} (baseline build, {BASELINE})", chosen[1]),
        });
    }
    Ok(apps)
}

/// Attributes (of [`READ_BYTES`] each) of every connection's session: the
/// read scenario's sessions, used for both routes.
const ATTRIBUTES: usize = 20;

/// Durations and counts of the phase.
pub(crate) struct CpuSettings {
    connections: usize,
    warmup: Duration,
    window: Duration,
    rounds: usize,
}

impl CpuSettings {
    /// About 90 s: 8 routes, 7 rounds of 1.5 s each, after a warm-up.
    pub(crate) fn full() -> Self {
        Self {
            connections: 32,
            warmup: Duration::from_millis(500),
            window: Duration::from_millis(1_500),
            rounds: 7,
        }
    }

    /// A few seconds, to walk the code paths.
    pub(crate) fn quick() -> Self {
        Self {
            connections: 8,
            warmup: Duration::from_millis(100),
            window: Duration::from_millis(200),
            rounds: 2,
        }
    }
}

/// In a child process: the app to serve, if this process is one.
pub(crate) fn child_app() -> Option<String> {
    std::env::var(CHILD_APP).ok().filter(|v| !v.is_empty())
}

/// In a child process: serves `name` on a loopback port, pinned to the CPU
/// [`CHILD_CPU`] names, on one tokio worker; prints the port on a line of
/// its own and exits when its standard input closes.
pub(crate) fn serve(name: &str) -> Result<(), BoxError> {
    let spec = AppSpec::ALL
        .into_iter()
        .find(|spec| spec.to_string() == name)
        .ok_or_else(|| format!("{CHILD_APP}={name}: no such app"))?;
    if let Some(cpu) = std::env::var(CHILD_CPU).ok().and_then(|v| v.parse().ok()) {
        // Before the runtime starts: its threads inherit the affinity.
        pin(cpu)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    std::thread::spawn(|| {
        // The parent closes this pipe when it is done, or when it dies.
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    runtime.block_on(async {
        let env = stores::Env::from_environment();
        let (router, _resources) = stores::build(spec, &env)
            .await?
            .map_err(|unavailable| unavailable.0)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{}", listener.local_addr()?.port())?;
        stdout.flush()?;
        axum::serve(listener, router).await?;
        Ok(())
    })
}

fn pin(cpu: usize) -> Result<(), BoxError> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        Ok(())
    } else {
        Err(format!("could not pin to CPU {cpu}").into())
    }
}

/// One app in its child process.
struct ChildApp {
    child: Child,
    addr: SocketAddr,
}

impl ChildApp {
    fn start(served: &Served, cpu: Option<usize>) -> Result<Self, BoxError> {
        let spec = served.spec;
        let mut command = Command::new(&served.exe);
        command
            .env(CHILD_APP, spec.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(cpu) = cpu {
            command.env(CHILD_CPU, cpu.to_string());
        }
        let mut child = command.spawn()?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            BufReader::new(stdout).read_line(&mut line)?;
        }
        let port: u16 = match line.trim().parse() {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{spec}: the child printed no port ({line:?})").into());
            }
        };
        Ok(Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// Nanoseconds all the child's threads have spent on a CPU so far.
    fn cpu_ns(&self) -> Result<u64, BoxError> {
        let mut total = 0;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.child.id()))? {
            let path = task?.path().join("schedstat");
            // A thread that ended since the listing has nothing to add.
            let Ok(stat) = std::fs::read_to_string(path) else {
                continue;
            };
            let on_cpu = stat.split_whitespace().next().unwrap_or("0");
            total += on_cpu.parse::<u64>()?;
        }
        Ok(total)
    }
}

impl Drop for ChildApp {
    fn drop(&mut self) {
        // Closing its standard input ends the child; kill it if it lingers.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one route of one app measured.
#[derive(Debug, Clone)]
struct Cell {
    /// The app's index among [`served`]'s.
    app: usize,
    path: &'static str,
    /// µs of app CPU per request, one per round.
    micros: Vec<f64>,
    /// Requests per second, one per round.
    rates: Vec<f64>,
    failed: u64,
    first_failure: Option<String>,
}

/// What the phase measured.
#[derive(Debug)]
pub(crate) struct Figures {
    /// The apps' names, by index.
    labels: Vec<String>,
    cells: Vec<Cell>,
    pinning: String,
    settings_line: String,
    error: Option<String>,
}

/// Runs the phase: starts the children, seeds their sessions, warms each
/// route up, then measures `rounds` rounds in which every route takes its
/// turn (the order rotating each round).
pub(crate) fn run(settings: &CpuSettings) -> Figures {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (load_cpu, app_cpu) = match cores.as_slice() {
        [load, app, ..] => (Some(load.id), Some(app.id)),
        _ => (None, None),
    };
    let pinning = match (load_cpu, app_cpu) {
        (Some(load), Some(app)) => {
            format!("each app in its own process pinned to CPU {app}, the load generator to CPU {load}")
        }
        _ => "NOT PINNED (fewer than 2 CPUs available): figures include the load generator's interference".to_owned(),
    };
    let settings_line = format!(
        "{} keep-alive connections, closed loop; a {:.1} s warm-up per route, then {} rounds of {:.1} s per route, medians",
        settings.connections,
        settings.warmup.as_secs_f64(),
        settings.rounds,
        settings.window.as_secs_f64()
    );
    let apps = match served() {
        Ok(apps) => apps,
        Err(error) => {
            return Figures {
                labels: Vec::new(),
                cells: Vec::new(),
                pinning,
                settings_line,
                error: Some(error.to_string()),
            };
        }
    };
    let mut figures = Figures {
        labels: apps.iter().map(|a| a.label.clone()).collect(),
        cells: apps
            .iter()
            .enumerate()
            .flat_map(|(app, served)| {
                PATHS
                    .into_iter()
                    .filter(|path| serves(served.spec, path))
                    .map(move |path| Cell {
                        app,
                        path,
                        micros: Vec::new(),
                        rates: Vec::new(),
                        failed: 0,
                        first_failure: None,
                    })
            })
            .collect(),
        pinning,
        settings_line,
        error: None,
    };
    let outcome = std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<(), BoxError> {
                if let Some(cpu) = load_cpu {
                    pin(cpu)?;
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let children = apps
                    .iter()
                    .map(|app| ChildApp::start(app, app_cpu))
                    .collect::<Result<Vec<_>, _>>()?;
                let specs: Vec<AppSpec> = apps.iter().map(|app| app.spec).collect();
                runtime.block_on(measure(&children, &specs, settings, &mut figures.cells))
            })
            .join()
    });
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => figures.error = Some(error.to_string()),
        Err(_) => figures.error = Some("the load thread panicked".to_owned()),
    }
    figures
}

async fn measure(
    children: &[ChildApp],
    specs: &[AppSpec],
    settings: &CpuSettings,
    cells: &mut [Cell],
) -> Result<(), BoxError> {
    let mut conns = Vec::with_capacity(children.len());
    // The counter's connections: one session, shared.
    let mut shared = Vec::with_capacity(children.len());
    for (child, spec) in children.iter().zip(specs) {
        let mut mine = Vec::with_capacity(settings.connections);
        for i in 0..settings.connections {
            let cookie = match spec.krate {
                // The same request as a session app's, cookie and all.
                Crate::Bare => format!("SESSION={}", crate::apps::attribute_value(i, 64)),
                Crate::Ours | Crate::Peer => {
                    crate::scenarios::seed(child.addr, ATTRIBUTES, READ_BYTES).await?
                }
            };
            mine.push(Conn::open(child.addr, Some(cookie)).await?);
        }
        conns.push(mine);
        let mut counting = Vec::new();
        if serves(*spec, COUNTER) {
            let cookie = crate::scenarios::seed(child.addr, 1, READ_BYTES).await?;
            for _ in 0..settings.connections {
                counting.push(Conn::open(child.addr, Some(cookie.clone())).await?);
            }
        }
        shared.push(counting);
    }
    let mut pools = [conns, shared];
    let pool = |path: &str| usize::from(path == COUNTER);
    for cell in cells.iter() {
        let conns = &mut pools[pool(cell.path)][cell.app];
        window(&children[cell.app], conns, cell.path, settings.warmup).await?;
    }
    for round in 0..settings.rounds {
        for turn in 0..cells.len() {
            let cell = &mut cells[(round + turn) % cells.len()];
            let (app, path) = (cell.app, cell.path);
            let conns = &mut pools[pool(path)][app];
            let measured = window(&children[app], conns, path, settings.window).await?;
            cell.failed += measured.failed;
            if cell.first_failure.is_none() {
                cell.first_failure = measured.first_failure;
            }
            if measured.ok > 0 {
                cell.micros
                    .push(measured.cpu_ns as f64 / measured.ok as f64 / 1_000.0);
                cell.rates
                    .push(measured.ok as f64 / measured.elapsed.as_secs_f64().max(1e-9));
            }
        }
    }
    Ok(())
}

/// What one window measured.
struct Window {
    ok: u64,
    failed: u64,
    first_failure: Option<String>,
    cpu_ns: u64,
    elapsed: Duration,
}

/// Drives `route` over every connection for `duration`: the child's CPU
/// time is read before the first request is sent and after the last answer
/// is in.
async fn window(
    child: &ChildApp,
    conns: &mut Vec<Conn>,
    path: &'static str,
    duration: Duration,
) -> Result<Window, BoxError> {
    // The length of every answer's body: the attribute, "ok", or a count
    // (any length).
    let expected = match path {
        READ => Some(READ_BYTES),
        COUNTER => None,
        _ => Some(2),
    };
    let before = child.cpu_ns()?;
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for mut conn in conns.drain(..) {
        tasks.spawn(async move {
            let (mut ok, mut failed, mut first_failure) = (0_u64, 0_u64, None);
            while Instant::now() < deadline && ok + failed < 10_000_000 {
                let method = if path == COUNTER {
                    Method::POST
                } else {
                    Method::GET
                };
                match conn.send(method, path).await {
                    Ok(answer)
                        if answer.status.is_success()
                            && expected.is_none_or(|n| answer.body.len() == n) =>
                    {
                        ok += 1;
                    }
                    Ok(answer) => {
                        failed += 1;
                        first_failure.get_or_insert_with(|| {
                            format!("{path}: {} ({} bytes)", answer.status, answer.body.len())
                        });
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok((conn, ok, failed, first_failure))
        });
    }
    let mut measured = Window {
        ok: 0,
        failed: 0,
        first_failure: None,
        cpu_ns: 0,
        elapsed: Duration::ZERO,
    };
    while let Some(joined) = tasks.join_next().await {
        let (conn, ok, failed, first_failure) = joined??;
        conns.push(conn);
        measured.ok += ok;
        measured.failed += failed;
        if measured.first_failure.is_none() {
            measured.first_failure = first_failure;
        }
    }
    measured.elapsed = start.elapsed();
    measured.cpu_ns = child.cpu_ns()?.saturating_sub(before);
    Ok(measured)
}

fn median(values: &[f64]) -> Option<f64> {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[n / 2]),
        n => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

impl Figures {
    fn cell(&self, app: usize, path: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.app == app && c.path == path)
    }

    /// µs the app at `app` adds over bare axum on `path`: the median, over
    /// the rounds, of the difference within a round, whose windows ran
    /// seconds apart: a change in the machine's load between rounds weighs
    /// on both sides of a difference.
    fn added(&self, app: usize, path: &str) -> Option<f64> {
        // Bare axum serves no counter: `None` there.
        let (ours, bare) = (self.cell(app, path)?, self.cell(0, path)?);
        if ours.micros.len() != bare.micros.len() {
            // A round failed on one side: the medians are all there is.
            return Some(median(&ours.micros)? - median(&bare.micros)?);
        }
        let differences: Vec<f64> = ours
            .micros
            .iter()
            .zip(&bare.micros)
            .map(|(o, b)| o - b)
            .collect();
        median(&differences)
    }

    /// The table of the phase, with how it was run.
    pub(crate) fn table(&self) -> String {
        let mut out = format!(
            "\n### App CPU time per request, out of process\n\n\
             - One tokio worker per app; {}; {}\n\
             - App CPU time: the child's threads' time on a CPU (`/proc/<pid>/task/*/schedstat`) \
             over a window, divided by the requests answered in it; every session holds {ATTRIBUTES} \
             attributes of {READ_BYTES} bytes, `/read` returns one of them, `/bare` touches no session \
             (bare axum gets a cookie of the same size); `/incr` increments one counter in one session \
             every connection shares (this crate: `update`; tower-sessions: `get` then `insert`, which \
             loses increments)\n\n\
             | app | route | app CPU µs per request | min – max | added over axum, µs (median of the rounds' differences) | req/s |\n\
             |---|---|--:|--:|--:|--:|\n",
            self.pinning, self.settings_line
        );
        for cell in &self.cells {
            let (app, path) = (cell.app, cell.path);
            let spread = match (
                cell.micros.iter().copied().reduce(f64::min),
                cell.micros.iter().copied().reduce(f64::max),
            ) {
                (Some(min), Some(max)) => format!("{min:.2} – {max:.2}"),
                _ => "-".to_owned(),
            };
            let added = if app == 0 {
                "-".to_owned()
            } else {
                self.added(app, path)
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:+.2}"))
            };
            let _ = writeln!(
                out,
                "| {} | `{path}` | {} | {spread} | {added} | {} |",
                self.labels[app],
                median(&cell.micros).map_or_else(|| "-".to_owned(), |v| format!("{v:.2}")),
                median(&cell.rates).map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
            );
        }
        if let Some(error) = &self.error {
            let _ = writeln!(out, "\nThe phase failed: {error}");
        }
        for cell in &self.cells {
            if cell.failed > 0 {
                let _ = writeln!(
                    out,
                    "\n{} `{}`: {} requests failed (first: {})",
                    self.labels[cell.app],
                    cell.path,
                    cell.failed,
                    cell.first_failure.as_deref().unwrap_or("?")
                );
            }
        }
        out
    }

    /// The phase's bars, as rows of the bars table.
    pub(crate) fn checks(&self) -> String {
        // This build's tower-httpsession / memory, not the baseline's.
        let ours = 1;
        let mut out = String::new();
        for (bar, path, max) in [
            (
                "read on memory: layer adds ≤ 3 µs of app CPU per request (out of process)",
                READ,
                3.0,
            ),
            (
                "untouched route with a cookie: layer adds ≤ 0.5 µs of app CPU per request (out of process)",
                BARE,
                0.5,
            ),
        ] {
            let failed = self.cells.iter().any(|c| c.failed > 0) || self.error.is_some();
            let (value, verdict) = match self.added(ours, path) {
                Some(added) if !failed => (
                    format!("{added:+.2} µs"),
                    if added <= max { "pass" } else { "**FAIL**" },
                ),
                Some(added) => (format!("{added:+.2} µs, with failures"), "**FAIL**"),
                None => ("not measured".to_owned(), "not run"),
            };
            let _ = writeln!(out, "| {bar} | {value} | {verdict} |");
        }
        out
    }
}
