//! Part 2: memory (Redis) and disk (PostgreSQL) per session, for a typical
//! session (20 attributes of 100 bytes) and a big one (50 of 1,000).
//!
//! Redis: the growth of `used_memory` over `sessions` copies of one
//! session, on a private server with its default settings and again with
//! `hash-max-listpack-value` raised to 256. PostgreSQL: the size of the tables
//! (heap, indexes, TOAST) holding `sessions` copies, after `VACUUM
//! ANALYZE`, over their size with none.

use tower_sessions_sqlx_store::sqlx::{self, PgPool};

use crate::BoxError;
use crate::fleet::{self, App, Backend, Krate, Namespace, Options};
use crate::seed;
use crate::servers::{self, Postgres, RedisServer};

/// A session shape: attributes and bytes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) attributes: usize,
    pub(crate) bytes: usize,
}

impl Shape {
    pub(crate) const ALL: [Self; 2] = [
        Self {
            attributes: 20,
            bytes: 100,
        },
        Self {
            attributes: 50,
            bytes: 1000,
        },
    ];

    pub(crate) fn label(self) -> String {
        format!("{} × {} B", self.attributes, self.bytes)
    }
}

/// The Redis settings a measurement ran under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedisConfig {
    Default,
    Listpack,
}

impl RedisConfig {
    pub(crate) const ALL: [Self; 2] = [Self::Default, Self::Listpack];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Default => "redis, default config",
            Self::Listpack => "redis, hash-max-listpack-value 256 (the README's advice)",
        }
    }

    fn settings(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Default => &[],
            Self::Listpack => &[("hash-max-listpack-value", "256")],
        }
    }
}

/// Bytes per session of one crate and shape.
#[derive(Debug, Clone)]
pub(crate) struct RedisCost {
    pub(crate) config: RedisConfig,
    pub(crate) shape: Shape,
    pub(crate) krate: Krate,
    pub(crate) bytes_per_session: f64,
    /// `OBJECT ENCODING` of the template key.
    pub(crate) encoding: String,
}

/// Bytes per session in PostgreSQL, split.
#[derive(Debug, Clone)]
pub(crate) struct PgCost {
    pub(crate) shape: Shape,
    pub(crate) krate: Krate,
    pub(crate) heap: f64,
    pub(crate) indexes: f64,
    pub(crate) toast: f64,
}

impl PgCost {
    pub(crate) fn total(&self) -> f64 {
        self.heap + self.indexes + self.toast
    }
}

pub(crate) struct Memory {
    pub(crate) sessions: u64,
    pub(crate) redis: Vec<RedisCost>,
    pub(crate) pg: Vec<PgCost>,
}

pub(crate) fn run(
    server: &tokio::runtime::Runtime,
    client: &tokio::runtime::Runtime,
    pg: &Postgres,
    sessions: u64,
) -> Result<Memory, BoxError> {
    let mut redis_costs = Vec::new();
    for config in RedisConfig::ALL {
        let redis = client.block_on(RedisServer::start(config.settings()))?;
        for shape in Shape::ALL {
            for krate in Krate::ALL {
                let namespace = Namespace::new(krate, Backend::Redis, 0, "memory");
                let app = server.block_on(App::start(
                    namespace.clone(),
                    Some(&redis),
                    pg,
                    Options::default(),
                ))?;
                let cost = client.block_on(redis_cost(&app, &redis, shape, sessions));
                server.block_on(app.stop());
                let (bytes_per_session, encoding) = cost?;
                eprintln!(
                    "== memory, {}, {}, {}: {bytes_per_session:.0} B per session ({encoding})",
                    config.label(),
                    shape.label(),
                    krate.label()
                );
                redis_costs.push(RedisCost {
                    config,
                    shape,
                    krate,
                    bytes_per_session,
                    encoding,
                });
            }
        }
    }
    let mut pg_costs = Vec::new();
    for (s, shape) in Shape::ALL.into_iter().enumerate() {
        for krate in Krate::ALL {
            let namespace = Namespace::new(krate, Backend::Postgres, 0, &format!("disk{s}"));
            let app = server.block_on(App::start(namespace, None, pg, Options::default()))?;
            let cost = client.block_on(pg_cost(&app, pg, shape, sessions));
            server.block_on(app.stop());
            let cost = cost?;
            eprintln!(
                "== disk, postgres, {}, {}: {:.0} B per session (heap {:.0}, indexes {:.0}, TOAST {:.0})",
                shape.label(),
                krate.label(),
                cost.total(),
                cost.heap,
                cost.indexes,
                cost.toast
            );
            pg_costs.push(cost);
        }
    }
    Ok(Memory {
        sessions,
        redis: redis_costs,
        pg: pg_costs,
    })
}

async fn redis_cost(
    app: &App,
    redis: &RedisServer,
    shape: Shape,
    sessions: u64,
) -> Result<(f64, String), BoxError> {
    let namespace = &app.namespace;
    let before = redis.used_memory().await?;
    fleet::seed_http(app.addr, 1, shape.attributes, shape.bytes).await?;
    let template = seed::redis_template(redis, namespace).await?;
    seed::redis_copies(redis, namespace, &template, 1, sessions - 1).await?;
    let after = redis.used_memory().await?;
    let mut conn = redis.connection(namespace.redis_db).await?;
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(&template)
        .query_async(&mut conn)
        .await?;
    let () = redis::cmd("FLUSHDB").query_async(&mut conn).await?;
    Ok((
        after.saturating_sub(before) as f64 / sessions as f64,
        encoding,
    ))
}

async fn pg_cost(
    app: &App,
    pg: &Postgres,
    shape: Shape,
    sessions: u64,
) -> Result<PgCost, BoxError> {
    let namespace = &app.namespace;
    let pool = servers::connect(&pg.url, 1).await?;
    let empty = sizes(&pool, namespace).await?;
    fleet::seed_http(app.addr, 1, shape.attributes, shape.bytes).await?;
    let template = seed::pg_template(&pool, namespace).await?;
    seed::pg_copies(&pool, namespace, &template, 2, sessions - 1, &[]).await?;
    let full = sizes(&pool, namespace).await?;
    sqlx::raw_sql(&format!("DROP SCHEMA {} CASCADE", namespace.schema))
        .execute(&pool)
        .await?;
    pool.close().await;
    let per = |f: fn(&[i64; 3]) -> i64| (f(&full) - f(&empty)) as f64 / sessions as f64;
    Ok(PgCost {
        shape,
        krate: namespace.krate,
        heap: per(|s| s[0]),
        indexes: per(|s| s[1]),
        toast: per(|s| s[2]),
    })
}

/// Heap, indexes and TOAST (with its index) of the namespace's tables, in
/// bytes.
async fn sizes(pool: &PgPool, namespace: &Namespace) -> Result<[i64; 3], BoxError> {
    let mut total = [0_i64; 3];
    for (table, _) in namespace.tables() {
        let (heap, indexes, toast): (i64, i64, i64) = sqlx::query_as(
            "SELECT pg_relation_size(c.oid), pg_indexes_size(c.oid), \
             coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) \
             FROM pg_class c WHERE c.oid = $1::regclass",
        )
        .bind(&table)
        .fetch_one(pool)
        .await?;
        total[0] += heap;
        total[1] += indexes;
        total[2] += toast;
    }
    Ok(total)
}
