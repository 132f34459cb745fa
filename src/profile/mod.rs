//! Choose the store from configuration, the way a Spring profile swaps a bean.
//!
//! An app reads a [`Profile`] (from the environment with
//! [`Profile::from_env`], or deserialized from any serde format) and
//! [connects](Profile::connect) it into [`Sessions`]: a connected, migrated
//! store and the session layer, behind one type. The code is the same whichever store the profile names.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use tower_httpsession::profile::Profile;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // SESSION_STORE=memory | redis | postgres
//! let sessions = Profile::from_env()?.connect().await?;
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
//! | `REDIS_URL` | single-node Redis, `redis://host:port/db` (`rediss://` for TLS, feature `tls`) | required for `redis` unless `REDIS_CLUSTER_URLS` |
//! | `REDIS_CLUSTER_URLS` | comma-separated Redis Cluster nodes | |
//! | `SESSION_REDIS_SENTINELS` | comma-separated Redis Sentinels, `redis://host:26379` | |
//! | `SESSION_REDIS_SENTINEL_PRIMARY` | the name the sentinels know the primary by | required with `SESSION_REDIS_SENTINELS` |
//! | `SESSION_REDIS_REPLICA_ACKS` | replicas that must acknowledge each write (`WAIT`) | none |
//! | `SESSION_REDIS_REPLICA_ACK_TIMEOUT_MS` | how long a write waits for them | 100 |
//! | `SESSION_REDIS_PREFIX` | key prefix | the store's default |
//! | `SESSION_REDIS_TLS_CA_FILE` | CA file (PEM) for `rediss://` URLs, instead of the platform's roots | the platform's roots |
//! | `SESSION_REDIS_TLS_CLIENT_CERT` | client certificate (PEM) for mutual TLS, with the next | none |
//! | `SESSION_REDIS_TLS_CLIENT_KEY` | the client certificate's private key (PEM) | none |
//! | `DATABASE_URL` | PostgreSQL, `postgres://user@host/db` | required for `postgres` |
//! | `SESSION_PG_SCHEMA` | schema of the session tables | the store's default |
//! | `SESSION_PG_SSLMODE` | `disable`, `allow`, `prefer`, `require`, `verify-ca` or `verify-full`, over the URL's `sslmode` | the URL's, else `prefer` |
//! | `SESSION_PG_SSLROOTCERT` | CA file (PEM) for the server's certificate, over the URL's `sslrootcert` | the URL's, else the platform's roots |
//! | `SESSION_CONNECT_TIMEOUT_SECS` | how long start-up waits for the store | 5 |
//! | `SESSION_COOKIE_NAME` | cookie name | `SESSION` |
//! | `SESSION_COOKIE_SECURE` | `false` sends the cookie over plain HTTP too | `true` |
//! | `SESSION_COOKIE_PERSISTENT` | `true` sends a persistent ("remember me") cookie whose `Max-Age` follows the session | `false` |
//! | `SESSION_COOKIE_DOMAIN` | cookie `Domain` | none |
//! | `SESSION_COOKIE_PATH` | cookie `Path` | `/` |
//! | `SESSION_SAME_SITE` | `lax`, `strict` or `none` | `lax` |
//! | `SESSION_MAX_INACTIVE_SECS` | idle timeout | 1800 |
//! | `SESSION_ABSOLUTE_TIMEOUT_SECS` | absolute timeout | none |
//! | `SESSION_TOUCH_INTERVAL_SECS` | touch interval | a twentieth of the idle timeout |
//! | `SESSION_LIMIT` | most live sessions per principal (user), 1 or more | no limit |
//! | `SESSION_LIMIT_POLICY` | past the limit: `evict` the least recently used session, or `refuse` the new login | `evict` |
//!
//! Bad configuration fails at start-up with one message that names the
//! variable and what it accepts; an unreachable store fails after the
//! connect timeout. URLs are never echoed, since they may hold passwords.

mod connect;
mod env;
mod settings;
mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigError, SessionConfig};
use crate::layer::SessionLayer;
use crate::store::{MemoryStore, SessionStore, StoreError};

pub use self::settings::{Profile, SecretUrl, StoreProfile};

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
    #[error(
        "{variable} is required with SESSION_STORE={profile}: {}",
        missing_hint(variable)
    )]
    Missing {
        /// The variable.
        variable: &'static str,
        /// The profile that needs it.
        profile: &'static str,
    },
    /// The profile names a store this build does not include.
    #[error(
        "SESSION_STORE={profile}: this build lacks the `{feature}` feature; build with `--features {feature}`"
    )]
    NotBuilt {
        /// The profile.
        profile: &'static str,
        /// The cargo feature to enable.
        feature: &'static str,
    },
    /// The store did not answer within the connect timeout.
    #[error(
        "{variable}: the {backend} store could not be reached within {timeout:?}; check that it runs at the host and port the URL names, or raise SESSION_CONNECT_TIMEOUT_SECS"
    )]
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
    /// schema). The message carries the store's own reason, which names no
    /// password.
    #[error(
        "{variable}: the {backend} store refused the settings ({}); check the user, password, database and schema or prefix it is given",
        root_cause(source)
    )]
    Refused {
        /// The variable that names the store.
        variable: &'static str,
        /// The store's name.
        backend: &'static str,
        /// What the store said.
        #[source]
        source: StoreError,
    },
    /// A variable is set without the one it goes with.
    #[error("{variable} is set but {needs} is not: set both")]
    Incomplete {
        /// The variable that is set.
        variable: &'static str,
        /// The one it needs.
        needs: &'static str,
    },
    /// A variable is set that this build cannot use.
    #[error("{variable} needs the `{feature}` feature, which this build lacks")]
    NeedsFeature {
        /// The variable.
        variable: &'static str,
        /// The cargo feature to enable.
        feature: &'static str,
    },
    /// The session settings break a rule of [`SessionConfig`].
    #[error("session settings: {0}")]
    Config(#[from] ConfigError),
}

/// What to set a missing variable to.
fn missing_hint(variable: &str) -> &'static str {
    match variable {
        "REDIS_URL" => {
            "set it to a redis:// URL such as redis://127.0.0.1:6379, or set REDIS_CLUSTER_URLS to the nodes of a cluster"
        }
        "DATABASE_URL" => "set it to a postgres:// URL such as postgres://postgres@127.0.0.1/test",
        _ => "set it",
    }
}

/// The innermost cause of `error`, on one line and at most 200 characters:
/// the store's own words (a missing database, a wrong password), which
/// the store drivers phrase without the URL or the password.
fn root_cause(error: &StoreError) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text: String = cause
        .to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    text.trim().to_owned()
}

impl Profile {
    /// Connects the store (and applies its migrations, for PostgreSQL),
    /// checks the session configuration, and returns both ready for use.
    ///
    /// # Errors
    ///
    /// A [`ProfileError`] naming what is wrong: a setting, a store this
    /// build lacks, or a store that did not answer within the connect
    /// timeout.
    pub async fn connect(&self) -> Result<Sessions, ProfileError> {
        // Checked first: a bad setting fails at once, not after a connect.
        self.session.validate()?;
        let timeout = self.connect_timeout.max(Duration::from_secs(1));
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
                tls_ca_file,
                tls_client_cert,
                tls_client_key,
                ..
            } => {
                let tls = tls::RedisTlsFiles {
                    ca_file: tls_ca_file.as_ref(),
                    client_cert: tls_client_cert.as_ref(),
                    client_key: tls_client_key.as_ref(),
                };
                tls.check()?;
                (connect::redis(&self.store, tls, timeout).await?, None)
            }
            StoreProfile::Postgres {
                url,
                schema,
                sslmode,
                sslrootcert,
            } => {
                let tls = tls::PgTls {
                    sslmode: sslmode.as_deref(),
                    sslrootcert: sslrootcert.as_ref(),
                };
                connect::postgres(url, schema.as_deref(), tls, timeout).await?
            }
        };
        Ok(Sessions {
            profile: self.store.name(),
            layer: SessionLayer::with_config(store.clone(), self.session.clone())?,
            store,
            _tasks: tasks,
        })
    }

    /// Connects the store and checks the session configuration.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    #[deprecated(note = "renamed to `connect`, the name of every call that connects a store")]
    pub async fn build(&self) -> Result<Sessions, ProfileError> {
        self.connect().await
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
