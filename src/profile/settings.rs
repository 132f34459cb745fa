//! The settings a [`Profile`] holds, as serde reads them from a file.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{SameSite, SessionConfig};
use crate::store::{LimitPolicy, SessionLimit};

/// A URL that may hold a password: `Debug` prints only its scheme.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(pub(super) String);

impl SecretUrl {
    /// Wraps `url`.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL itself; don't log it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.0.split_once("://").map_or("?", |(s, _)| s);
        write!(f, "SecretUrl({scheme}://…)")
    }
}

/// Which store keeps the sessions, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum StoreProfile {
    /// The in-process [`MemoryStore`](crate::MemoryStore).
    Memory {
        /// How many sessions it holds.
        #[serde(default = "default_capacity")]
        capacity: u64,
        /// How many bytes its sessions may take, as the store estimates
        /// them.
        #[serde(default = "default_max_bytes")]
        max_bytes: u64,
    },
    /// Redis: a single node, a cluster, or the primary Redis Sentinels
    /// name (feature `redis`).
    Redis {
        /// A single node.
        #[serde(default)]
        url: Option<SecretUrl>,
        /// The nodes of a Redis Cluster.
        #[serde(default)]
        cluster_urls: Vec<SecretUrl>,
        /// The Redis Sentinels that name the primary.
        #[serde(default)]
        sentinels: Vec<SecretUrl>,
        /// The name the sentinels know the primary by.
        #[serde(default)]
        sentinel_primary: Option<String>,
        /// How many replicas must acknowledge each write (`WAIT`); none
        /// when unset.
        #[serde(default)]
        replica_acks: Option<u32>,
        /// How long a write waits for them, in milliseconds (default 100).
        #[serde(default)]
        replica_ack_timeout_ms: Option<u64>,
        /// The key prefix.
        #[serde(default)]
        prefix: Option<String>,
        /// A CA file (PEM) that the server's certificate is checked
        /// against instead of the platform's roots (feature `tls`).
        #[serde(default)]
        tls_ca_file: Option<PathBuf>,
        /// A client certificate file (PEM) for mutual TLS, with
        /// `tls_client_key` (feature `tls`).
        #[serde(default)]
        tls_client_cert: Option<PathBuf>,
        /// The client certificate's private key file (PEM).
        #[serde(default)]
        tls_client_key: Option<PathBuf>,
    },
    /// PostgreSQL (feature `postgres`).
    Postgres {
        /// The database.
        url: SecretUrl,
        /// The schema of the session tables.
        #[serde(default)]
        schema: Option<String>,
        /// libpq's `sslmode`, over the URL's: `disable`, `allow`,
        /// `prefer`, `require`, `verify-ca` or `verify-full` (the last
        /// three need the feature `tls`).
        #[serde(default)]
        sslmode: Option<String>,
        /// A CA file (PEM) that the server's certificate is checked
        /// against, over the URL's `sslrootcert`.
        #[serde(default)]
        sslrootcert: Option<PathBuf>,
    },
}

pub(super) fn default_capacity() -> u64 {
    crate::store::memory::DEFAULT_CAPACITY
}

pub(super) fn default_max_bytes() -> u64 {
    crate::store::memory::DEFAULT_MAX_BYTES
}

impl Default for StoreProfile {
    fn default() -> Self {
        Self::Memory {
            capacity: default_capacity(),
            max_bytes: default_max_bytes(),
        }
    }
}

impl StoreProfile {
    /// The profile's name: `memory`, `redis` or `postgres`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Memory { .. } => "memory",
            Self::Redis { .. } => "redis",
            Self::Postgres { .. } => "postgres",
        }
    }
}

/// Everything an app configures about its sessions: the store, how long
/// start-up waits for it, and the [`SessionConfig`].
///
/// Read one from the environment ([`Profile::from_env`]) or deserialize it
/// from any serde format (TOML, YAML, JSON, ...), whose fields are the
/// environment variables' in lowercase without the `SESSION_` prefix:
///
/// ```
/// use std::time::Duration;
/// use tower_httpsession::profile::{Profile, StoreProfile};
///
/// let profile: Profile = serde_json::from_str(r#"{
///     "store": { "kind": "memory", "capacity": 5000, "max_bytes": 33554432 },
///     "cookie_name": "__Host-sid",
///     "max_inactive_secs": 900
/// }"#).unwrap();
/// assert_eq!(
///     profile.store,
///     StoreProfile::Memory { capacity: 5000, max_bytes: 32 * 1024 * 1024 }
/// );
/// assert_eq!(profile.session.cookie_name(), "__Host-sid");
/// assert_eq!(profile.session.max_inactive_interval(), Duration::from_secs(900));
/// ```
///
/// The session configuration is checked when the profile
/// [connects](Profile::connect).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "Settings")]
#[non_exhaustive]
pub struct Profile {
    /// The store.
    pub store: StoreProfile,
    /// How long start-up waits for the store (at least a second). Default:
    /// 5 seconds.
    pub connect_timeout: Duration,
    /// The cookie, the timeouts and the limits.
    pub session: SessionConfig,
}

/// How long start-up waits for the store unless told otherwise.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for Profile {
    fn default() -> Self {
        Settings::default().into()
    }
}

/// A profile as a file or the environment spells it: every field optional,
/// in seconds and words.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Settings {
    #[serde(default)]
    pub(super) store: StoreProfile,
    #[serde(default)]
    pub(super) connect_timeout_secs: Option<u64>,
    #[serde(default)]
    pub(super) cookie_name: Option<String>,
    /// `false` drops the cookie's `Secure` attribute (local HTTP only).
    #[serde(default)]
    pub(super) cookie_secure: Option<bool>,
    /// `true` sends a persistent cookie ("remember me").
    #[serde(default)]
    pub(super) cookie_persistent: Option<bool>,
    #[serde(default)]
    pub(super) cookie_domain: Option<String>,
    #[serde(default)]
    pub(super) cookie_path: Option<String>,
    #[serde(default)]
    pub(super) same_site: Option<SameSiteSetting>,
    #[serde(default)]
    pub(super) max_inactive_secs: Option<u64>,
    #[serde(default)]
    pub(super) absolute_timeout_secs: Option<u64>,
    #[serde(default)]
    pub(super) touch_interval_secs: Option<u64>,
    /// The most live sessions per principal.
    #[serde(default)]
    pub(super) session_limit: Option<std::num::NonZeroU32>,
    #[serde(default)]
    pub(super) session_limit_policy: Option<LimitPolicySetting>,
}

/// What happens past the session limit, as configuration spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum LimitPolicySetting {
    Evict,
    Refuse,
}

/// The `SameSite` cookie attribute, as configuration spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum SameSiteSetting {
    Lax,
    Strict,
    None,
}

impl From<Settings> for Profile {
    /// The settings given on [`SessionConfig`]'s defaults.
    fn from(settings: Settings) -> Self {
        let mut session = SessionConfig::default();
        if let Some(name) = settings.cookie_name {
            session = session.with_cookie_name(name);
        }
        if settings.cookie_secure == Some(false) {
            session = session.with_insecure_cookie_over_http();
        }
        if settings.cookie_persistent == Some(true) {
            session = session.with_persistent_cookie();
        }
        if let Some(domain) = settings.cookie_domain {
            session = session.with_domain(domain);
        }
        if let Some(path) = settings.cookie_path {
            session = session.with_path(path);
        }
        if let Some(same_site) = settings.same_site {
            session = session.with_same_site(match same_site {
                SameSiteSetting::Lax => SameSite::Lax,
                SameSiteSetting::Strict => SameSite::Strict,
                SameSiteSetting::None => SameSite::None,
            });
        }
        if let Some(secs) = settings.max_inactive_secs {
            session = session.with_max_inactive_interval(Duration::from_secs(secs));
        }
        if let Some(secs) = settings.absolute_timeout_secs {
            session = session.with_absolute_timeout(Duration::from_secs(secs));
        }
        if let Some(secs) = settings.touch_interval_secs {
            session = session.with_touch_interval(Duration::from_secs(secs));
        }
        let policy = match settings.session_limit_policy {
            Some(LimitPolicySetting::Refuse) => LimitPolicy::RefuseNewLogin,
            Some(LimitPolicySetting::Evict) | None => LimitPolicy::EvictLeastRecentlyUsed,
        };
        if let Some(limit) = settings
            .session_limit
            .and_then(|max| SessionLimit::new(max.get(), policy))
        {
            session = session.with_session_limit(limit);
        }
        Self {
            store: settings.store,
            connect_timeout: settings
                .connect_timeout_secs
                .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_secs),
            session,
        }
    }
}
