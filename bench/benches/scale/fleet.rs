//! The apps of the scale bench: the load bench's routes, for this crate and
//! the peer, each over a namespace of its own (a Redis database or a
//! PostgreSQL schema), so that stores of several sizes live side by side.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::Method;
use tower_httpsession::store::postgres::PostgresStore;
use tower_httpsession::store::redis::RedisStore;
use tower_httpsession::{SessionConfig, SessionLayer};
use tower_sessions::SessionManagerLayer;
use tower_sessions_redis_store::fred::prelude::{
    ClientLike, Config as FredConfig, Pool as FredPool,
};
use tower_sessions_sqlx_store::sqlx::PgPool;

use crate::BoxError;
use crate::apps;
use crate::client::Conn;
use crate::servers::{self, Postgres, RedisServer, Served};

/// Connections each app's store may open (the load bench's number); this
/// crate's Redis store keeps its one multiplexed connection.
const STORE_CONNECTIONS: u32 = 4;

/// The idle timeout of this crate's sessions: long enough that no session
/// made at the start of a full run expires before its end. The peer's
/// default keeps a session two weeks.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Krate {
    Ours,
    Peer,
}

impl Krate {
    pub(crate) const ALL: [Self; 2] = [Self::Ours, Self::Peer];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Ours => "tower-httpsession",
            Self::Peer => "tower-sessions 0.14",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::Peer => "peer",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Redis,
    Postgres,
}

impl Backend {
    pub(crate) const ALL: [Self; 2] = [Self::Redis, Self::Postgres];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Postgres => "postgres",
        }
    }
}

/// Where one app keeps its sessions.
#[derive(Debug, Clone)]
pub(crate) struct Namespace {
    pub(crate) krate: Krate,
    pub(crate) backend: Backend,
    /// The Redis database (on a private server).
    pub(crate) redis_db: u8,
    /// The PostgreSQL schema (in the bench database).
    pub(crate) schema: String,
}

impl Namespace {
    pub(crate) fn new(krate: Krate, backend: Backend, redis_db: u8, name: &str) -> Self {
        Self {
            krate,
            backend,
            redis_db,
            schema: format!("{}_{name}", krate.short()),
        }
    }

    /// The session tables of the namespace, the table holding the session
    /// keys first, each with its key column.
    pub(crate) fn tables(&self) -> Vec<(String, &'static str)> {
        match self.krate {
            Krate::Ours => vec![
                (format!("{}.sessions", self.schema), "key"),
                (format!("{}.attributes", self.schema), "session_key"),
            ],
            Krate::Peer => vec![(format!("{}.session", self.schema), "id")],
        }
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} / {}", self.krate.label(), self.backend.label())
    }
}

/// Options of this crate's session layer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Options {
    /// Touch a session at most this often (default: a twentieth of the
    /// idle timeout).
    pub(crate) touch_interval: Option<Duration>,
}

/// An app served over its namespace.
pub(crate) struct App {
    pub(crate) namespace: Namespace,
    pub(crate) addr: SocketAddr,
    served: Served,
    fred: Option<FredPool>,
    pg: Option<PgPool>,
    /// This crate's PostgreSQL store, for its cleanup task.
    pub(crate) store: Option<PostgresStore>,
}

impl App {
    /// Builds the app over an empty namespace and serves it; call on the
    /// server runtime, so that the stores' connection tasks live there.
    pub(crate) async fn start(
        namespace: Namespace,
        redis: Option<&RedisServer>,
        pg: &Postgres,
        options: Options,
    ) -> Result<Self, BoxError> {
        let (mut fred, mut pool, mut store) = (None, None, None);
        let router = match (namespace.krate, namespace.backend) {
            (Krate::Ours, Backend::Redis) => {
                let redis = redis.ok_or("a Redis app needs a Redis server")?;
                flush(redis, namespace.redis_db).await?;
                let store = RedisStore::connect(&redis.url(namespace.redis_db)).await?;
                apps::ours(SessionLayer::with_config(store, our_config(options))?)
            }
            (Krate::Ours, Backend::Postgres) => {
                let built = PostgresStore::builder(pg.url.clone())
                    .with_schema(namespace.schema.clone())
                    .with_max_connections(STORE_CONNECTIONS)
                    .connect()
                    .await?;
                built.migrate().await?;
                pool = Some(built.pool().clone());
                store = Some(built.clone());
                apps::ours(SessionLayer::with_config(built, our_config(options))?)
            }
            (Krate::Peer, Backend::Redis) => {
                let redis = redis.ok_or("a Redis app needs a Redis server")?;
                flush(redis, namespace.redis_db).await?;
                let config = FredConfig::from_url(&redis.url(namespace.redis_db))?;
                let fred_pool =
                    FredPool::new(config, None, None, None, STORE_CONNECTIONS as usize)?;
                fred_pool.init().await?;
                fred = Some(fred_pool.clone());
                apps::peer(peer_layer(tower_sessions_redis_store::RedisStore::new(
                    fred_pool,
                )))
            }
            (Krate::Peer, Backend::Postgres) => {
                let peer_pool = servers::connect(&pg.url, STORE_CONNECTIONS).await?;
                let peer = tower_sessions_sqlx_store::PostgresStore::new(peer_pool.clone())
                    .with_schema_name(&namespace.schema)?
                    .with_table_name("session")?;
                peer.migrate().await?;
                pool = Some(peer_pool);
                apps::peer(peer_layer(peer))
            }
        };
        let served = Served::start(router).await?;
        Ok(Self {
            namespace,
            addr: served.addr,
            served,
            fred,
            pg: pool,
            store,
        })
    }

    /// Stops serving and closes the store's connections; call on the
    /// server runtime.
    pub(crate) async fn stop(self) {
        self.served.stop().await;
        if let Some(pool) = self.fred {
            let _ = pool.quit().await;
        }
        if let Some(pool) = self.pg {
            pool.close().await;
        }
    }
}

fn our_config(options: Options) -> SessionConfig {
    // The bench speaks plain HTTP to the loopback address.
    let config = SessionConfig::default()
        .with_insecure_cookie_over_http()
        .with_max_inactive_interval(IDLE_TIMEOUT);
    match options.touch_interval {
        Some(interval) => config.with_touch_interval(interval),
        None => config,
    }
}

fn peer_layer<S: tower_sessions::SessionStore + Clone>(store: S) -> SessionManagerLayer<S> {
    // The bench speaks plain HTTP to the loopback address.
    SessionManagerLayer::new(store).with_secure(false)
}

async fn flush(redis: &RedisServer, db: u8) -> Result<(), BoxError> {
    let mut conn = redis.connection(db).await?;
    let () = redis::cmd("FLUSHDB").query_async(&mut conn).await?;
    Ok(())
}

/// Starts `sessions` sessions of `count` attributes of `size` bytes through
/// the app's routes, one after another, and returns their cookie pairs.
pub(crate) async fn seed_http(
    addr: SocketAddr,
    sessions: usize,
    count: usize,
    size: usize,
) -> Result<Vec<Option<String>>, BoxError> {
    let mut cookies = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let mut conn = Conn::open(addr, None).await?;
        let answer = conn
            .expect_ok(Method::POST, &format!("/seed/{count}/{size}"))
            .await?;
        let cookie = answer.set_cookie.ok_or("a seeded session sent no cookie")?;
        cookies.push(Some(cookie));
    }
    Ok(cookies)
}
