//! Redis store: one hash per session, on a single node or a Redis Cluster.
//!
//! Each session is one hash under the key `<prefix>{<store key>}`: the
//! braces are a hash tag, so everything about one session sits in one
//! cluster slot and every write is a single-key script. Metadata fields and
//! attribute fields live in separate namespaces (`m:` and `a:`), so an
//! attribute name can never overwrite metadata. A value a little longer than
//! the server's `hash-max-listpack-value` is stored in two fields (the rest
//! under `b:`) so that the hash stays in Redis's compact encoding; see
//! [`RedisStoreBuilder::with_split_values`].
//!
//! - [`load`](SessionStore::load) is one `HGETALL`;
//!   [`load_some`](SessionStore::load_some) is one `HMGET` of the metadata
//!   fields and the named attribute fields (each with its rest), so a request that touches a few
//!   attributes of a large session reads only those bytes. It does not count
//!   the session's attributes (`attribute_count` is `None`): that would take
//!   a second command.
//! - [`create`](SessionStore::create), [`apply`](SessionStore::apply) and
//!   [`compare_and_set`](SessionStore::compare_and_set) are each one Lua
//!   script, atomic on the server, sent as `EVALSHA`: a request that sets one
//!   small attribute in a large session sends a couple of hundred bytes. The
//!   scripts check that the key exists before writing, so a session that
//!   expired or was invalidated meanwhile is never brought back.
//! - The key expires by itself at the session's expiry (`PEXPIREAT`), so
//!   Redis needs no cleanup task. Expiries are absolute times taken from the
//!   app's clock and applied by Redis's, so keep both in sync (NTP).
//! - [`delete`](SessionStore::delete) is `DEL`; [`health`](SessionStore::health)
//!   is `PING`. The store does not count sessions (that would take a `SCAN`).
//!
//! # Outages
//!
//! Every command is bounded by the command timeout (default 1 s). A refused
//! connection, a dropped one, or no answer in time is
//! [`StoreErrorKind::Unavailable`], which the layer turns into 503 with
//! `Retry-After`. The connection heals by itself: the single-node connection
//! reconnects in the background with exponential backoff and jitter, and the
//! cluster connection rediscovers its nodes, so when Redis is back the next
//! requests succeed without restarting the app.
//!
//! # Sentinel and failover
//!
//! [`RedisStore::builder_for_sentinel`] asks Redis Sentinels for the
//! primary and follows a failover without a restart (see
//! [`builder_for_sentinel`](RedisStore::builder_for_sentinel)); requests
//! during the failover fail as unavailable. Redis replicates
//! asynchronously, so a write the dead primary acknowledged may be missing
//! on the promoted replica;
//! [`with_replica_acknowledgement`](RedisStoreBuilder::with_replica_acknowledgement)
//! waits for replicas after each write, on any topology.
//!
//! # TLS
//!
//! With the feature `tls`, a `rediss://` URL connects over TLS, verifying
//! the server's certificate and that it names the URL's host, against the
//! platform's root certificates or the CA file of
//! `RedisStoreBuilder::with_tls_ca_file`;
//! `RedisStoreBuilder::with_tls_client_identity` adds a client certificate
//! (mutual TLS). A cluster uses the same settings for every node. The
//! `store::tls` module describes the errors.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use tower_httpsession::{Session, SessionError, SessionLayer};
//! use tower_httpsession::store::redis::RedisStore;
//!
//! async fn visit(session: Session) -> Result<String, SessionError> {
//!     let n = session.update("visits", |n: Option<u32>| n.unwrap_or(0) + 1).await?;
//!     Ok(n.to_string())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
//! let store = RedisStore::builder(&url)
//!     .with_key_prefix("shop:session:")
//!     .with_command_timeout(Duration::from_millis(500))
//!     .connect()
//!     .await?;
//! // Or, on a cluster:
//! // RedisStore::connect_cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]).await?
//!
//! let app: Router = Router::new()
//!     .route("/", get(visit))
//!     .layer(SessionLayer::new(store));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
#![doc = include_str!("principal_index.md")]

mod builder;
mod codec;
mod command;
mod connection;
mod encoding;
mod index_scripts;
mod index_ttl;
mod members;
mod principals;
mod replicas;
mod scripts;
mod sentinel;
mod tls;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::{ErrorKind, RedisError, ServerErrorKind, Value};
use async_trait::async_trait;

use super::{
    Applied, ChangeSet, Created, Operation, PartialRecord, Principal, PrincipalSession, Record,
    Revocation, SessionLimit, SessionStore, StoreError, StoreErrorKind, StoreHealth, StoreKey,
    Swap, VerifierHash,
};

pub use self::builder::RedisStoreBuilder;
use self::connection::Connection;

const BACKEND: &str = "redis";

/// The key prefix a store uses unless told otherwise.
pub const DEFAULT_KEY_PREFIX: &str = "httpsession:";
/// How long one command may take unless told otherwise.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the constructor waits for Redis unless told otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest key prefix accepted, in bytes.
const MAX_PREFIX_LEN: usize = 128;
/// The shortest wait between two reconnection attempts.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
/// The longest wait between two reconnection attempts.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);
/// Attempts in one reconnection round; a new round starts with the next
/// command after a round fails.
const RECONNECT_ATTEMPTS: usize = 6;
/// Retries of one cluster request (redirections, a node reconnecting).
const CLUSTER_RETRIES: u32 = 3;
/// How often the store sends a command again that a cluster node refused
/// with MOVED or ASK after the cluster client's own retries.
const REDIRECT_RETRIES: u32 = 5;
/// The pause before the first of those, growing by as much each time.
const REDIRECT_PAUSE: Duration = Duration::from_millis(5);

/// A session store on Redis or Redis Cluster. Clones share the connection.
///
/// Build one with [`RedisStore::connect`] or [`RedisStore::connect_cluster`],
/// or set it up first with [`RedisStore::builder`] or
/// [`RedisStore::builder_for_cluster`]. See the [module docs](self) for the layout
/// and the behaviour during outages.
///
/// `Debug` shows the nodes as `host:port` only (never a password) and never
/// a session key.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Connection,
    nodes: Vec<String>,
    key_prefix: String,
    command_timeout: Duration,
    replica_acks: Option<replicas::ReplicaAcks>,
    headroom: index_ttl::Headroom,
    /// The split length of the write scripts (see
    /// [`EXPAND`](scripts::EXPAND)): the server's `hash-max-listpack-value`
    /// once read, 0 when splitting is off.
    split: AtomicU64,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("topology", &self.inner.connection.topology())
            .field("nodes", &self.inner.nodes)
            .field("key_prefix", &self.inner.key_prefix)
            .field("command_timeout", &self.inner.command_timeout)
            .finish()
    }
}

/// Causes of failures that are not Redis errors.
#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    #[error("no TLS answer within {0:?}; check that the port serves TLS")]
    NoTlsAnswer(Duration),
    #[error("unexpected reply from a script")]
    UnexpectedReply,
    #[error("{0}")]
    Config(&'static str),
    #[error("Redis refused the connection's settings: check the password and user")]
    Refused(#[source] RedisError),
    #[error("no sentinel answered: check the sentinel URLs and that the sentinels run")]
    NoSentinel(#[source] RedisError),
    #[error("the sentinels name no reachable primary: wait for the failover, or check the primary")]
    PrimaryDown(#[source] RedisError),
    #[error("no sentinel knows a primary named {0:?}: check the name against `SENTINEL MASTERS`")]
    UnknownPrimary(String),
    #[error(
        "{acked} of {wanted} replicas acknowledged the write within {timeout:?}; the primary has it"
    )]
    TooFewReplicas {
        acked: i64,
        wanted: u32,
        timeout: Duration,
    },
}

impl RedisStore {
    /// Connects to a single Redis node with the default settings:
    /// [`builder`](Self::builder)`(url).connect()`.
    ///
    /// The URL takes the `redis` crate's forms: `redis://[user:password@]host:port[/db]`,
    /// `rediss://` for TLS (when the crate is built with TLS), or
    /// `redis+unix:///path`.
    ///
    /// # Errors
    ///
    /// As [`RedisStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// Connects to a Redis Cluster with the default settings:
    /// [`builder_for_cluster`](Self::builder_for_cluster)`(urls).connect()`.
    ///
    /// # Errors
    ///
    /// As [`RedisStoreBuilder::connect`].
    pub async fn connect_cluster<I, S>(urls: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::builder_for_cluster(urls).connect().await
    }

    /// A builder for a store on the single node at `url` (see
    /// [`connect`](Self::connect) for the forms it takes), to set the key
    /// prefix and timeouts before connecting.
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder::single(url)
    }

    /// A builder for a store on the Redis Cluster that any of `urls`
    /// belongs to.
    pub fn builder_for_cluster<I, S>(urls: I) -> RedisStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        RedisStoreBuilder::cluster(urls.into_iter().map(|u| u.as_ref().to_owned()).collect())
    }

    /// The prefix of every key this store writes.
    #[must_use]
    pub fn key_prefix(&self) -> &str {
        &self.inner.key_prefix
    }

    /// How long one command may take before it fails as unavailable.
    #[must_use]
    pub fn command_timeout(&self) -> Duration {
        self.inner.command_timeout
    }

    fn key(&self, key: &StoreKey) -> String {
        format!("{}{{{}}}", self.inner.key_prefix, key.as_str())
    }

    /// The split length the write scripts take (0: never split).
    fn split(&self) -> u64 {
        self.inner.split.load(Ordering::Relaxed)
    }
}

/// Maps a Redis error to a store error of the right kind.
fn redis_error(operation: Operation, error: RedisError) -> StoreError {
    let kind = match error.kind() {
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => StoreErrorKind::Unavailable,
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
        ) => StoreErrorKind::Unavailable,
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig => StoreErrorKind::Config,
        _ if error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_timeout() =>
        {
            StoreErrorKind::Unavailable
        }
        _ if error.code() == Some("WRONGTYPE") => StoreErrorKind::Corrupt,
        _ => StoreErrorKind::Backend,
    };
    StoreError::new(BACKEND, operation, kind, error)
}

fn unexpected(operation: Operation) -> StoreError {
    StoreError::new(
        BACKEND,
        operation,
        StoreErrorKind::Backend,
        Problem::UnexpectedReply,
    )
}

fn config_error(message: &'static str) -> StoreError {
    StoreError::new(
        BACKEND,
        Operation::Connect,
        StoreErrorKind::Config,
        Problem::Config(message),
    )
}

#[async_trait]
impl SessionStore for RedisStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        let command = &::redis::cmd("HGETALL").arg(self.key(key)).to_owned();
        let reply = self
            .run(Operation::Load, |mut c| async move {
                command.query_async(&mut c).await
            })
            .await?;
        codec::decode(reply).map_err(|malformed| {
            StoreError::new(BACKEND, Operation::Load, StoreErrorKind::Corrupt, malformed)
        })
    }

    async fn load_some(
        &self,
        key: &StoreKey,
        names: &[&str],
    ) -> Result<Option<PartialRecord>, StoreError> {
        let command = &::redis::cmd("HMGET")
            .arg(self.key(key))
            .arg(codec::load_some_fields(names))
            .to_owned();
        let reply = self
            .run(Operation::Load, |mut c| async move {
                command.query_async(&mut c).await
            })
            .await?;
        let record = codec::decode_some(reply, names).map_err(|malformed| {
            StoreError::new(BACKEND, Operation::Load, StoreErrorKind::Corrupt, malformed)
        })?;
        Ok(record.map(|record| PartialRecord {
            record,
            attribute_count: None,
        }))
    }

    async fn create(
        &self,
        key: &StoreKey,
        record: &Record,
        limit: Option<&SessionLimit>,
    ) -> Result<Created, StoreError> {
        if let Some(principal) = &record.principal {
            return self.create_bound(key, record, principal, limit).await;
        }
        let args = codec::create_args(record, self.split());
        match self
            .invoke(Operation::Create, &scripts::CREATE, key, &args)
            .await?
        {
            Value::Int(1) => Ok(Created::Stored),
            Value::Int(0) => Ok(Created::KeyTaken),
            _ => Err(unexpected(Operation::Create)),
        }
    }

    async fn apply(&self, key: &StoreKey, changes: &ChangeSet) -> Result<Applied, StoreError> {
        if let Some(binding) = changes.binding() {
            return self
                .apply_bound(key, changes, &binding.principal, binding.limit.as_ref())
                .await;
        }
        let args = codec::apply_args(changes, self.split());
        match self
            .invoke(Operation::Apply, &scripts::APPLY, key, &args)
            .await?
        {
            Value::Int(1) => Ok(Applied::Written),
            Value::Int(2) => Ok(Applied::TooManyAttributes),
            Value::Int(0) => Ok(Applied::Gone),
            Value::Int(3) => Ok(Applied::Stale),
            Value::Array(items) => self.follow_touch(&items).await,
            _ => Err(unexpected(Operation::Apply)),
        }
    }

    async fn compare_and_set(
        &self,
        key: &StoreKey,
        verifier: &VerifierHash,
        name: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<Swap, StoreError> {
        let args = [
            codec::attribute_field(name),
            scripts::tagged(expected),
            scripts::tagged(new),
            verifier.as_bytes().to_vec(),
            self.split().to_string().into_bytes(),
        ];
        let reply = self
            .invoke(
                Operation::CompareAndSet,
                &scripts::COMPARE_AND_SET,
                key,
                &args,
            )
            .await?;
        let Value::Array(items) = reply else {
            return Err(unexpected(Operation::CompareAndSet));
        };
        match items.as_slice() {
            [Value::Int(0)] => Ok(Swap::Gone),
            [Value::Int(1)] => Ok(Swap::Swapped),
            [Value::Int(2)] => Ok(Swap::Mismatch { current: None }),
            [Value::Int(2), Value::BulkString(current)] => {
                let current = String::from_utf8(current.clone()).map_err(|e| {
                    StoreError::new(
                        BACKEND,
                        Operation::CompareAndSet,
                        StoreErrorKind::Corrupt,
                        e,
                    )
                })?;
                Ok(Swap::Mismatch {
                    current: Some(current),
                })
            }
            _ => Err(unexpected(Operation::CompareAndSet)),
        }
    }

    async fn delete(&self, key: &StoreKey, verifier: &VerifierHash) -> Result<(), StoreError> {
        let args = [verifier.as_bytes().to_vec()];
        match self
            .invoke(Operation::Delete, &scripts::DELETE, key, &args)
            .await?
        {
            Value::Int(_) => Ok(()),
            Value::BulkString(principal) => self.forget(&principal, key).await,
            _ => Err(unexpected(Operation::Delete)),
        }
    }

    async fn health(&self) -> StoreHealth {
        StoreHealth::measure(BACKEND, async {
            let command = &::redis::cmd("PING");
            self.run::<Value, _, _>(Operation::Health, |mut c| async move {
                command.query_async(&mut c).await
            })
            .await?;
            Ok(None)
        })
        .await
    }

    fn supports_principals(&self) -> bool {
        true
    }

    async fn principal_sessions(
        &self,
        principal: &Principal,
    ) -> Result<Vec<PrincipalSession>, StoreError> {
        self.list(principal).await
    }

    async fn revoke(
        &self,
        principal: &Principal,
        which: Revocation<'_>,
    ) -> Result<u64, StoreError> {
        self.revoke_sessions(principal, which).await
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn debug_hides_the_password() {
        let store = RedisStore::builder("redis://user:hunter2@127.0.0.1:6379/0")
            .connect_lazy()
            .unwrap();
        let printed = format!("{store:?}");
        assert!(printed.contains("127.0.0.1:6379"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("user"), "{printed}");
    }

    #[test]
    fn keys_carry_the_hash_tag() {
        let key = crate::store::StoreKey::random().unwrap();
        let expected = format!("httpsession:{{{}}}", key.as_str());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = rt.block_on(async {
            RedisStore::builder("redis://127.0.0.1:1")
                .connect_lazy()
                .unwrap()
        });
        assert_eq!(store.key(&key), expected);
    }
}
