//! Part 1: read and write throughput with 1,000, 100,000 and 1,000,000
//! live sessions in the store.
//!
//! Every (crate, store, size) gets a namespace of its own (a database of a
//! private Redis server, a PostgreSQL schema), so that the apps of all
//! sizes exist at once and run in rotating rounds, as the load bench runs
//! its apps: whatever else the machine does weighs on every size alike.

use std::time::{Duration, Instant};

use crate::BoxError;
use crate::client::{self, Route};
use crate::fleet::{self, App, Backend, Krate, Namespace, Options};
use crate::seed;
use crate::servers::{Postgres, RedisServer};
use crate::{Settings, median};

/// The shape of every measured session: 20 attributes of 100 bytes.
pub(crate) const ATTRIBUTES: usize = 20;
pub(crate) const ATTRIBUTE_BYTES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    Read,
    Write,
}

impl Scenario {
    pub(crate) const ALL: [Self; 2] = [Self::Read, Self::Write];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }

    fn route(self) -> Route {
        match self {
            Self::Read => Route::Read,
            Self::Write => Route::Write,
        }
    }
}

/// One measured cell: medians of the runs.
#[derive(Debug, Clone)]
pub(crate) struct Point {
    pub(crate) krate: Krate,
    pub(crate) backend: Backend,
    pub(crate) scenario: Scenario,
    pub(crate) sessions: u64,
    pub(crate) requests_per_second: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) failed: u64,
}

/// What the part measured, and how long seeding took.
pub(crate) struct Throughput {
    pub(crate) points: Vec<Point>,
    pub(crate) seeding: Duration,
    pub(crate) redis_used_memory: u64,
}

struct Target {
    app: App,
    sessions: u64,
    cookies: Vec<Option<String>>,
}

pub(crate) fn run(
    server: &tokio::runtime::Runtime,
    client: &tokio::runtime::Runtime,
    pg: &Postgres,
    settings: &Settings,
) -> Result<Throughput, BoxError> {
    let redis = client.block_on(RedisServer::start(&[]))?;
    eprintln!("== throughput: private redis-server on port {}", redis.port);
    let seeding = Instant::now();
    let mut targets = Vec::new();
    for backend in Backend::ALL {
        for (k, krate) in Krate::ALL.into_iter().enumerate() {
            for (s, &size) in settings.sizes.iter().enumerate() {
                let db = u8::try_from(k * settings.sizes.len() + s)?;
                let namespace = Namespace::new(krate, backend, db, &size.to_string());
                let app = server.block_on(App::start(
                    namespace.clone(),
                    Some(&redis),
                    pg,
                    Options::default(),
                ))?;
                let target = client.block_on(fill(&app, &redis, pg, size, settings))?;
                targets.push(Target {
                    app,
                    sessions: size,
                    cookies: target,
                });
            }
        }
    }
    let seeding = seeding.elapsed();
    let redis_used_memory = client.block_on(redis.used_memory())?;
    eprintln!(
        "   seeded in {:.0} s; the private Redis holds {:.2} GiB",
        seeding.as_secs_f64(),
        redis_used_memory as f64 / f64::from(1 << 30)
    );
    let mut points = Vec::new();
    for scenario in Scenario::ALL {
        let began = Instant::now();
        eprintln!("== throughput, {}: every app in turn", scenario.label());
        points.extend(client.block_on(measure(&targets, scenario, settings)));
        eprintln!("   ({:.1} s)", began.elapsed().as_secs_f64());
    }
    for target in targets {
        server.block_on(target.app.stop());
    }
    drop(redis);
    Ok(Throughput {
        points,
        seeding,
        redis_used_memory,
    })
}

/// Makes the template through the app, copies it to `size - 33` filler
/// sessions, then starts the 32 measured sessions through the app.
async fn fill(
    app: &App,
    redis: &RedisServer,
    pg: &Postgres,
    size: u64,
    settings: &Settings,
) -> Result<Vec<Option<String>>, BoxError> {
    let namespace = &app.namespace;
    fleet::seed_http(app.addr, 1, ATTRIBUTES, ATTRIBUTE_BYTES).await?;
    let connections = u64::try_from(settings.connections)?;
    let filler = size.saturating_sub(connections + 1);
    let salt = salt(namespace);
    match namespace.backend {
        Backend::Redis => {
            let template = seed::redis_template(redis, namespace).await?;
            seed::redis_copies(redis, namespace, &template, salt, filler).await?;
        }
        Backend::Postgres => {
            let pool = crate::servers::connect(&pg.url, 1).await?;
            let template = seed::pg_template(&pool, namespace).await?;
            seed::pg_copies(&pool, namespace, &template, salt, filler, &[]).await?;
            pool.close().await;
        }
    }
    fleet::seed_http(app.addr, settings.connections, ATTRIBUTES, ATTRIBUTE_BYTES).await
}

/// A salt of its own for every namespace, so that no two share a key.
fn salt(namespace: &Namespace) -> u64 {
    namespace
        .schema
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

/// Warms every app up, then runs the rounds, rotating the order, and
/// answers the medians per app.
async fn measure(targets: &[Target], scenario: Scenario, settings: &Settings) -> Vec<Point> {
    let route = scenario.route();
    for target in targets {
        let _ = client::drive(target.app.addr, &target.cookies, route, settings.warmup).await;
    }
    let mut runs: Vec<Vec<(f64, f64, f64, u64)>> = vec![Vec::new(); targets.len()];
    for round in 0..settings.runs {
        for offset in 0..targets.len() {
            let index = (round + offset) % targets.len();
            let target = &targets[index];
            match client::drive(target.app.addr, &target.cookies, route, settings.run).await {
                Ok(load) => runs[index].push((
                    load.requests_per_second(),
                    load.latency.value_at_quantile(0.50) as f64 / 1000.0,
                    load.latency.value_at_quantile(0.99) as f64 / 1000.0,
                    load.failed,
                )),
                Err(error) => eprintln!("   {} failed: {error}", target.app.namespace),
            }
        }
    }
    targets
        .iter()
        .zip(runs)
        .map(|(target, runs)| {
            let point = Point {
                krate: target.app.namespace.krate,
                backend: target.app.namespace.backend,
                scenario,
                sessions: target.sessions,
                requests_per_second: median(runs.iter().map(|r| r.0).collect()),
                p50_ms: median(runs.iter().map(|r| r.1).collect()),
                p99_ms: median(runs.iter().map(|r| r.2).collect()),
                failed: runs.iter().map(|r| r.3).sum(),
            };
            eprintln!(
                "   {:<34} {:>9} sessions {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
                target.app.namespace.to_string(),
                target.sessions,
                point.requests_per_second,
                point.p50_ms,
                point.p99_ms
            );
            point
        })
        .collect()
}
