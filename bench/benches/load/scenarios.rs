//! The five scenarios, each run against one app.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::Method;
use hdrhistogram::Histogram;
use tower_sessions_sqlx_store::sqlx::PgPool;

use crate::BoxError;
use crate::accounting::{self, Cost, PgCounters, RedisCounters, Resp};
use crate::apps::{AppSpec, Backend, Crate};
use crate::client::{self, Conn, Load, Route};

/// The scenarios, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    Bare,
    Read,
    WriteSmallInBigSession,
    LostUpdate,
    Counter,
}

impl Scenario {
    pub(crate) const ALL: [Self; 5] = [
        Self::Bare,
        Self::Read,
        Self::WriteSmallInBigSession,
        Self::LostUpdate,
        Self::Counter,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Bare => "bare",
            Self::Read => "read",
            Self::WriteSmallInBigSession => "write-small-in-big-session",
            Self::LostUpdate => "lost-update",
            Self::Counter => "counter",
        }
    }

    /// Whether the scenario means anything for `spec`: bare axum has no
    /// session to lose updates in.
    pub(crate) fn applies_to(self, spec: AppSpec) -> bool {
        spec.krate != Crate::Bare
            || matches!(self, Self::Bare | Self::Read | Self::WriteSmallInBigSession)
    }
}

/// Durations and counts of a run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Connections (simulated clients) of the throughput scenarios.
    pub(crate) connections: usize,
    pub(crate) warmup: Duration,
    pub(crate) run: Duration,
    /// Measured runs of each throughput scenario; medians are reported.
    pub(crate) runs: usize,
    /// The phase over which a store's accounting is taken, per app.
    pub(crate) accounting: Duration,
    /// Clients of the lost-update scenario, and the sets each sends.
    pub(crate) lost_update_clients: usize,
    pub(crate) lost_update_sets: u64,
    /// Clients of the counter scenario, and the increments each sends.
    pub(crate) counter_clients: usize,
    pub(crate) counter_increments: u64,
    /// Runs of the lost-update and counter scenarios; the worst is reported.
    pub(crate) correctness_runs: usize,
    /// How long PostgreSQL's counters need to settle after load.
    pub(crate) pg_settle: Duration,
}

impl Settings {
    pub(crate) fn full() -> Self {
        Self {
            connections: 32,
            warmup: Duration::from_secs(2),
            run: Duration::from_millis(2_500),
            runs: 5,
            accounting: Duration::from_secs(3),
            lost_update_clients: 16,
            lost_update_sets: 50,
            counter_clients: 32,
            // 16,000 requests a run: with 50 each, a run lasted about 40 ms
            // on Redis, and its rate moved by a third from run to run.
            counter_increments: 500,
            correctness_runs: 3,
            pg_settle: accounting::PG_STATS_SETTLE,
        }
    }

    /// Just long enough to walk every code path.
    pub(crate) fn quick() -> Self {
        Self {
            connections: 8,
            warmup: Duration::from_millis(100),
            run: Duration::from_millis(200),
            runs: 2,
            accounting: Duration::from_millis(200),
            lost_update_clients: 16,
            lost_update_sets: 5,
            counter_clients: 8,
            counter_increments: 5,
            correctness_runs: 1,
            pg_settle: Duration::ZERO,
        }
    }
}

/// The outcome of a correctness scenario.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kept {
    /// Keys that hold their last value, of all keys (worst run).
    Keys { kept: usize, of: usize },
    /// Increments the counter kept, as a share of successful requests
    /// (worst run).
    Share(f64),
}

/// What one scenario measured on one app.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    pub(crate) requests_per_second: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) requests: u64,
    pub(crate) failed: u64,
    pub(crate) first_failure: Option<String>,
    /// The store's accounting per request.
    pub(crate) cost: Option<Cost>,
    pub(crate) kept: Option<Kept>,
}

/// The app under test and the store accounting that goes with it.
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) spec: AppSpec,
    pub(crate) accounting: Accounting,
}

/// How to read the store's counters.
pub(crate) enum Accounting {
    None,
    Redis(Resp),
    Postgres(PgPool),
}

enum Snapshot {
    None,
    Redis(RedisCounters),
    Postgres(PgCounters),
}

impl Accounting {
    async fn snapshot(&mut self, settings: &Settings) -> Result<Snapshot, BoxError> {
        Ok(match self {
            Self::None => Snapshot::None,
            Self::Redis(resp) => Snapshot::Redis(resp.snapshot().await?),
            Self::Postgres(pool) => {
                tokio::time::sleep(settings.pg_settle).await;
                Snapshot::Postgres(accounting::pg_snapshot(pool).await?)
            }
        })
    }

    async fn cost_since(
        &mut self,
        before: Snapshot,
        settings: &Settings,
        requests: u64,
    ) -> Result<Option<Cost>, BoxError> {
        let after = self.snapshot(settings).await?;
        Ok(match (before, after) {
            (Snapshot::Redis(a), Snapshot::Redis(b)) => Some(a.delta(b).per(requests)),
            (Snapshot::Postgres(a), Snapshot::Postgres(b)) => Some(a.delta(b).per(requests)),
            _ => None,
        })
    }
}

/// Starts a session of `count` attributes of `size` bytes and returns its
/// cookie pair.
pub(crate) async fn seed(addr: SocketAddr, count: usize, size: usize) -> Result<String, BoxError> {
    let mut conn = Conn::open(addr, None).await?;
    let answer = conn
        .expect_ok(Method::POST, &format!("/seed/{count}/{size}"))
        .await?;
    answer
        .set_cookie
        .ok_or_else(|| "a seeded session sent no cookie".into())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

impl Scenario {
    /// The route and the sessions of a throughput scenario: (attributes,
    /// bytes each) seeded into every connection's session.
    fn load_shape(self) -> Option<(Route, usize, usize)> {
        match self {
            Self::Bare => Some((Route::Bare, 1, 100)),
            Self::Read => Some((Route::Read, 20, 100)),
            Self::WriteSmallInBigSession => Some((Route::Write, 50, 1000)),
            Self::LostUpdate | Self::Counter => None,
        }
    }

    /// Whether every app takes its turn in each run ([`throughput`]) rather
    /// than one app after another ([`correctness`]).
    pub(crate) fn is_throughput(self) -> bool {
        self.load_shape().is_some()
    }
}

/// Runs a correctness scenario against `target`.
pub(crate) async fn run_one(
    target: &mut Target,
    scenario: Scenario,
    settings: &Settings,
) -> Result<Measured, BoxError> {
    match scenario {
        Scenario::LostUpdate => lost_update(target, settings).await,
        Scenario::Counter => counter(target, settings).await,
        _ => Err(format!("{} is a throughput scenario", scenario.label()).into()),
    }
}

/// What a throughput scenario gathers for one app.
struct Gathered {
    cookies: Vec<Option<String>>,
    loads: Vec<Load>,
    cost: Option<Cost>,
}

/// Runs a throughput scenario against every target, interleaved so that
/// whatever else the machine does weighs on every app alike: one session
/// per connection, each seeded; a warm-up per app; then `runs` rounds in
/// which every app takes its turn (the order rotating each round). The
/// store's accounting is taken afterwards, one app at a time, over a phase
/// of its own. A `ceiling` takes a turn of its own after the apps' in each
/// round.
pub(crate) async fn throughput(
    targets: &mut [Target],
    scenario: Scenario,
    settings: &Settings,
    mut ceiling: Option<&mut crate::ceiling::Ceiling>,
) -> Vec<Result<Measured, String>> {
    let Some((route, count, size)) = scenario.load_shape() else {
        let error = format!("{} is not a throughput scenario", scenario.label());
        return targets.iter().map(|_| Err(error.clone())).collect();
    };
    let mut gathered: Vec<Result<Gathered, String>> = Vec::with_capacity(targets.len());
    for target in targets.iter() {
        gathered.push(
            seed_all(target, settings.connections, count, size)
                .await
                .map(|cookies| Gathered {
                    cookies,
                    loads: Vec::with_capacity(settings.runs),
                    cost: None,
                })
                .map_err(|e| format!("seeding: {e}")),
        );
    }
    for (target, state) in targets.iter().zip(&mut gathered) {
        if let Ok(g) = state
            && let Err(e) = client::drive(target.addr, &g.cookies, route, settings.warmup).await
        {
            *state = Err(format!("warm-up: {e}"));
        }
    }
    let n = targets.len();
    for round in 0..settings.runs {
        for turn in 0..n {
            let i = (round + turn) % n;
            if let Ok(g) = &mut gathered[i] {
                match client::drive(targets[i].addr, &g.cookies, route, settings.run).await {
                    Ok(load) => g.loads.push(load),
                    Err(e) => gathered[i] = Err(format!("run {round}: {e}")),
                }
            }
        }
        if let Some(ceiling) = ceiling.as_deref_mut() {
            ceiling.turn(settings.run).await;
        }
    }
    for (target, state) in targets.iter_mut().zip(&mut gathered) {
        if let Ok(g) = state
            && !matches!(target.accounting, Accounting::None)
        {
            match account(target, &g.cookies, route, settings).await {
                Ok(cost) => g.cost = cost,
                Err(e) => *state = Err(format!("accounting: {e}")),
            }
        }
    }
    gathered
        .into_iter()
        .map(|state| state.map(|g| summarize(&g.loads, g.cost, None)))
        .collect()
}

async fn seed_all(
    target: &Target,
    connections: usize,
    count: usize,
    size: usize,
) -> Result<Vec<Option<String>>, BoxError> {
    let mut cookies = Vec::with_capacity(connections);
    for i in 0..connections {
        cookies.push(Some(match target.spec.krate {
            // The same request as this crate's, cookie and all, which bare
            // axum ignores: the comparison then weighs the session layer
            // alone, not the bytes of a header.
            Crate::Bare => format!("SESSION={}", crate::apps::attribute_value(i, 64)),
            Crate::Ours | Crate::Peer => seed(target.addr, count, size).await?,
        }));
    }
    Ok(cookies)
}

/// The store's accounting per request over a phase of load on this app
/// alone.
async fn account(
    target: &mut Target,
    cookies: &[Option<String>],
    route: Route,
    settings: &Settings,
) -> Result<Option<Cost>, BoxError> {
    let before = target.accounting.snapshot(settings).await?;
    let load = client::drive(target.addr, cookies, route, settings.accounting).await?;
    target
        .accounting
        .cost_since(before, settings, load.requests())
        .await
}

fn summarize(loads: &[Load], cost: Option<Cost>, kept: Option<Kept>) -> Measured {
    Measured {
        requests_per_second: median(loads.iter().map(Load::requests_per_second).collect()),
        p50_ms: median(loads.iter().map(|l| ms(&l.latency, 0.50)).collect()),
        p99_ms: median(loads.iter().map(|l| ms(&l.latency, 0.99)).collect()),
        requests: loads.iter().map(Load::requests).sum(),
        failed: loads.iter().map(|l| l.failed).sum(),
        first_failure: loads.iter().find_map(|l| l.first_failure.clone()),
        cost,
        kept,
    }
}

/// Clients of one session, all at once, each sending `per_client` requests
/// that `path(client, i)` names; returns the load and the session's cookie.
async fn one_session(
    target: &Target,
    clients: usize,
    per_client: u64,
    path: fn(usize, u64) -> String,
) -> Result<(Load, String), BoxError> {
    let cookie = seed(target.addr, 1, 10).await?;
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(Conn::open(target.addr, Some(cookie.clone())).await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(client, mut conn)| {
            tokio::spawn(async move {
                let mut latency = client::histogram();
                let (mut ok, mut failed, mut first_failure) = (0, 0, None);
                for i in 1..=per_client {
                    let sent = Instant::now();
                    match conn.expect_ok(Method::POST, &path(client, i)).await {
                        Ok(_) => {
                            ok += 1;
                            let micros = u64::try_from(sent.elapsed().as_micros())
                                .unwrap_or(u64::MAX)
                                .max(1);
                            latency.saturating_record(micros);
                        }
                        Err(error) => {
                            failed += 1;
                            first_failure.get_or_insert_with(|| error.to_string());
                        }
                    }
                }
                (ok, failed, latency, first_failure)
            })
        })
        .collect();
    let mut load = Load {
        ok: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latency: client::histogram(),
        first_failure: None,
    };
    for task in tasks {
        let (ok, failed, latency, first_failure) = task.await?;
        load.ok += ok;
        load.failed += failed;
        load.latency.add(&latency)?;
        if load.first_failure.is_none() {
            load.first_failure = first_failure;
        }
    }
    load.elapsed = start.elapsed();
    Ok((load, cookie))
}

async fn read_number(target: &Target, cookie: &str, key: &str) -> Result<Option<u64>, BoxError> {
    let mut conn = Conn::open(target.addr, Some(cookie.to_owned())).await?;
    let answer = conn.expect_ok(Method::GET, &format!("/get/{key}")).await?;
    Ok(std::str::from_utf8(&answer.body)?.parse().ok())
}

/// Runs a one-session scenario `settings.correctness_runs` times and folds
/// the runs: medians of speed, the worst of `judge`.
async fn correctness(
    target: &mut Target,
    settings: &Settings,
    clients: usize,
    per_client: u64,
    path: fn(usize, u64) -> String,
    judge: impl AsyncJudge,
) -> Result<Measured, BoxError> {
    let before = target.accounting.snapshot(settings).await?;
    let mut loads = Vec::with_capacity(settings.correctness_runs);
    let mut worst: Option<Kept> = None;
    for _ in 0..settings.correctness_runs {
        let (load, cookie) = one_session(target, clients, per_client, path).await?;
        let kept = judge.judge(target, &cookie, &load).await?;
        worst = Some(match (worst, kept) {
            (Some(Kept::Keys { kept: a, of }), Kept::Keys { kept: b, .. }) => {
                Kept::Keys { kept: a.min(b), of }
            }
            (Some(Kept::Share(a)), Kept::Share(b)) => Kept::Share(a.min(b)),
            (_, kept) => kept,
        });
        loads.push(load);
    }
    let requests: u64 = loads.iter().map(Load::requests).sum();
    let cost = target
        .accounting
        .cost_since(before, settings, requests)
        .await?;
    Ok(summarize(&loads, cost, worst))
}

/// Reads a correctness scenario's outcome back from the app.
trait AsyncJudge {
    async fn judge(&self, target: &Target, cookie: &str, load: &Load) -> Result<Kept, BoxError>;
}

struct LastValues {
    clients: usize,
    sets: u64,
}

impl AsyncJudge for LastValues {
    async fn judge(&self, target: &Target, cookie: &str, _: &Load) -> Result<Kept, BoxError> {
        let mut kept = 0;
        for client in 0..self.clients {
            if read_number(target, cookie, &format!("k{client}")).await? == Some(self.sets) {
                kept += 1;
            }
        }
        Ok(Kept::Keys {
            kept,
            of: self.clients,
        })
    }
}

struct CounterShare;

impl AsyncJudge for CounterShare {
    async fn judge(&self, target: &Target, cookie: &str, load: &Load) -> Result<Kept, BoxError> {
        let counter = read_number(target, cookie, "counter").await?.unwrap_or(0);
        Ok(Kept::Share(counter as f64 / load.ok.max(1) as f64))
    }
}

/// 16 clients of one session, each setting its own key to 1, 2, ... in turn;
/// afterwards, how many keys hold their last value.
async fn lost_update(target: &mut Target, settings: &Settings) -> Result<Measured, BoxError> {
    let judge = LastValues {
        clients: settings.lost_update_clients,
        sets: settings.lost_update_sets,
    };
    correctness(
        target,
        settings,
        settings.lost_update_clients,
        settings.lost_update_sets,
        |client, i| format!("/set/k{client}/{i}"),
        judge,
    )
    .await
}

/// 32 clients of one session incrementing one counter; afterwards, the
/// counter as a share of the successful increments.
async fn counter(target: &mut Target, settings: &Settings) -> Result<Measured, BoxError> {
    correctness(
        target,
        settings,
        settings.counter_clients,
        settings.counter_increments,
        |_, _| "/incr".to_owned(),
        CounterShare,
    )
    .await
}

/// The accounting for `spec`'s store.
pub(crate) async fn accounting_for(
    spec: AppSpec,
    env: &crate::stores::Env,
) -> Result<Accounting, BoxError> {
    Ok(match spec.backend {
        Backend::None | Backend::Memory => Accounting::None,
        Backend::Redis => Accounting::Redis(Resp::connect(&env.redis_addr).await?),
        Backend::Postgres => {
            Accounting::Postgres(crate::stores::connect_pg(&env.bench_database_url, 1).await?)
        }
    })
}
