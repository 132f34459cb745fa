//! [`PostgresStoreBuilder`]: the settings of a [`PostgresStore`] and its
//! connection pool.

use std::fmt;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::error::{from_sqlx, timed_out};
use super::{
    BACKEND, DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_APPLICATION_NAME, DEFAULT_CHECK_IDLE_AFTER,
    DEFAULT_GROUP_COMMIT_BATCH, DEFAULT_MAX_CONNECTIONS, DEFAULT_OPERATION_TIMEOUT, DEFAULT_SCHEMA,
    PostgresStore,
};
use crate::store::{Operation, StoreError, StoreErrorKind};

/// Checks that `schema` is a lowercase SQL identifier that needs no quoting,
/// so that it can be written into statements and `search_path` as is.
fn check_schema(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let valid = schema.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with("pg_");
    if valid {
        Ok(())
    } else {
        Err(StoreError::new(
            BACKEND,
            Operation::Connect,
            StoreErrorKind::Config,
            "the schema name must be 1 to 63 characters of a-z, 0-9 and _, \
             start with a letter or _, and not start with pg_",
        ))
    }
}

/// Builds a [`PostgresStore`]: with a connection pool of its own from a URL
/// ([`PostgresStore::builder`]), or over a pool the application built
/// ([`PostgresStore::builder_for_pool`]).
///
/// Every setter documents its default. The settings are checked by
/// [`connect`](Self::connect) and [`connect_lazy`](Self::connect_lazy).
///
/// ```no_run
/// use std::time::Duration;
/// use tower_httpsession::store::postgres::PostgresStore;
///
/// # async fn run() -> Result<(), tower_httpsession::StoreError> {
/// let store = PostgresStore::builder("postgres://app@127.0.0.1/app")
///     .with_schema("web_sessions")
///     .with_max_connections(20)
///     .with_acquire_timeout(Duration::from_millis(500))
///     .connect()
///     .await?;
/// # let _ = store; Ok(()) }
/// ```
///
/// The settings of the pool the store makes ([`with_acquire_timeout`],
/// [`with_max_connections`], [`with_application_name`],
/// [`with_connection_check_after`], [`without_connection_check`] and
/// [`with_commits_not_waiting_for_flush`]) do not apply to a pool the
/// application built, which has its own: [`connect`](Self::connect) refuses
/// them there.
///
/// `Debug` never prints the URL, which may hold a password.
///
/// [`with_acquire_timeout`]: Self::with_acquire_timeout
/// [`with_max_connections`]: Self::with_max_connections
/// [`with_application_name`]: Self::with_application_name
/// [`with_connection_check_after`]: Self::with_connection_check_after
/// [`without_connection_check`]: Self::without_connection_check
/// [`with_commits_not_waiting_for_flush`]: Self::with_commits_not_waiting_for_flush
#[must_use]
pub struct PostgresStoreBuilder {
    source: Source,
    schema: String,
    application_name: Option<String>,
    acquire_timeout: Duration,
    operation_timeout: Duration,
    max_connections: u32,
    check_idle_after: Option<Duration>,
    wait_for_flush: bool,
    group_commit: Option<usize>,
    /// The setters called that configure the store's own pool.
    pool_settings: Vec<&'static str>,
    pub(super) tls: super::tls::TlsSettings,
}

/// Where the store's connections come from.
enum Source {
    Url(String),
    Pool(PgPool),
}

impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.source {
            Source::Url(_) => "url: <redacted>",
            Source::Pool(_) => "the application's pool",
        };
        f.debug_struct("PostgresStoreBuilder")
            .field("source", &source)
            .field("schema", &self.schema)
            .field("application_name", &self.application_name)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("max_connections", &self.max_connections)
            .field("check_idle_after", &self.check_idle_after)
            .field("wait_for_flush", &self.wait_for_flush)
            .field("group_commit", &self.group_commit)
            .field("tls", &self.tls)
            .finish()
    }
}

impl PostgresStoreBuilder {
    fn new(source: Source) -> Self {
        Self {
            source,
            schema: DEFAULT_SCHEMA.to_owned(),
            application_name: None,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            check_idle_after: Some(DEFAULT_CHECK_IDLE_AFTER),
            wait_for_flush: true,
            group_commit: Some(DEFAULT_GROUP_COMMIT_BATCH),
            pool_settings: Vec::new(),
            tls: super::tls::TlsSettings::default(),
        }
    }

    pub(super) fn for_url(url: String) -> Self {
        Self::new(Source::Url(url))
    }

    pub(super) fn for_pool(pool: PgPool) -> Self {
        Self::new(Source::Pool(pool))
    }

    /// Records that `setter`, a setting of the store's own pool, was called.
    pub(super) fn pool_setting(mut self, setter: &'static str) -> Self {
        self.pool_settings.push(setter);
        self
    }

    /// The schema for the store's tables. Default: [`DEFAULT_SCHEMA`](super::DEFAULT_SCHEMA).
    /// Checked when the store is built.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The `application_name` of the store's connections. Default: the
    /// URL's `application_name` if it has one, else
    /// [`DEFAULT_APPLICATION_NAME`].
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self.pool_setting("with_application_name")
    }

    /// How long a call waits for a connection before it fails as
    /// unavailable; also bounds [`connect`](Self::connect). Default:
    /// [`DEFAULT_ACQUIRE_TIMEOUT`](super::DEFAULT_ACQUIRE_TIMEOUT).
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self.pool_setting("with_acquire_timeout")
    }

    /// How long a whole call may take before it fails as unavailable.
    /// Default: [`DEFAULT_OPERATION_TIMEOUT`](super::DEFAULT_OPERATION_TIMEOUT).
    ///
    /// A write that times out may still commit on the server.
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// The most connections the pool opens. Default:
    /// [`DEFAULT_MAX_CONNECTIONS`](super::DEFAULT_MAX_CONNECTIONS).
    pub fn with_max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self.pool_setting("with_max_connections")
    }

    /// Checks a connection (one round trip, no statement) before handing it
    /// out if it sat idle in the pool at least `idle`; a broken one is
    /// closed and another taken. Default: [`DEFAULT_CHECK_IDLE_AFTER`](super::DEFAULT_CHECK_IDLE_AFTER).
    /// [`Duration::ZERO`] checks every connection every time.
    ///
    /// Under load, connections go back and forth without sitting idle, so
    /// they cost no extra round trip; a connection that broke while unused
    /// (the server restarted, or terminated it) is found before a call meets
    /// it. Checking every time doubles the round trips of a call that
    /// takes a connection, which is most of a read's cost.
    pub fn with_connection_check_after(mut self, idle: Duration) -> Self {
        self.check_idle_after = Some(idle);
        self.pool_setting("with_connection_check_after")
    }

    /// Never checks a connection before handing it out. A connection that
    /// broke while idle (the server restarted, or terminated it) is then
    /// found broken by the call that uses it: that call fails as
    /// unavailable, and the pool replaces the connection for the next.
    pub fn without_connection_check(mut self) -> Self {
        self.check_idle_after = None;
        self.pool_setting("without_connection_check")
    }

    /// Never checks a connection before handing it out.
    #[deprecated(note = "renamed to `without_connection_check`")]
    pub fn with_unchecked_connections(self) -> Self {
        self.without_connection_check()
    }

    /// Lets the store's writes commit without waiting for their WAL to
    /// reach the disk (`synchronous_commit = off` on its connections only).
    /// Default: they wait, as every PostgreSQL commit does by default.
    ///
    /// The wait is most of a small write's time: on the benchmark's
    /// machine (`BENCHMARKS.md`), where a flush takes about 0.15 ms, a
    /// request setting one attribute went from about 7,600 to 11,900 a
    /// second without it. The price: if the server crashes (a crash, not a
    /// terminated connection or a clean restart), session changes of up to
    /// three times `wal_writer_delay` (0.6 s by default) before it may be
    /// lost; the database stays consistent. Choose it where sessions may
    /// lose a moment of history, as they do on a Redis that keeps nothing
    /// on disk.
    pub fn with_commits_not_waiting_for_flush(mut self) -> Self {
        self.wait_for_flush = false;
        self.pool_setting("with_commits_not_waiting_for_flush")
    }

    /// Commits concurrent writes together, of different sessions and of
    /// one session (in the order they came), at most `max_batch` (at least
    /// 2) in one transaction: one WAL flush for the group instead of one
    /// each. Default: on, with batches of at most
    /// [`DEFAULT_GROUP_COMMIT_BATCH`](super::DEFAULT_GROUP_COMMIT_BATCH).
    ///
    /// A write that finds no batch in flight goes at once, alone; writes
    /// that arrive while batches are in flight (at most as many as the pool
    /// has connections) go together in the next one. Each write keeps its
    /// own checks and answer, and is answered only once its transaction
    /// committed. Writes that bind a session to a principal always go
    /// alone. See the [module docs](super#group-commit).
    pub fn with_group_commit(mut self, max_batch: usize) -> Self {
        self.group_commit = Some(max_batch.max(2));
        self
    }

    /// Commits every write in a transaction of its own.
    pub fn without_group_commit(mut self) -> Self {
        self.group_commit = None;
        self
    }

    /// Checks the settings that every source shares, and those of the
    /// source.
    fn check(&self) -> Result<(), StoreError> {
        check_schema(&self.schema)?;
        match (&self.source, self.pool_settings.first()) {
            (Source::Pool(_), Some(setter)) => Err(StoreError::new(
                BACKEND,
                Operation::Connect,
                StoreErrorKind::Config,
                PoolSetting(setter),
            )),
            _ => Ok(()),
        }
    }

    /// The pool the store makes for `url`, and its connect options.
    fn pool_for(&self, url: &str) -> Result<(PgPoolOptions, PgConnectOptions), StoreError> {
        let options: PgConnectOptions =
            url.parse().map_err(|e| from_sqlx(Operation::Connect, e))?;
        let options = self.tls.apply(url, options)?;
        let name = self
            .application_name
            .clone()
            .or_else(|| options.get_application_name().map(str::to_owned))
            .unwrap_or_else(|| DEFAULT_APPLICATION_NAME.to_owned());
        // The store runs a handful of statements with the same shape every
        // time: plan each once per connection instead of at every execution
        // (custom plans of the apply statement's CTEs cost more than the
        // statement itself).
        let options = options
            .application_name(&name)
            .options([("plan_cache_mode", "force_generic_plan")]);
        let options = if self.wait_for_flush {
            options
        } else {
            options.options([("synchronous_commit", "off")])
        };
        let mut pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(0)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(false);
        if let Some(idle) = self.check_idle_after {
            // An error closes the connection, and the pool takes another.
            pool = pool.before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= idle {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            });
        }
        Ok((pool, options))
    }

    /// Connects, opening one connection to check that the server answers:
    /// the first of a pool of the store's own, or one taken from the
    /// application's pool.
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::Config`] for a malformed URL or schema name,
    /// credentials the server refuses, or a setting of the store's own pool
    /// given with the application's; [`StoreErrorKind::Unavailable`] if no
    /// connection opened within the acquire timeout (the pool's own, for
    /// the application's pool). With TLS (feature `tls`),
    /// [`StoreErrorKind::Config`] caused by a
    /// [`TlsError`](crate::store::tls::TlsError) for a root certificate file
    /// that cannot be read, a server certificate that does not verify, or a
    /// server that does not offer TLS where `sslmode` requires it.
    pub async fn connect(self) -> Result<PostgresStore, StoreError> {
        self.check()?;
        let pool = match &self.source {
            Source::Url(url) => {
                let (pool, options) = self.pool_for(url)?;
                // The pool bounds its first acquire by the acquire timeout;
                // the outer bound covers the rest of the handshake.
                let limit = self.acquire_timeout;
                tokio::time::timeout(
                    limit + Duration::from_millis(250),
                    pool.connect_with(options.clone()),
                )
                .await
                .map_err(|_| timed_out(Operation::Connect, limit))?
                .map_err(|e| self.tls.connect_failed(url, &options, e))?
            }
            Source::Pool(pool) => {
                let limit = pool.options().get_acquire_timeout();
                let connection =
                    tokio::time::timeout(limit + Duration::from_millis(250), pool.acquire())
                        .await
                        .map_err(|_| timed_out(Operation::Connect, limit))?
                        .map_err(|e| from_sqlx(Operation::Connect, e))?;
                drop(connection);
                pool.clone()
            }
        };
        Ok(PostgresStore::from_parts(
            pool,
            self.schema,
            self.operation_timeout,
            self.group_commit,
        ))
    }

    /// Builds the store without connecting: the first call opens the first
    /// connection (of the store's own pool) or takes one (of the
    /// application's). Lets an application start while the database is
    /// down; its calls fail as unavailable until it answers.
    ///
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::Config`] for a malformed URL or schema name, or a
    /// setting of the store's own pool given with the application's.
    pub fn connect_lazy(self) -> Result<PostgresStore, StoreError> {
        self.check()?;
        let pool = match &self.source {
            Source::Url(url) => {
                let (pool, options) = self.pool_for(url)?;
                pool.connect_lazy_with(options)
            }
            Source::Pool(pool) => pool.clone(),
        };
        Ok(PostgresStore::from_parts(
            pool,
            self.schema,
            self.operation_timeout,
            self.group_commit,
        ))
    }
}

/// A setting of the store's own pool given with the application's pool.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0} sets up the pool the store makes from a URL; the application's pool has its own settings"
)]
struct PoolSetting(&'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        for good in ["tower_httpsession", "_s", "s1", &"a".repeat(63)] {
            assert!(check_schema(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1s",
            "Upper",
            "with space",
            "quote\"",
            "semi;colon",
            "pg_catalog",
            &"a".repeat(64),
        ] {
            let e = check_schema(bad).unwrap_err();
            assert_eq!(e.kind(), StoreErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn debug_hides_the_url() {
        let builder = PostgresStore::builder("postgres://user:hunter2@db/app");
        let printed = format!("{builder:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("tower_httpsession"));
    }

    #[tokio::test]
    async fn malformed_url_is_a_config_error() {
        let e = PostgresStore::builder("not a url")
            .connect_lazy()
            .unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Config);
        assert_eq!(e.operation(), Operation::Connect);
    }

    #[tokio::test]
    async fn the_application_pool_takes_store_settings_and_refuses_pool_ones() {
        let pool = PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let store = PostgresStore::builder_for_pool(pool.clone())
            .with_schema("web_sessions")
            .with_operation_timeout(Duration::from_secs(2))
            .connect_lazy()
            .unwrap();
        assert_eq!(store.schema(), "web_sessions");
        let bad_schema = PostgresStore::builder_for_pool(pool.clone()).with_schema("pg_x");
        assert!(bad_schema.connect_lazy().is_err());
        let e = PostgresStore::builder_for_pool(pool)
            .with_max_connections(50)
            .connect_lazy()
            .unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Config);
        let cause = std::error::Error::source(&e).unwrap().to_string();
        assert!(cause.starts_with("with_max_connections sets up"), "{cause}");
    }
}
