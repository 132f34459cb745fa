//! Choose the store from configuration, the way a Spring profile swaps a bean.
//!
//! An app reads a [`Profile`] (from the environment with
//! [`Profile::from_env`], or deserialized from any serde format) and builds
//! [`Sessions`]: a connected, migrated store and the session configuration,
//! behind one type. The code is the same whichever store the profile names.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use tower_httpsession::profile::Profile;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // SESSION_STORE=memory | redis | postgres
//! let sessions = Profile::from_env()?.build().await?;
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(sessions.layer());
//! # let _ = app; Ok(()) }
//! ```
//!
//! # Environment variables
//!
//! | Variable | Meaning | Default |
//! | --- | --- | --- |
//! | `SESSION_STORE` | `memory`, `redis` or `postgres` | `memory` |
//! | `SESSION_MEMORY_CAPACITY` | sessions the memory store holds | 100000 |
//! | `SESSION_MEMORY_MAX_BYTES` | bytes the memory store's sessions may take | 67108864 (64 MiB) |
//! | `REDIS_URL` | single-node Redis, `redis://host:port/db` | required for `redis` unless `REDIS_CLUSTER_URLS` |
//! | `REDIS_CLUSTER_URLS` | comma-separated Redis Cluster nodes | |
//! | `SESSION_REDIS_PREFIX` | key prefix | the store's default |
//! | `DATABASE_URL` | PostgreSQL, `postgres://user@host/db` | required for `postgres` |
//! | `SESSION_PG_SCHEMA` | schema of the session tables | the store's default |
//! | `SESSION_CONNECT_TIMEOUT_SECS` | how long start-up waits for the store | 5 |
//! | `SESSION_COOKIE_NAME` | cookie name | `SESSION` |
//! | `SESSION_COOKIE_SECURE` | `false` sends the cookie over plain HTTP too | `true` |
//! | `SESSION_COOKIE_DOMAIN` | cookie `Domain` | none |
//! | `SESSION_COOKIE_PATH` | cookie `Path` | `/` |
//! | `SESSION_SAME_SITE` | `lax`, `strict` or `none` | `lax` |
//! | `SESSION_MAX_INACTIVE_SECS` | idle timeout | 1800 |
//! | `SESSION_ABSOLUTE_TIMEOUT_SECS` | absolute timeout | none |
//! | `SESSION_TOUCH_INTERVAL_SECS` | touch interval | a twentieth of the idle timeout |
//!
//! Bad configuration fails at start-up with one message that names the
//! variable and what it accepts; an unreachable store fails after the
//! connect timeout. URLs are never echoed, since they may hold passwords.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, SameSite, SessionConfig};
use crate::layer::SessionLayer;
use crate::store::{MemoryStore, SessionStore, StoreError};

/// A URL that may hold a password: `Debug` prints only its scheme.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

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
    /// The in-process [`MemoryStore`].
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

fn default_capacity() -> u64 {
    crate::store::memory::DEFAULT_CAPACITY
}

fn default_max_bytes() -> u64 {
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

/// A configuration that cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// A variable holds a value it does not accept.
    #[error("{variable}={shown}: expected {expected}")]
    Invalid {
        /// The variable or field.
        variable: &'static str,
        /// The value as shown in the message (hidden for URLs).
        shown: String,
        /// What it accepts.
        expected: &'static str,
    },
    /// A variable the profile needs is not set.
    #[error("{variable} is required with SESSION_STORE={profile}")]
    Missing {
        /// The variable.
        variable: &'static str,
        /// The profile that needs it.
        profile: &'static str,
    },
    /// The profile names a store this build does not include.
    #[error("SESSION_STORE={profile}: this build lacks the `{feature}` feature")]
    NotBuilt {
        /// The profile.
        profile: &'static str,
        /// The cargo feature to enable.
        feature: &'static str,
    },
    /// The store did not answer within the connect timeout.
    #[error("{variable}: the {backend} store could not be reached within {timeout:?}")]
    Unreachable {
        /// The variable that names the store.
        variable: &'static str,
        /// The store's name.
        backend: &'static str,
        /// How long start-up waited.
        timeout: Duration,
        /// What went wrong.
        #[source]
        source: StoreError,
    },
    /// The store answered but refused the settings (credentials, database,
    /// schema).
    #[error("{variable}: the {backend} store refused the settings")]
    Refused {
        /// The variable that names the store.
        variable: &'static str,
        /// The store's name.
        backend: &'static str,
        /// What the store said.
        #[source]
        source: StoreError,
    },
    /// The session settings break a rule of [`SessionConfig`].
    #[error("session settings: {0}")]
    Config(#[from] ConfigError),
}

fn invalid(variable: &'static str, value: &str, expected: &'static str) -> ProfileError {
    ProfileError::Invalid {
        variable,
        shown: format!("{value:?}"),
        expected,
    }
}

/// A count above zero, such as a number of sessions or bytes.
fn above_zero(
    variable: &'static str,
    value: Option<String>,
    expected: &'static str,
) -> Result<Option<u64>, ProfileError> {
    value
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(variable, &v, expected))
        })
        .transpose()
}

fn seconds(variable: &'static str, value: Option<String>) -> Result<Option<u64>, ProfileError> {
    value
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| invalid(variable, &v, "a whole number of seconds"))
        })
        .transpose()
}

impl Profile {
    /// Reads the profile from the process environment; see the
    /// [module docs](self) for the variables.
    ///
    /// # Errors
    ///
    /// A [`ProfileError`] naming the variable and what it accepts.
    pub fn from_env() -> Result<Self, ProfileError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the profile from the process environment, taking a variable
    /// that is not set from `defaults`: for an app or example whose natural
    /// store is not the memory one.
    ///
    /// ```no_run
    /// # use tower_httpsession::profile::Profile;
    /// let profile = Profile::from_env_or(&[
    ///     ("SESSION_STORE", "redis"),
    ///     ("REDIS_URL", "redis://127.0.0.1:6379"),
    /// ])?;
    /// # Ok::<(), tower_httpsession::profile::ProfileError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ProfileError`] naming the variable and what it accepts.
    pub fn from_env_or(defaults: &[(&str, &str)]) -> Result<Self, ProfileError> {
        Self::from_lookup(|name| {
            std::env::var(name).ok().or_else(|| {
                defaults
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            })
        })
    }

    /// Reads the profile from `lookup`, which answers a variable's value:
    /// [`from_env`](Self::from_env) without the process environment, for
    /// tests and other sources.
    ///
    /// # Errors
    ///
    /// A [`ProfileError`] naming the variable and what it accepts.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ProfileError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let store = match var("SESSION_STORE").as_deref().map(str::trim) {
            None | Some("memory") => StoreProfile::Memory {
                capacity: above_zero(
                    "SESSION_MEMORY_CAPACITY",
                    var("SESSION_MEMORY_CAPACITY"),
                    "a number of sessions above 0",
                )?
                .unwrap_or_else(default_capacity),
                max_bytes: above_zero(
                    "SESSION_MEMORY_MAX_BYTES",
                    var("SESSION_MEMORY_MAX_BYTES"),
                    "a number of bytes above 0",
                )?
                .unwrap_or_else(default_max_bytes),
            },
            Some("redis") => {
                let url = var("REDIS_URL").map(SecretUrl);
                let cluster_urls: Vec<SecretUrl> = var("REDIS_CLUSTER_URLS")
                    .map(|v| {
                        v.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(|s| SecretUrl(s.to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                if url.is_none() && cluster_urls.is_empty() {
                    return Err(ProfileError::Missing {
                        variable: "REDIS_URL",
                        profile: "redis",
                    });
                }
                StoreProfile::Redis {
                    url,
                    cluster_urls,
                    prefix: var("SESSION_REDIS_PREFIX"),
                }
            }
            Some("postgres") => StoreProfile::Postgres {
                url: var("DATABASE_URL")
                    .map(SecretUrl)
                    .ok_or(ProfileError::Missing {
                        variable: "DATABASE_URL",
                        profile: "postgres",
                    })?,
                schema: var("SESSION_PG_SCHEMA"),
            },
            Some(other) => {
                return Err(invalid(
                    "SESSION_STORE",
                    other,
                    "one of memory, redis, postgres",
                ));
            }
        };
        let same_site = match var("SESSION_SAME_SITE").map(|v| v.trim().to_ascii_lowercase()) {
            None => None,
            Some(v) if v == "lax" => Some(SameSiteSetting::Lax),
            Some(v) if v == "strict" => Some(SameSiteSetting::Strict),
            Some(v) if v == "none" => Some(SameSiteSetting::None),
            Some(v) => return Err(invalid("SESSION_SAME_SITE", &v, "one of lax, strict, none")),
        };
        let cookie_secure =
            match var("SESSION_COOKIE_SECURE").map(|v| v.trim().to_ascii_lowercase()) {
                None => None,
                Some(v) if matches!(v.as_str(), "true" | "1" | "yes") => Some(true),
                Some(v) if matches!(v.as_str(), "false" | "0" | "no") => Some(false),
                Some(v) => return Err(invalid("SESSION_COOKIE_SECURE", &v, "true or false")),
            };
        Ok(Self {
            store,
            connect_timeout_secs: seconds(
                "SESSION_CONNECT_TIMEOUT_SECS",
                var("SESSION_CONNECT_TIMEOUT_SECS"),
            )?,
            cookie_name: var("SESSION_COOKIE_NAME"),
            cookie_secure,
            cookie_domain: var("SESSION_COOKIE_DOMAIN"),
            cookie_path: var("SESSION_COOKIE_PATH"),
            same_site,
            max_inactive_secs: seconds(
                "SESSION_MAX_INACTIVE_SECS",
                var("SESSION_MAX_INACTIVE_SECS"),
            )?,
            absolute_timeout_secs: seconds(
                "SESSION_ABSOLUTE_TIMEOUT_SECS",
                var("SESSION_ABSOLUTE_TIMEOUT_SECS"),
            )?,
            touch_interval_secs: seconds(
                "SESSION_TOUCH_INTERVAL_SECS",
                var("SESSION_TOUCH_INTERVAL_SECS"),
            )?,
        })
    }

    /// The session configuration this profile describes, checked.
    ///
    /// # Errors
    ///
    /// [`ProfileError::Config`] if the settings break a rule.
    pub fn session_config(&self) -> Result<SessionConfig, ProfileError> {
        let mut config = SessionConfig::default();
        if let Some(name) = &self.cookie_name {
            config = config.with_cookie_name(name.clone());
        }
        if self.cookie_secure == Some(false) {
            config = config.with_insecure_cookie_over_http();
        }
        if let Some(domain) = &self.cookie_domain {
            config = config.with_domain(Some(domain.clone()));
        }
        if let Some(path) = &self.cookie_path {
            config = config.with_path(path.clone());
        }
        if let Some(same_site) = self.same_site {
            config = config.with_same_site(match same_site {
                SameSiteSetting::Lax => SameSite::Lax,
                SameSiteSetting::Strict => SameSite::Strict,
                SameSiteSetting::None => SameSite::None,
            });
        }
        if let Some(secs) = self.max_inactive_secs {
            config = config.with_max_inactive_interval(Duration::from_secs(secs));
        }
        if let Some(secs) = self.absolute_timeout_secs {
            config = config.with_absolute_timeout(Some(Duration::from_secs(secs)));
        }
        if let Some(secs) = self.touch_interval_secs {
            config = config.with_touch_interval(Duration::from_secs(secs));
        }
        config.validate()?;
        Ok(config)
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs.unwrap_or(5).max(1))
    }

    /// Connects the store (and applies its migrations, for PostgreSQL),
    /// checks the session settings, and returns both ready for use.
    ///
    /// # Errors
    ///
    /// A [`ProfileError`] naming what is wrong: a setting, a store this
    /// build lacks, or a store that did not answer within the connect
    /// timeout.
    pub async fn build(&self) -> Result<Sessions, ProfileError> {
        let config = self.session_config()?;
        let (store, tasks): (Arc<dyn SessionStore>, _) = match &self.store {
            StoreProfile::Memory {
                capacity,
                max_bytes,
            } => {
                let store = MemoryStore::builder()
                    .with_max_sessions(*capacity)
                    .with_max_bytes(*max_bytes)
                    .build();
                (Arc::new(store) as _, None)
            }
            StoreProfile::Redis {
                url,
                cluster_urls,
                prefix,
            } => (
                backends::redis(
                    url.as_ref(),
                    cluster_urls,
                    prefix.as_deref(),
                    self.connect_timeout(),
                )
                .await?,
                None,
            ),
            StoreProfile::Postgres { url, schema } => {
                backends::postgres(url, schema.as_deref(), self.connect_timeout()).await?
            }
        };
        Ok(Sessions {
            profile: self.store.name(),
            layer: SessionLayer::shared(store.clone(), config)?,
            store,
            _tasks: tasks,
        })
    }
}

/// A ready store and session configuration, built from a [`Profile`].
///
/// Clones share the store. Keep it in the app's state; mount
/// [`layer`](Self::layer) and hand [`store`](Self::store) to the health
/// endpoints.
#[derive(Clone)]
pub struct Sessions {
    profile: &'static str,
    store: Arc<dyn SessionStore>,
    layer: SessionLayer,
    /// Background work that lives as long as any clone, such as the
    /// PostgreSQL store's expiry cleanup.
    _tasks: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("profile", &self.profile)
            .field("layer", &self.layer)
            .finish()
    }
}

impl Sessions {
    /// The session layer over the store.
    #[must_use]
    pub fn layer(&self) -> SessionLayer {
        self.layer.clone()
    }

    /// The store, shared.
    #[must_use]
    pub fn store(&self) -> Arc<dyn SessionStore> {
        self.store.clone()
    }

    /// The session configuration.
    pub fn config(&self) -> &SessionConfig {
        self.layer.config()
    }

    /// The profile's name: `memory`, `redis` or `postgres`.
    #[must_use]
    pub fn profile(&self) -> &'static str {
        self.profile
    }
}

mod backends {
    //! The connectors each feature brings.
    #![allow(clippy::unused_async)]

    use std::sync::Arc;
    use std::time::Duration;

    use super::{ProfileError, SecretUrl};
    use crate::store::SessionStore;

    #[cfg(not(feature = "redis"))]
    pub(super) async fn redis(
        _: Option<&SecretUrl>,
        _: &[SecretUrl],
        _: Option<&str>,
        _: Duration,
    ) -> Result<Arc<dyn SessionStore>, ProfileError> {
        Err(ProfileError::NotBuilt {
            profile: "redis",
            feature: "redis",
        })
    }

    /// What a backend connector returns: the store, and background work to
    /// keep alive with it.
    pub(super) type Built = (
        Arc<dyn SessionStore>,
        Option<Arc<dyn std::any::Any + Send + Sync>>,
    );

    /// A store error at start-up, as the profile reports it.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub(super) fn failed(
        variable: &'static str,
        backend: &'static str,
        timeout: Duration,
        source: crate::store::StoreError,
    ) -> ProfileError {
        if source.is_unavailable() {
            ProfileError::Unreachable {
                variable,
                backend,
                timeout,
                source,
            }
        } else {
            ProfileError::Refused {
                variable,
                backend,
                source,
            }
        }
    }

    /// Checks that `url` starts with one of `schemes`, without echoing it.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub(super) fn check_scheme(
        variable: &'static str,
        url: &SecretUrl,
        schemes: &[&str],
        expected: &'static str,
    ) -> Result<(), ProfileError> {
        let scheme = url.expose().split_once("://").map(|(s, _)| s);
        if scheme.is_some_and(|s| schemes.contains(&s)) {
            Ok(())
        } else {
            Err(ProfileError::Invalid {
                variable,
                shown: "(hidden: it may hold a password)".to_owned(),
                expected,
            })
        }
    }

    #[cfg(feature = "redis")]
    pub(super) async fn redis(
        url: Option<&SecretUrl>,
        cluster_urls: &[SecretUrl],
        prefix: Option<&str>,
        timeout: Duration,
    ) -> Result<Arc<dyn SessionStore>, ProfileError> {
        use crate::store::redis::RedisStore;

        const SCHEMES: &[&str] = &["redis", "redis+unix", "unix"];
        const EXPECTED: &str = "a redis:// URL";
        let mut builder = RedisStore::builder().with_connect_timeout(timeout);
        if let Some(prefix) = prefix {
            builder = builder.with_key_prefix(prefix);
        }
        let (variable, store) = if cluster_urls.is_empty() {
            let Some(url) = url else {
                return Err(ProfileError::Missing {
                    variable: "REDIS_URL",
                    profile: "redis",
                });
            };
            check_scheme("REDIS_URL", url, SCHEMES, EXPECTED)?;
            ("REDIS_URL", builder.connect(url.expose()).await)
        } else {
            for url in cluster_urls {
                check_scheme("REDIS_CLUSTER_URLS", url, SCHEMES, EXPECTED)?;
            }
            let urls = cluster_urls.iter().map(SecretUrl::expose);
            ("REDIS_CLUSTER_URLS", builder.connect_cluster(urls).await)
        };
        let store = store.map_err(|e| failed(variable, "redis", timeout, e))?;
        Ok(Arc::new(store))
    }

    #[cfg(not(feature = "postgres"))]
    pub(super) async fn postgres(
        _: &SecretUrl,
        _: Option<&str>,
        _: Duration,
    ) -> Result<Built, ProfileError> {
        Err(ProfileError::NotBuilt {
            profile: "postgres",
            feature: "postgres",
        })
    }

    /// How often the PostgreSQL store's expired sessions are deleted, and
    /// how many at a time.
    #[cfg(feature = "postgres")]
    const CLEANUP: (Duration, u32) = (Duration::from_secs(60), 1_000);

    #[cfg(feature = "postgres")]
    pub(super) async fn postgres(
        url: &SecretUrl,
        schema: Option<&str>,
        timeout: Duration,
    ) -> Result<Built, ProfileError> {
        use crate::store::postgres::PostgresStore;

        const VAR: &str = "DATABASE_URL";
        check_scheme(VAR, url, &["postgres", "postgresql"], "a postgres:// URL")?;
        let mut builder = PostgresStore::builder(url.expose()).with_acquire_timeout(timeout);
        if let Some(schema) = schema {
            builder = builder.with_schema(schema);
        }
        let store = builder
            .connect()
            .await
            .map_err(|e| failed(VAR, "postgres", timeout, e))?;
        store
            .migrate()
            .await
            .map_err(|e| failed(VAR, "postgres", timeout, e))?;
        let cleanup = store.spawn_cleanup(CLEANUP.0, CLEANUP.1);
        Ok((Arc::new(store), Some(Arc::new(cleanup))))
    }
}
