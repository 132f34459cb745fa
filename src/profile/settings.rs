//! The settings a [`Profile`] holds, as serde reads them from a file.

use std::fmt;

use serde::Deserialize;

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
    /// Redis, single node or cluster (feature `redis`).
    Redis {
        /// A single node.
        #[serde(default)]
        url: Option<SecretUrl>,
        /// The nodes of a Redis Cluster.
        #[serde(default)]
        cluster_urls: Vec<SecretUrl>,
        /// The key prefix.
        #[serde(default)]
        prefix: Option<String>,
    },
    /// PostgreSQL (feature `postgres`).
    Postgres {
        /// The database.
        url: SecretUrl,
        /// The schema of the session tables.
        #[serde(default)]
        schema: Option<String>,
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

/// The `SameSite` cookie attribute, as configuration spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSiteSetting {
    /// `Lax`.
    Lax,
    /// `Strict`.
    Strict,
    /// `None` (requires a secure cookie).
    None,
}

/// Everything an app configures about its sessions: the store and the cookie.
///
/// Deserializes from any serde format (TOML, YAML, JSON, ...):
///
/// ```
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
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Profile {
    /// The store.
    #[serde(default)]
    pub store: StoreProfile,
    /// How long start-up waits for the store, in seconds (default 5).
    #[serde(default)]
    pub connect_timeout_secs: Option<u64>,
    /// The cookie name.
    #[serde(default)]
    pub cookie_name: Option<String>,
    /// `false` drops the cookie's `Secure` attribute (local HTTP only).
    #[serde(default)]
    pub cookie_secure: Option<bool>,
    /// The cookie's `Domain`.
    #[serde(default)]
    pub cookie_domain: Option<String>,
    /// The cookie's `Path`.
    #[serde(default)]
    pub cookie_path: Option<String>,
    /// The cookie's `SameSite`.
    #[serde(default)]
    pub same_site: Option<SameSiteSetting>,
    /// The idle timeout in seconds.
    #[serde(default)]
    pub max_inactive_secs: Option<u64>,
    /// The absolute timeout in seconds.
    #[serde(default)]
    pub absolute_timeout_secs: Option<u64>,
    /// The touch interval in seconds.
    #[serde(default)]
    pub touch_interval_secs: Option<u64>,
}
