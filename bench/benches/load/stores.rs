//! The servers the stores live on, and each app built over its store.

use std::time::Duration;

use axum::Router;
use tower_httpsession::{MemoryStore, SessionConfig, SessionLayer};
use tower_sessions::SessionManagerLayer;
use tower_sessions_redis_store::fred::prelude::{
    ClientLike, Config as FredConfig, Pool as FredPool,
};
use tower_sessions_sqlx_store::sqlx::{self, PgPool, postgres::PgPoolOptions};

use crate::BoxError;
use crate::accounting::Resp;
use crate::apps::{self, AppSpec, Backend, Crate};

/// Where the servers are, from `REDIS_URL` and `DATABASE_URL` at run time.
pub(crate) struct Env {
    /// `redis://host:port`, without a database number.
    redis_base: String,
    /// `host:port` for the accounting connection.
    pub(crate) redis_addr: String,
    /// The database the bench creates and uses, so that its counters in
    /// `pg_stat_database` hold nothing but the bench.
    pub(crate) bench_database_url: String,
}

const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const BENCH_DATABASE: &str = "httpsession_bench";
/// Connections each app's store may open: the same for every app.
pub(crate) const STORE_CONNECTIONS: u32 = 4;

impl Env {
    pub(crate) fn from_environment() -> Self {
        let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.into());
        let database_url =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into());
        let without_scheme = redis_url
            .split_once("://")
            .map_or(redis_url.as_str(), |(_, rest)| rest);
        let authority = without_scheme.split('/').next().unwrap_or(without_scheme);
        let redis_base = format!("redis://{authority}");
        let redis_addr = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host)
            .to_owned();
        Self {
            redis_base,
            redis_addr,
            bench_database_url: with_database(&database_url, BENCH_DATABASE),
        }
    }

    /// The URL of Redis database `db`.
    pub(crate) fn redis_url(&self, db: u8) -> String {
        format!("{}/{db}", self.redis_base)
    }

    /// Makes sure Redis and PostgreSQL answer, running `scripts/services`
    /// (which installs and starts them) once if one does not, and creates
    /// the bench database.
    pub(crate) async fn ensure_services(&self) -> Result<(), BoxError> {
        if self.check().await.is_err() {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/services");
            eprintln!("== a store server does not answer; running {script}");
            let status = std::process::Command::new("bash").arg(script).status()?;
            if !status.success() {
                return Err(format!("{script} failed: {status}").into());
            }
        }
        self.check().await
    }

    async fn check(&self) -> Result<(), BoxError> {
        let mut redis = Resp::connect(&self.redis_addr).await?;
        redis.command(&["PING"]).await?;
        let database_url =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into());
        let admin = connect_pg(&database_url, 1).await?;
        let exists: Option<i32> =
            sqlx::query_scalar("select 1 from pg_database where datname = $1")
                .bind(BENCH_DATABASE)
                .fetch_optional(&admin)
                .await?;
        if exists.is_none() {
            sqlx::query(&format!("create database {BENCH_DATABASE}"))
                .execute(&admin)
                .await?;
        }
        // Whether a commit waits for its WAL to reach the disk, for every
        // app alike: the server's own setting, unless a partial run asks
        // otherwise to show how much of a write that wait is.
        let setting = match synchronous_commit()? {
            Some(value) => format!("set synchronous_commit = {value}"),
            None => "reset synchronous_commit".to_owned(),
        };
        sqlx::query(&format!("alter database {BENCH_DATABASE} {setting}"))
            .execute(&admin)
            .await?;
        admin.close().await;
        Ok(())
    }
}

/// `BENCH_PG_SYNCHRONOUS_COMMIT`, if set: `on` or `off`.
pub(crate) fn synchronous_commit() -> Result<Option<&'static str>, BoxError> {
    match std::env::var("BENCH_PG_SYNCHRONOUS_COMMIT").as_deref() {
        Err(_) | Ok("") => Ok(None),
        Ok("on") => Ok(Some("on")),
        Ok("off") => Ok(Some("off")),
        Ok(other) => Err(format!("BENCH_PG_SYNCHRONOUS_COMMIT={other}: expected on or off").into()),
    }
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

pub(crate) async fn connect_pg(url: &str, connections: u32) -> Result<PgPool, BoxError> {
    Ok(PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await?)
}

/// A running app's store connections, closed when the app is done.
#[derive(Default)]
pub(crate) struct Resources {
    fred: Option<FredPool>,
    pg: Option<PgPool>,
}

impl Resources {
    pub(crate) async fn close(self) {
        if let Some(pool) = self.fred {
            let _ = pool.quit().await;
        }
        if let Some(pool) = self.pg {
            pool.close().await;
        }
    }
}

/// Why an app cannot run yet.
#[allow(
    dead_code,
    reason = "every app can run now; kept for a store that is not built yet"
)]
pub(crate) struct Unavailable(pub(crate) &'static str);

fn our_config() -> SessionConfig {
    // The bench speaks plain HTTP to the loopback address.
    SessionConfig::default().with_insecure_cookie_over_http()
}

/// Builds `spec`'s router over an empty store. Runs on the server runtime,
/// so the stores' connection tasks live there.
pub(crate) async fn build(
    spec: AppSpec,
    env: &Env,
) -> Result<Result<(Router, Resources), Unavailable>, BoxError> {
    let mut resources = Resources::default();
    #[cfg(feature = "metrics")]
    if spec.metered {
        install_recorder();
    }
    let router = match (spec.krate, spec.backend) {
        (Crate::Bare, _) => apps::bare(),
        (Crate::Ours, Backend::Memory) => apps::ours(SessionLayer::with_config(
            MemoryStore::default(),
            our_config(),
        )?),
        (Crate::Ours, Backend::Redis) => {
            // One multiplexed connection: the store's own design.
            flush_redis(env, spec.redis_db()).await?;
            let store = tower_httpsession::store::redis::RedisStore::connect(
                &env.redis_url(spec.redis_db()),
            )
            .await?;
            apps::ours(SessionLayer::with_config(store, our_config())?)
        }
        (Crate::Ours, Backend::Postgres) => {
            use tower_httpsession::store::postgres::PostgresStore;
            let builder = PostgresStore::builder(env.bench_database_url.clone())
                .with_max_connections(STORE_CONNECTIONS);
            // `BENCH_PG_GROUP_COMMIT=off`: every write in a transaction of
            // its own, as before group commit (partial runs only).
            let builder = match std::env::var("BENCH_PG_GROUP_COMMIT").as_deref() {
                Ok("off") => builder.without_group_commit(),
                _ => builder,
            };
            let store = builder.connect().await?;
            store.migrate().await?;
            let schema = store.schema();
            sqlx::query(&format!("truncate {schema}.attributes, {schema}.sessions"))
                .execute(store.pool())
                .await?;
            resources.pg = Some(store.pool().clone());
            apps::ours(SessionLayer::with_config(store, our_config())?)
        }
        (Crate::Peer, Backend::Memory) => {
            apps::peer(peer_layer(tower_sessions::MemoryStore::default()))
        }
        (Crate::Peer, Backend::Redis) => {
            let url = env.redis_url(spec.redis_db());
            flush_redis(env, spec.redis_db()).await?;
            let pool = FredPool::new(
                FredConfig::from_url(&url)?,
                None,
                None,
                None,
                STORE_CONNECTIONS as usize,
            )?;
            pool.init().await?;
            resources.fred = Some(pool.clone());
            apps::peer(peer_layer(tower_sessions_redis_store::RedisStore::new(
                pool,
            )))
        }
        (Crate::Peer, Backend::Postgres) => {
            let pool = connect_pg(&env.bench_database_url, STORE_CONNECTIONS).await?;
            let store = tower_sessions_sqlx_store::PostgresStore::new(pool.clone());
            store.migrate().await?;
            sqlx::query("truncate tower_sessions.session")
                .execute(&pool)
                .await?;
            resources.pg = Some(pool);
            apps::peer(peer_layer(store))
        }
        (Crate::Ours | Crate::Peer, Backend::None) => {
            return Err("a session app needs a store".into());
        }
    };
    Ok(Ok((router, resources)))
}

/// Installs a Prometheus recorder, once, and scrapes it every 5 s on the
/// server's runtime as a scraper would. The layers built before it (every
/// app of the matrix: the metered apps come last) keep no-op handles, so
/// only the metered apps record.
#[cfg(feature = "metrics")]
fn install_recorder() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("the bench's only recorder");
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
                std::hint::black_box(handle.render());
            }
        });
    });
}

fn peer_layer<S: tower_sessions::SessionStore + Clone>(store: S) -> SessionManagerLayer<S> {
    // The bench speaks plain HTTP to the loopback address.
    SessionManagerLayer::new(store).with_secure(false)
}

async fn flush_redis(env: &Env, db: u8) -> Result<(), BoxError> {
    let mut redis = Resp::connect(&env.redis_addr).await?;
    redis.command(&["SELECT", &db.to_string()]).await?;
    redis.command(&["FLUSHDB"]).await?;
    Ok(())
}
