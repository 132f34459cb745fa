//! [`RedisStoreBuilder`]: the settings of a [`RedisStore`], then the
//! connection.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::{Client, IntoConnectionInfo, RedisError};

use super::encoding::DEFAULT_LISTPACK_VALUE;
use super::replicas::ReplicaAcks;
use super::sentinel::{SentinelConnection, Target};
use super::{
    BACKEND, CLUSTER_RETRIES, Connection, DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_KEY_PREFIX, Inner, MAX_PREFIX_LEN, RECONNECT_ATTEMPTS, RECONNECT_MAX_DELAY,
    RECONNECT_MIN_DELAY, RedisStore, config_error, redis_error,
};
use crate::store::{Operation, StoreError, StoreErrorKind};

/// Settings for a [`RedisStore`] on a single node
/// ([`RedisStore::builder`]), a cluster
/// ([`RedisStore::builder_for_cluster`]) or the primary that Redis
/// Sentinels name ([`RedisStore::builder_for_sentinel`]), then the
/// connection.
///
/// Every setter documents its default. The settings and the URLs are
/// checked by [`connect`](Self::connect) and
/// [`connect_lazy`](Self::connect_lazy).
///
/// ```no_run
/// use std::time::Duration;
/// use tower_httpsession::store::redis::RedisStore;
///
/// # async fn run() -> Result<(), tower_httpsession::StoreError> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379")
///     .with_key_prefix("myapp:session:")
///     .with_command_timeout(Duration::from_millis(250))
///     .with_connect_timeout(Duration::from_secs(2))
///     .connect()
///     .await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
///
/// `Debug` never prints the URLs, which may hold a password.
#[derive(Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    pub(super) nodes: Nodes,
    key_prefix: String,
    command_timeout: Duration,
    pub(super) connect_timeout: Duration,
    #[cfg(feature = "tls")]
    pub(super) tls: super::tls::TlsSettings,
    pub(super) replica_acks: Option<ReplicaAcks>,
    split_values: bool,
}

/// Where the store connects.
#[derive(Clone)]
pub(super) enum Nodes {
    Single(String),
    Cluster(Vec<String>),
    Sentinel(Target),
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topology = match &self.nodes {
            Nodes::Single(_) => "single node",
            Nodes::Cluster(_) => "cluster",
            Nodes::Sentinel(_) => "sentinel",
        };
        let mut f = f.debug_struct("RedisStoreBuilder");
        f.field("topology", &topology)
            .field("urls", &"<redacted>")
            .field("key_prefix", &self.key_prefix)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("replica_acks", &self.replica_acks)
            .field("split_values", &self.split_values);
        #[cfg(feature = "tls")]
        f.field("tls", &self.tls);
        f.finish()
    }
}

impl RedisStoreBuilder {
    pub(super) fn new(nodes: Nodes) -> Self {
        Self {
            nodes,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            #[cfg(feature = "tls")]
            tls: super::tls::TlsSettings::default(),
            replica_acks: None,
            split_values: true,
        }
    }

    /// The URLs the builder connects to.
    pub(super) fn urls(&self) -> impl Iterator<Item = &str> {
        match &self.nodes {
            Nodes::Single(url) => std::slice::from_ref(url).iter(),
            Nodes::Cluster(urls) => urls.iter(),
            Nodes::Sentinel(target) => target.urls.iter(),
        }
        .map(String::as_str)
    }

    pub(super) fn single(url: &str) -> Self {
        Self::new(Nodes::Single(url.to_owned()))
    }

    pub(super) fn cluster(urls: Vec<String>) -> Self {
        Self::new(Nodes::Cluster(urls))
    }

    /// The prefix of every key. Default: [`DEFAULT_KEY_PREFIX`]
    /// (`httpsession:`).
    ///
    /// Give each app that shares a Redis its own prefix. The prefix may not
    /// hold `{` or `}`, which would change the key's hash tag, and may be at
    /// most 128 bytes.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// How long one command may take, including waiting for a connection,
    /// before it fails as [unavailable](StoreErrorKind::Unavailable).
    /// Default: [`DEFAULT_COMMAND_TIMEOUT`] (1 s).
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long [`connect`](Self::connect) waits for Redis before giving
    /// up. Default: [`DEFAULT_CONNECT_TIMEOUT`] (5 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether a value a little longer than the server's
    /// `hash-max-listpack-value` is stored in two fields, so that the
    /// session's hash stays in Redis's compact encoding. Default: on.
    ///
    /// Redis keeps a hash as a listpack, a few bytes of framing per field,
    /// only while every value is at most `hash-max-listpack-value` bytes (64
    /// by default); one longer value makes it a hashtable, some 60 bytes more
    /// per field. With this on, an attribute value (as serde_json text) of
    /// up to twice the setting is stored as two fields, and read back as
    /// one: a session of 20 values of 100 bytes takes about what
    /// tower-sessions' whole-record string takes, where a hashtable takes
    /// about 1.4 times as much. The store reads the setting when it
    /// connects ([`connect_lazy`](Self::connect_lazy) assumes Redis's
    /// default, 64). Nothing is split in a hash that is a hashtable already.
    ///
    /// Every version of the store that knows this reads both forms,
    /// whatever this setting. Versions before it read a session holding a
    /// split value as corrupt: when a rolling deploy replaces such a
    /// version, turn this off until no instance of it is left.
    ///
    /// ```
    /// use tower_httpsession::store::redis::RedisStore;
    ///
    /// let builder = RedisStore::builder("redis://127.0.0.1:6379").with_split_values(false);
    /// # let _ = builder;
    /// ```
    pub fn with_split_values(mut self, enabled: bool) -> Self {
        self.split_values = enabled;
        self
    }

    fn validate(&self) -> Result<(), StoreError> {
        if self.key_prefix.contains(['{', '}']) {
            return Err(config_error("the key prefix may not contain '{' or '}'"));
        }
        if self.key_prefix.len() > MAX_PREFIX_LEN {
            return Err(config_error("the key prefix is longer than 128 bytes"));
        }
        if self.command_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(config_error("timeouts must be longer than zero"));
        }
        if let Some(acks) = self.replica_acks {
            acks.validate(self.command_timeout)?;
        }
        if matches!(self.nodes, Nodes::Sentinel(_))
            && self.urls().any(|url| url.starts_with("rediss://"))
        {
            return Err(StoreError::new(
                BACKEND,
                Operation::Connect,
                StoreErrorKind::Config,
                "TLS to Redis Sentinel is not supported yet: use redis:// sentinel URLs",
            ));
        }
        #[cfg(feature = "tls")]
        if matches!(self.nodes, Nodes::Sentinel(_)) && self.tls.is_set() {
            return Err(StoreError::new(
                BACKEND,
                Operation::Connect,
                StoreErrorKind::Config,
                "TLS files are not supported with Redis Sentinel yet",
            ));
        }
        self.check_tls(self.urls())
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.command_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY)
            .set_number_of_retries(RECONNECT_ATTEMPTS)
    }

    fn single_client(&self, url: &str) -> Result<(Client, Vec<String>), StoreError> {
        let client = self.client_for(url)?;
        let node = client.get_connection_info().addr().to_string();
        Ok((client, vec![node]))
    }

    fn store(self, connection: Connection, nodes: Vec<String>) -> RedisStore {
        RedisStore {
            inner: Arc::new(Inner {
                connection,
                nodes,
                key_prefix: self.key_prefix,
                command_timeout: self.command_timeout,
                replica_acks: self.replica_acks,
                headroom: Default::default(),
                split: AtomicU64::new(if self.split_values {
                    DEFAULT_LISTPACK_VALUE
                } else {
                    0
                }),
            }),
        }
    }

    pub(super) async fn within_connect_timeout<T>(
        &self,
        connecting: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(self.connect_failed(error)),
            Err(_) => Err(StoreError::new(
                BACKEND,
                Operation::Connect,
                StoreErrorKind::Unavailable,
                self.no_answer(),
            )),
        }
    }

    /// Connects and waits until Redis answers: a single node, or a cluster
    /// discovered from any of its nodes (all must share one password).
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::Config`] for a malformed URL, a cluster or
    /// Sentinel without a URL, a primary name no sentinel knows, a refused
    /// password, or a bad setting; [`StoreErrorKind::Unavailable`] if Redis
    /// (or no sentinel, or the primary they name) does not answer within the
    /// connect timeout. Over TLS (feature `tls`),
    /// [`StoreErrorKind::Config`] caused by a
    /// [`TlsError`](crate::store::tls::TlsError) for a TLS file that cannot
    /// be read, a server certificate that does not verify, a client
    /// certificate the server refuses or a port that does not speak TLS.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        self.validate()?;
        self.check_handshake().await?;
        let split_values = self.split_values;
        let store = match &self.nodes {
            Nodes::Single(url) => {
                let (client, nodes) = self.single_client(url)?;
                let manager = self
                    .within_connect_timeout(ConnectionManager::new_with_config(
                        client,
                        self.manager_config(),
                    ))
                    .await?;
                self.store(Connection::Single(manager), nodes)
            }
            Nodes::Cluster(urls) => {
                let (client, nodes) = self.cluster_client(urls)?;
                let connection = self
                    .within_connect_timeout(client.get_async_connection())
                    .await?;
                self.store(Connection::Cluster(connection), nodes)
            }
            Nodes::Sentinel(target) => {
                let (connection, nodes) = SentinelConnection::connect(
                    target,
                    self.manager_config(),
                    self.command_timeout,
                    self.connect_timeout,
                )
                .await?;
                self.store(Connection::Sentinel(connection), nodes)
            }
        };
        store.learn_hash_encoding(split_values).await;
        Ok(store)
    }

    /// Builds the store on a single node without waiting for it: the
    /// connection is made by the first command, and until Redis answers,
    /// commands fail as [unavailable](StoreErrorKind::Unavailable). For apps
    /// that must start (and report themselves down on their health endpoint)
    /// while Redis is not up yet.
    ///
    /// Must be called within a Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::Config`] for a malformed URL or a bad setting, and
    /// for a cluster, which learns its nodes when it connects.
    pub fn connect_lazy(self) -> Result<RedisStore, StoreError> {
        self.validate()?;
        let Nodes::Single(url) = &self.nodes else {
            return Err(config_error(
                "a Redis Cluster or Sentinel names its nodes when it connects: use connect",
            ));
        };
        let (client, nodes) = self.single_client(url)?;
        let manager = ConnectionManager::new_lazy_with_config(client, self.manager_config())
            .map_err(|e| redis_error(Operation::Connect, e))?;
        Ok(self.store(Connection::Single(manager), nodes))
    }

    /// The client of a cluster, and its nodes as `host:port`.
    fn cluster_client(&self, urls: &[String]) -> Result<(ClusterClient, Vec<String>), StoreError> {
        let mut infos = Vec::new();
        let mut nodes = Vec::new();
        for url in urls {
            let info = url.as_str().into_connection_info().map_err(|e| {
                StoreError::new(BACKEND, Operation::Connect, StoreErrorKind::Config, e)
            })?;
            nodes.push(info.addr().to_string());
            infos.push(info);
        }
        if infos.is_empty() {
            return Err(config_error("a cluster needs at least one node URL"));
        }
        let client = self
            .with_cluster_tls(ClusterClientBuilder::new(infos))?
            .connection_timeout(self.command_timeout)
            .response_timeout(self.command_timeout)
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(u64::try_from(RECONNECT_MIN_DELAY.as_millis()).unwrap_or(u64::MAX))
            .max_retry_wait(u64::try_from(RECONNECT_MAX_DELAY.as_millis()).unwrap_or(u64::MAX))
            .build()
            .map_err(|e| StoreError::new(BACKEND, Operation::Connect, StoreErrorKind::Config, e))?;
        Ok((client, nodes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_prefixes_and_timeouts_are_config_errors() {
        let url = "redis://127.0.0.1:1";
        for builder in [
            RedisStore::builder(url).with_key_prefix("a{b}:"),
            RedisStore::builder(url).with_key_prefix("x".repeat(129)),
            RedisStore::builder(url).with_command_timeout(Duration::ZERO),
        ] {
            let error = builder.connect_lazy().unwrap_err();
            assert_eq!(error.kind(), StoreErrorKind::Config);
            assert_eq!(error.operation(), Operation::Connect);
        }
    }

    #[tokio::test]
    async fn tls_to_sentinels_is_refused_in_words() {
        let store = RedisStore::builder_for_sentinel(["rediss://127.0.0.1:1"], "sessions");
        let error = store.connect().await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Config);
        assert!(
            crate::store::chain(&error).contains("TLS to Redis Sentinel is not supported yet"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_malformed_url_is_a_config_error() {
        let error = RedisStore::builder("not a url").connect_lazy().unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Config);
        assert_eq!(error.backend(), "redis");
    }

    #[tokio::test]
    async fn a_cluster_without_nodes_or_connected_lazily_is_a_config_error() {
        let none = RedisStore::builder_for_cluster(Vec::<String>::new());
        assert_eq!(
            none.connect().await.unwrap_err().kind(),
            StoreErrorKind::Config
        );
        let lazy = RedisStore::builder_for_cluster(["redis://127.0.0.1:1"]).connect_lazy();
        assert_eq!(lazy.unwrap_err().kind(), StoreErrorKind::Config);
    }

    #[test]
    fn debug_hides_the_urls() {
        let single = RedisStore::builder("redis://user:hunter2@127.0.0.1:6379/0");
        let cluster = RedisStore::builder_for_cluster(["redis://:hunter2@10.0.0.1:7000"]);
        for printed in [format!("{single:?}"), format!("{cluster:?}")] {
            assert!(!printed.contains("hunter2"), "{printed}");
            assert!(printed.contains("httpsession:"), "{printed}");
        }
    }
}
