//! PostgreSQL store through sqlx (feature `postgres`).
//!
//! Sessions live in two tables of a schema of the store's own (by default
//! [`DEFAULT_SCHEMA`]): one row per session, and one row per attribute keyed
//! by (session, name). A request that changes one attribute writes that one
//! row and the session's timestamps, nothing else; every operation is one
//! SQL statement (concurrent writes share transactions: see below). See
//! `migrations/` for the schema.
//!
//! A touch changes no indexed column, so the session row is updated in
//! place (a HOT update: no new index entries, the old version pruned within
//! its page); the tables keep their size however often sessions are
//! written. The cleanup finds expired sessions through `sweep_at`, a lower
//! bound of the expiry that touches leave alone (migration 0003): a batch
//! deletes the expired sessions among those due and reschedules the others
//! at their expiry. [`spawn_cleanup`](PostgresStore::spawn_cleanup) runs
//! batches of bounded size, each one short transaction that skips the rows
//! requests hold, with a pause after each in proportion to its time
//! ([`CleanupOptions`]), so that a backlog of a million expired sessions is
//! deleted while requests go on.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use axum::{Router, routing::get};
//! use tower_httpsession::store::postgres::PostgresStore;
//! use tower_httpsession::{Session, SessionError, SessionLayer};
//!
//! async fn visit(session: Session) -> Result<String, SessionError> {
//!     let n = session.update("visits", |n: Option<u32>| n.unwrap_or(0) + 1).await?;
//!     Ok(n.to_string())
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresStore::builder("postgres://app@db.internal/app")
//!     .with_schema("sessions")
//!     .connect()
//!     .await?;
//! store.migrate().await?; // safe when several instances start at once
//! let _cleanup = store.spawn_cleanup(Duration::from_secs(60), 100);
//!
//! let app: Router = Router::new()
//!     .route("/", get(visit))
//!     .layer(SessionLayer::new(store));
//! # let _ = app; Ok(()) }
//! ```
//!
//! # Outages
//!
//! Every call is bounded in time: taking a connection from the pool by the
//! acquire timeout ([`DEFAULT_ACQUIRE_TIMEOUT`]), the whole call by the
//! operation timeout ([`DEFAULT_OPERATION_TIMEOUT`]). An unreachable server,
//! a connection that broke or was terminated, or a call that ran out of time
//! fails with [`StoreErrorKind::Unavailable`], which the session layer turns
//! into 503 with `Retry-After`. A pooled connection that sat idle for a while
//! ([`DEFAULT_CHECK_IDLE_AFTER`]) is checked before use, so the pool replaces
//! connections that broke while nobody used them by itself once the server
//! answers again; a connection that breaks while in use fails one call.
//! Connections carry an `application_name` ([`DEFAULT_APPLICATION_NAME`]) so
//! that they are easy to find in `pg_stat_activity`.
//!
//! # Group commit
//!
//! A durable commit waits for its WAL to reach the disk, and with small
//! writes that wait is most of a write's time. So concurrent writes share
//! a transaction: a write that finds no batch in flight goes at once,
//! alone; writes that arrive meanwhile queue and go together in the next
//! batch (at most as many batches in flight as the pool has connections),
//! in key order (writes of one session in the order they came), each with
//! its own statement and answer, answered once the batch committed. A batch whose statement fails
//! is rolled back and its writes run alone. Writes that bind a principal
//! go alone. See [`PostgresStoreBuilder::with_group_commit`].
//!
//! # Principals
//!
//! The store [supports principals](SessionStore::supports_principals): a
//! session's principal and label are columns of its row, and a partial index
//! on the principal finds a principal's sessions (migration 0002). Binding a
//! session, by `create` or `apply`, is one statement: it takes the
//! principal's advisory lock (`pg_advisory_xact_lock`, held until the
//! statement commits), deletes the principal's expired sessions, counts the
//! live ones and evicts or refuses under the limit, then writes. The lock
//! makes limits exact however many logins race; one principal's bindings
//! wait for each other, other principals' don't. Listing and revoking are
//! one statement each; statements that neither bind nor label a session are
//! unchanged by the index.

mod builder;
mod cleanup;
mod error;
mod group;
mod principals;
mod rows;
mod sql;
mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPool;
use sqlx::{Connection, PgConnection};

use self::error::{from_migrate, from_sqlx, timed_out};
use self::rows::{Attempt, LoadedRow, record_from_row};
use self::sql::Statements;
use super::{
    Applied, ChangeSet, Created, Operation, PartialRecord, Principal, PrincipalSession, Record,
    Revocation, SessionLimit, SessionStore, StoreError, StoreErrorKind, StoreHealth, StoreKey,
    Swap, VerifierHash,
};

pub use self::builder::PostgresStoreBuilder;
pub use self::cleanup::{
    CleanupHandle, CleanupOptions, DEFAULT_CLEANUP_PAUSE_PERCENT, MAX_CLEANUP_BATCH, SweepBatch,
};
pub use self::group::DEFAULT_GROUP_COMMIT_BATCH;
pub use self::tls::{SslMode, UnknownSslMode};

/// The name this store gives in errors and health reports.
const BACKEND: &str = "postgres";

/// The schema the store keeps its tables in unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "tower_httpsession";
/// The `application_name` of the store's connections unless the URL or the
/// builder names one.
pub const DEFAULT_APPLICATION_NAME: &str = "tower-httpsession";
/// How long a call waits for a pooled connection before it fails as
/// unavailable.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a whole call may take before it fails as unavailable.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// The size of the connection pool the builder makes.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// How long a connection may sit idle in the pool before it is checked (one
/// round trip) on its way out.
pub const DEFAULT_CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// How many times `compare_and_set` retries when a failed swap finds the
/// expected value back in place.
const CAS_ATTEMPTS: usize = 8;

/// The schema, applied by [`PostgresStore::migrate`].
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A [`SessionStore`] in PostgreSQL. Clones share one pool.
///
/// Build it with [`PostgresStore::connect`] or [`PostgresStore::builder`]
/// from a URL, or with [`PostgresStore::from_pool`] or
/// [`PostgresStore::builder_for_pool`] from a pool the application already
/// has; then call [`migrate`](Self::migrate) once at
/// start-up and, on at least one instance,
/// [`spawn_cleanup`](Self::spawn_cleanup). See the [module docs](self).
///
/// `Debug` prints the schema and the pool's state, never the URL or its
/// password.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    schema: String,
    sql: Statements,
    operation_timeout: Duration,
    /// Concurrent plain applies share transactions, unless `None`.
    group: Option<group::Group>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .field("pool_size", &self.inner.pool.size())
            .field("pool_idle", &self.inner.pool.num_idle())
            .field("pool_closed", &self.inner.pool.is_closed())
            .field("operation_timeout", &self.inner.operation_timeout)
            .field("group_commit", &self.inner.group)
            .finish()
    }
}

impl PostgresStore {
    /// A builder for a store with a connection pool of its own to `url`,
    /// such as `postgres://user:password@host:5432/database`.
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder::for_url(url.into())
    }

    /// A builder for a store over a pool the application built, to choose
    /// the schema or the operation timeout.
    ///
    /// The pool's own settings apply: give it an acquire timeout and keep
    /// `test_before_acquire` on, or an outage may hold calls until the
    /// operation timeout.
    pub fn builder_for_pool(pool: PgPool) -> PostgresStoreBuilder {
        PostgresStoreBuilder::for_pool(pool)
    }

    /// Connects to `url` with the builder's defaults.
    ///
    /// # Errors
    ///
    /// As [`PostgresStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// A store over a pool the application built, in [`DEFAULT_SCHEMA`]
    /// with the default operation timeout, without connecting; see
    /// [`builder_for_pool`](Self::builder_for_pool).
    #[must_use]
    pub fn from_pool(pool: PgPool) -> Self {
        Self::from_parts(
            pool,
            DEFAULT_SCHEMA.to_owned(),
            DEFAULT_OPERATION_TIMEOUT,
            Some(DEFAULT_GROUP_COMMIT_BATCH),
        )
    }

    fn from_parts(
        pool: PgPool,
        schema: String,
        operation_timeout: Duration,
        group_commit: Option<usize>,
    ) -> Self {
        let sql = Statements::new(&schema);
        Self {
            inner: Arc::new(Inner {
                pool,
                schema,
                sql,
                operation_timeout,
                group: group_commit.map(group::Group::new),
            }),
        }
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema that holds the store's tables.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Creates the schema if needed and applies the store's migrations.
    ///
    /// Safe to call from several instances at once: sqlx's migrator holds an
    /// advisory lock while it works, and the others wait for it. The
    /// migrations run on a connection of their own whose `search_path` is
    /// the store's schema, so sqlx's `_sqlx_migrations` table for the store
    /// lives in that schema and the application's own one (usually in
    /// `public`) is neither read nor written.
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::Unavailable`] if the server cannot be reached;
    /// [`StoreErrorKind::Config`] if the database holds migrations this
    /// version does not know or that differ from its own, or the user may
    /// not create the schema.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let schema = self.schema();
        let options = (*self.pool().connect_options())
            .clone()
            .options([("search_path", schema)]);
        let connect_timeout = self.pool().options().get_acquire_timeout();
        let mut conn = tokio::time::timeout(connect_timeout, PgConnection::connect_with(&options))
            .await
            .map_err(|_| timed_out(Operation::Migrate, connect_timeout))?
            .map_err(|e| from_sqlx(Operation::Migrate, e))?;
        let result = async {
            ensure_schema(&mut conn, schema).await?;
            MIGRATOR.run(&mut conn).await.map_err(from_migrate)
        }
        .await;
        let _ = conn.close().await;
        result
    }

    /// Runs `call`, failing as unavailable if it takes longer than the
    /// operation timeout.
    pub(super) async fn bounded<T>(
        &self,
        operation: Operation,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let limit = self.inner.operation_timeout;
        tokio::time::timeout(limit, call)
            .await
            .unwrap_or_else(|_| Err(timed_out(operation, limit)))
    }
}

/// Creates `schema` unless it exists. Two instances may race to create it;
/// the loser's duplicate error is recognised by its kind and code.
async fn ensure_schema(conn: &mut PgConnection, schema: &str) -> Result<(), StoreError> {
    let op = Operation::Migrate;
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
    )
    .bind(schema)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| from_sqlx(op, e))?;
    if exists {
        return Ok(());
    }
    // `schema` was checked to need no quoting.
    match sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&mut *conn)
        .await
    {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db))
            if db.is_unique_violation() || db.code().as_deref() == Some("42P06") =>
        {
            Ok(())
        }
        Err(e) => Err(from_sqlx(op, e)),
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        let op = Operation::Load;
        self.bounded(op, async {
            let row: Option<LoadedRow> = sqlx::query_as(&self.inner.sql.load)
                .bind(key.as_str())
                .fetch_optional(self.pool())
                .await
                .map_err(|e| from_sqlx(op, e))?;
            row.map(record_from_row).transpose()
        })
        .await
    }

    async fn load_some(
        &self,
        key: &StoreKey,
        names: &[&str],
    ) -> Result<Option<PartialRecord>, StoreError> {
        let op = Operation::Load;
        self.bounded(op, async {
            let row: Option<LoadedRow> = sqlx::query_as(&self.inner.sql.load_some)
                .bind(key.as_str())
                .bind(names)
                .fetch_optional(self.pool())
                .await
                .map_err(|e| from_sqlx(op, e))?;
            row.map(|row| {
                Ok(PartialRecord {
                    record: record_from_row(row)?,
                    attribute_count: None,
                })
            })
            .transpose()
        })
        .await
    }

    async fn create(
        &self,
        key: &StoreKey,
        record: &Record,
        limit: Option<&SessionLimit>,
    ) -> Result<Created, StoreError> {
        let op = Operation::Create;
        self.bounded(op, async {
            let db = |e| from_sqlx(op, e);
            let attempt = || self.try_create(key, record, limit);
            match attempt().await.map_err(db)? {
                1 => return Ok(Created::Stored),
                2 => return Ok(Created::LimitReached),
                _ => {}
            }
            // The key is held. If only by an expired session the cleanup
            // task has not reached, free it and try once more.
            let freed = sqlx::query(&self.inner.sql.delete_expired_key)
                .bind(key.as_str())
                .execute(self.pool())
                .await
                .map_err(db)?
                .rows_affected();
            if freed > 0 {
                match attempt().await.map_err(db)? {
                    1 => return Ok(Created::Stored),
                    2 => return Ok(Created::LimitReached),
                    _ => {}
                }
            }
            Ok(Created::KeyTaken)
        })
        .await
    }

    async fn apply(&self, key: &StoreKey, changes: &ChangeSet) -> Result<Applied, StoreError> {
        let op = Operation::Apply;
        self.bounded(op, async {
            let state = match self.apply_statement(changes) {
                (_, None) => self.apply_plain(key, changes).await?,
                (statement, bind) => group::apply_query(statement, key, changes, bind)
                    .fetch_one(self.pool())
                    .await
                    .map_err(|e| from_sqlx(op, e))?,
            };
            Ok(principals::applied(state))
        })
        .await
    }

    async fn compare_and_set(
        &self,
        key: &StoreKey,
        verifier: &VerifierHash,
        name: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<Swap, StoreError> {
        let op = Operation::CompareAndSet;
        self.bounded(op, async {
            let db = |e| from_sqlx(op, e);
            let mut attempt = 0;
            loop {
                attempt += 1;
                let current = match self.try_swap(key, verifier, name, expected, new).await {
                    Ok(Some(Attempt { swapped: true, .. })) => return Ok(Swap::Swapped),
                    Ok(Some(Attempt { current, .. })) => current,
                    Ok(None) => return Ok(Swap::Gone),
                    // The session was deleted between the insert's check
                    // and its foreign key check.
                    Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                        return Ok(Swap::Gone);
                    }
                    Err(e) => return Err(db(e)),
                };
                if current.as_deref() != expected {
                    return Ok(Swap::Mismatch { current });
                }
                if expected.is_none() && new.is_none() {
                    return Ok(Swap::Swapped);
                }
                // The expected value is back, or was never gone as far as
                // this statement could see (another request changed it and
                // changed it back, an insert that held the name rolled back,
                // or a row was inserted after the statement's snapshot): the
                // swap may win now.
                if attempt >= CAS_ATTEMPTS {
                    return Ok(Swap::Mismatch { current });
                }
            }
        })
        .await
    }

    async fn delete(&self, key: &StoreKey, verifier: &VerifierHash) -> Result<(), StoreError> {
        let op = Operation::Delete;
        self.bounded(op, async {
            sqlx::query(&self.inner.sql.delete)
                .bind(key.as_str())
                .bind(verifier.as_bytes().as_slice())
                .execute(self.pool())
                .await
                .map(drop)
                .map_err(|e| from_sqlx(op, e))
        })
        .await
    }

    async fn health(&self) -> StoreHealth {
        let op = Operation::Health;
        StoreHealth::measure(
            BACKEND,
            self.bounded(op, async {
                let (exists, estimate): (bool, Option<i64>) =
                    sqlx::query_as(&self.inner.sql.health)
                        .bind(format!("{}.sessions", self.schema()))
                        .fetch_one(self.pool())
                        .await
                        .map_err(|e| from_sqlx(op, e))?;
                if !exists {
                    return Err(StoreError::new(
                        BACKEND,
                        op,
                        StoreErrorKind::Config,
                        "the sessions table does not exist: call PostgresStore::migrate",
                    ));
                }
                Ok(estimate.and_then(|n| u64::try_from(n).ok()))
            }),
        )
        .await
    }
    fn supports_principals(&self) -> bool {
        true
    }

    async fn principal_sessions(
        &self,
        principal: &Principal,
    ) -> Result<Vec<PrincipalSession>, StoreError> {
        self.bounded(Operation::ListPrincipal, self.list_principal(principal))
            .await
    }

    async fn revoke(
        &self,
        principal: &Principal,
        which: Revocation<'_>,
    ) -> Result<u64, StoreError> {
        self.bounded(Operation::Revoke, self.revoke_principal(principal, which))
            .await
    }
}
