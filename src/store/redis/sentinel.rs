//! Redis Sentinel: the store talks to the primary the sentinels name, and
//! follows it when they promote a replica.
//!
//! The `redis` crate's [`SentinelClient`] asks the sentinels for the
//! primary of a name and checks with `ROLE` that the node it names is a
//! primary, but a connection it hands out stays on that node forever. The
//! [`SentinelConnection`] here keeps one [`ConnectionManager`] to the
//! current primary and replaces it when a command shows that the primary is
//! gone or demoted: a dropped or refused connection, no answer within the
//! command timeout, or a `READONLY` or `MASTERDOWN` reply. The replacement
//! is found in the background, one search at a time, in a bounded round of
//! attempts with exponential backoff and jitter; the command that showed the
//! failure fails as unavailable (503 with `Retry-After` at the layer), and
//! the commands after the new primary is found reach it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use ::redis::{
    Cmd, ErrorKind, Pipeline, RedisConnectionInfo, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, Value,
};

use super::builder::{Nodes, RedisStoreBuilder};
use super::{BACKEND, Problem, RedisStore, config_error};
use crate::store::{Operation, StoreError, StoreErrorKind};

/// Attempts in one round of searching for the new primary. With the
/// backoff between them a round lasts about three seconds, longer than a
/// typical promotion; a failed round ends, and the next failing command
/// starts another.
const FOLLOW_ATTEMPTS: u32 = 16;
/// The shortest wait between two attempts.
const FOLLOW_MIN_DELAY: Duration = Duration::from_millis(25);
/// The longest wait between two attempts: the sentinels answer cheaply,
/// and the sooner the new primary is found the fewer requests fail.
const FOLLOW_MAX_DELAY: Duration = Duration::from_millis(250);

/// Reconnection attempts of the connection to one primary.
const PRIMARY_RECONNECTS: usize = 1;

/// Where the sentinels are, which primary they watch, and how to log in
/// to the primary and its replicas.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) urls: Vec<String>,
    pub(super) primary: String,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
}

impl RedisStore {
    /// A builder for a store on the primary that the Redis Sentinels at
    /// `sentinel_urls` watch under the name `primary_name`.
    ///
    /// The store asks the sentinels for the primary, checks with `ROLE`
    /// that it is one, and follows a failover by itself: when a command
    /// finds the primary gone or demoted, it fails as
    /// [unavailable](StoreErrorKind::Unavailable) and the store asks the
    /// sentinels again in the background, so later requests reach the
    /// promoted replica without a restart. The sentinel URLs carry the
    /// sentinels' own password, if any; give the primary's with
    /// [`with_primary_credentials`](RedisStoreBuilder::with_primary_credentials).
    /// The store uses the primary's database 0.
    ///
    /// The search runs when a command fails, so an idle app learns of a
    /// failover from its next request, which fails as unavailable. Keep
    /// [`with_replica_acknowledgement`](RedisStoreBuilder::with_replica_acknowledgement)
    /// in mind: Redis replicates asynchronously, and without it the new
    /// primary may lack the last writes the old one acknowledged.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tower_httpsession::store::redis::RedisStore;
    ///
    /// # async fn run() -> Result<(), tower_httpsession::StoreError> {
    /// let store = RedisStore::builder_for_sentinel(
    ///     ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
    ///     "sessions",
    /// )
    /// .with_primary_credentials(None, "primary-password")
    /// .with_replica_acknowledgement(1, Duration::from_millis(100))
    /// .connect()
    /// .await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder_for_sentinel<I, S>(sentinel_urls: I, primary_name: &str) -> RedisStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        RedisStoreBuilder::new(Nodes::Sentinel(Target {
            urls: sentinel_urls
                .into_iter()
                .map(|u| u.as_ref().to_owned())
                .collect(),
            primary: primary_name.to_owned(),
            username: None,
            password: None,
        }))
    }
}

impl RedisStoreBuilder {
    /// The user name (`None` for the default user) and password the store
    /// logs in to the primary with, on a store built by
    /// [`RedisStore::builder_for_sentinel`]. Default: none, for a primary
    /// without a password. Ignored by the other topologies, whose URLs
    /// carry their password.
    pub fn with_primary_credentials(
        mut self,
        username: Option<&str>,
        password: impl Into<String>,
    ) -> Self {
        if let Nodes::Sentinel(target) = &mut self.nodes {
            target.username = username.map(str::to_owned);
            target.password = Some(password.into());
        }
        self
    }
}

/// The connection to the primary the sentinels name. Clones share it.
#[derive(Clone)]
pub(super) struct SentinelConnection {
    shared: Arc<Shared>,
}

struct Shared {
    /// Used by one search at a time.
    sentinels: tokio::sync::Mutex<SentinelClient>,
    current: RwLock<Current>,
    /// Whether a search for the primary runs.
    following: AtomicBool,
    manager_config: ConnectionManagerConfig,
    command_timeout: Duration,
}

#[derive(Clone)]
struct Current {
    manager: ConnectionManager,
    /// Counts the primaries found, so that failures seen on an old one do
    /// not start a search once a newer one is in place.
    generation: u64,
}

impl SentinelConnection {
    /// Asks the sentinels for the primary and connects to it, within
    /// `connect_timeout`. Returns the connection and the sentinels as
    /// `host:port`.
    pub(super) async fn connect(
        target: &Target,
        manager_config: ConnectionManagerConfig,
        command_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<(Self, Vec<String>), StoreError> {
        // A lost primary is looked for through the sentinels rather than
        // reconnected to: commands on a dead one fail at once instead of
        // waiting out reconnection attempts.
        let manager_config = manager_config.set_number_of_retries(PRIMARY_RECONNECTS);
        let (mut client, nodes) = sentinel_client(target)?;
        let found =
            tokio::time::timeout(connect_timeout, find_primary(&mut client, &manager_config)).await;
        let manager = match found {
            Ok(Ok(manager)) => manager,
            Ok(Err(error)) => return Err(explain(&mut client, target, error).await),
            Err(_) => {
                return Err(StoreError::new(
                    BACKEND,
                    Operation::Connect,
                    StoreErrorKind::Unavailable,
                    Problem::NoAnswer(connect_timeout),
                ));
            }
        };
        let shared = Shared {
            sentinels: tokio::sync::Mutex::new(client),
            current: RwLock::new(Current {
                manager,
                generation: 0,
            }),
            following: AtomicBool::new(false),
            manager_config,
            command_timeout,
        };
        Ok((
            Self {
                shared: Arc::new(shared),
            },
            nodes,
        ))
    }

    fn current(&self) -> Current {
        self.shared
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Bounds `request` by the command timeout, and starts a search for a
    /// new primary if its outcome says the one of `generation` is gone.
    async fn bounded<T>(
        &self,
        generation: u64,
        request: impl Future<Output = RedisResult<T>>,
    ) -> RedisResult<T> {
        let outcome = tokio::time::timeout(self.shared.command_timeout, request)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()));
        if outcome.as_ref().is_err_and(primary_may_be_gone) {
            follow(&self.shared, generation);
        }
        outcome
    }
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let Current {
                mut manager,
                generation,
            } = self.current();
            self.bounded(generation, manager.req_packed_command(cmd))
                .await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let Current {
                mut manager,
                generation,
            } = self.current();
            let request = manager.req_packed_commands(pipeline, offset, count);
            self.bounded(generation, request).await
        })
    }

    fn get_db(&self) -> i64 {
        self.current().manager.get_db()
    }
}

/// Whether `error` means the node may no longer be the reachable primary.
fn primary_may_be_gone(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(
            error.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

/// Starts a search for the primary in the background unless one runs or a
/// newer primary than `generation` is already in place.
fn follow(shared: &Arc<Shared>, generation: u64) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if shared.following.swap(true, Ordering::AcqRel) {
        return;
    }
    let shared = Arc::clone(shared);
    runtime.spawn(async move {
        let stale = shared
            .current
            .read()
            .map_or(true, |current| current.generation == generation);
        if stale {
            search(&shared).await;
        }
        shared.following.store(false, Ordering::Release);
    });
}

/// One bounded round of attempts to find the primary; the first success
/// replaces the connection.
async fn search(shared: &Shared) {
    for attempt in 0..FOLLOW_ATTEMPTS {
        let found = {
            let mut sentinels = shared.sentinels.lock().await;
            let finding = find_primary(&mut sentinels, &shared.manager_config);
            tokio::time::timeout(shared.command_timeout * 2, finding).await
        };
        match found {
            Ok(Ok(manager)) => {
                let mut current = shared
                    .current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                let generation = current.generation.wrapping_add(1);
                *current = Current {
                    manager,
                    generation,
                };
                tracing::info!(
                    backend = BACKEND,
                    attempt,
                    "connected to the primary the sentinels name"
                );
                return;
            }
            Ok(Err(error)) => {
                tracing::debug!(backend = BACKEND, attempt, error = ?error.kind(), "no primary yet");
            }
            Err(_) => tracing::debug!(backend = BACKEND, attempt, "no answer from the sentinels"),
        }
        tokio::time::sleep(backoff(attempt)).await;
    }
    tracing::warn!(
        backend = BACKEND,
        attempts = FOLLOW_ATTEMPTS,
        "the sentinels named no reachable primary; searching again on the next failure"
    );
}

/// The wait after failed attempt `attempt`: exponential from
/// [`FOLLOW_MIN_DELAY`] to [`FOLLOW_MAX_DELAY`], the upper half of it
/// random, so that many app instances do not ask the sentinels in step.
fn backoff(attempt: u32) -> Duration {
    let full = FOLLOW_MIN_DELAY
        .saturating_mul(1_u32 << attempt.min(16))
        .min(FOLLOW_MAX_DELAY);
    let half = full / 2;
    let span = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
    let random = getrandom::u64().unwrap_or(0) % span;
    half + Duration::from_micros(random)
}

/// Asks the sentinels for the primary (the `redis` crate checks its role)
/// and connects to it.
async fn find_primary(
    client: &mut SentinelClient,
    config: &ConnectionManagerConfig,
) -> RedisResult<ConnectionManager> {
    let primary = client.async_get_client().await?;
    ConnectionManager::new_with_config(primary, config.clone()).await
}

/// The `redis` crate's sentinel client, and the sentinels as `host:port`.
fn sentinel_client(target: &Target) -> Result<(SentinelClient, Vec<String>), StoreError> {
    if target.urls.is_empty() {
        return Err(config_error("Sentinel needs at least one sentinel URL"));
    }
    if target.primary.is_empty() {
        return Err(config_error("Sentinel needs the name of the primary"));
    }
    let mut infos = Vec::new();
    let mut nodes = Vec::new();
    for url in &target.urls {
        let info = ::redis::IntoConnectionInfo::into_connection_info(url.as_str())
            .map_err(|e| StoreError::new(BACKEND, Operation::Connect, StoreErrorKind::Config, e))?;
        nodes.push(info.addr().to_string());
        infos.push(info);
    }
    let mut login = RedisConnectionInfo::default();
    if let Some(username) = &target.username {
        login = login.set_username(username);
    }
    if let Some(password) = &target.password {
        login = login.set_password(password);
    }
    let node_info = SentinelNodeConnectionInfo::default().set_redis_connection_info(login);
    let client = SentinelClient::build(
        infos,
        target.primary.clone(),
        Some(node_info),
        SentinelServerType::Master,
    )
    .map_err(|e| StoreError::new(BACKEND, Operation::Connect, StoreErrorKind::Config, e))?;
    Ok((client, nodes))
}

/// Why the first search for the primary failed, in words.
async fn explain(client: &mut SentinelClient, target: &Target, error: RedisError) -> StoreError {
    let connect = |kind, problem| StoreError::new(BACKEND, Operation::Connect, kind, problem);
    if matches!(
        error.kind(),
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig
    ) {
        return connect(StoreErrorKind::Config, Problem::Refused(error));
    }
    let Ok(sentinel) = client.async_get_sentinel_client().await else {
        return connect(StoreErrorKind::Unavailable, Problem::NoSentinel(error));
    };
    if error.kind() != ErrorKind::MasterNameNotFoundBySentinel {
        return connect(StoreErrorKind::Unavailable, Problem::PrimaryDown(error));
    }
    // The crate says the same whether the name is unknown or its primary
    // is down; the sentinel tells them apart.
    let address: RedisResult<Option<(String, u16)>> = async {
        let mut connection = sentinel.get_multiplexed_async_connection().await?;
        ::redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&target.primary)
            .query_async(&mut connection)
            .await
    }
    .await;
    match address {
        Ok(None) => connect(
            StoreErrorKind::Config,
            Problem::UnknownPrimary(target.primary.clone()),
        ),
        _ => connect(StoreErrorKind::Unavailable, Problem::PrimaryDown(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_maximum_with_jitter() {
        for attempt in 0..20 {
            let wait = backoff(attempt);
            let full = FOLLOW_MIN_DELAY
                .saturating_mul(1 << attempt.min(16))
                .min(FOLLOW_MAX_DELAY);
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
        let waits: std::collections::HashSet<Duration> = (0..20).map(|_| backoff(5)).collect();
        assert!(waits.len() > 1, "no jitter");
    }

    #[tokio::test]
    async fn sentinel_settings_are_checked() {
        let none = RedisStore::builder_for_sentinel(Vec::<String>::new(), "sessions");
        let nameless = RedisStore::builder_for_sentinel(["redis://127.0.0.1:1"], "");
        let malformed = RedisStore::builder_for_sentinel(["not a url"], "sessions");
        for builder in [none, nameless, malformed] {
            let error = builder.connect().await.unwrap_err();
            assert_eq!(error.kind(), StoreErrorKind::Config);
        }
    }

    #[test]
    fn debug_hides_the_primary_password() {
        let builder = RedisStore::builder_for_sentinel(["redis://:s3cret@10.0.0.1:26379"], "x")
            .with_primary_credentials(Some("app"), "hunter2");
        let printed = format!("{builder:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("sentinel"), "{printed}");
    }
}
