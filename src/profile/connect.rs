//! The connectors each feature brings.
#![allow(clippy::unused_async)]

use std::sync::Arc;
use std::time::Duration;

use super::tls::{PgTls, RedisTlsFiles};
use super::{ProfileError, SecretUrl};
use crate::store::SessionStore;

#[cfg(not(feature = "redis"))]
pub(super) async fn redis(
    _: &super::StoreProfile,
    _: RedisTlsFiles<'_>,
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

/// How long a write waits for its replicas unless told otherwise.
#[cfg(feature = "redis")]
const DEFAULT_REPLICA_ACK_TIMEOUT: Duration = Duration::from_millis(100);

#[cfg(feature = "redis")]
pub(super) async fn redis(
    profile: &super::StoreProfile,
    tls: RedisTlsFiles<'_>,
    timeout: Duration,
) -> Result<Arc<dyn SessionStore>, ProfileError> {
    use crate::store::redis::RedisStore;

    const SCHEMES: &[&str] = &["redis", "rediss", "redis+unix", "unix"];
    const EXPECTED: &str = "a redis:// or rediss:// URL";
    let super::StoreProfile::Redis {
        url,
        cluster_urls,
        sentinels,
        sentinel_primary,
        replica_acks,
        replica_ack_timeout_ms,
        prefix,
        ..
    } = profile
    else {
        return Err(ProfileError::Missing {
            variable: "SESSION_STORE",
            profile: "redis",
        });
    };
    let (variable, builder) = if !sentinels.is_empty() {
        const VAR: &str = "SESSION_REDIS_SENTINELS";
        for url in sentinels {
            check_scheme(
                VAR,
                url,
                &["redis"],
                "a redis:// URL (TLS to sentinels is not supported yet)",
            )?;
        }
        let Some(primary) = sentinel_primary else {
            return Err(ProfileError::Missing {
                variable: "SESSION_REDIS_SENTINEL_PRIMARY",
                profile: "redis",
            });
        };
        let urls = sentinels.iter().map(SecretUrl::expose);
        (VAR, RedisStore::builder_for_sentinel(urls, primary))
    } else if !cluster_urls.is_empty() {
        for url in cluster_urls {
            check_scheme("REDIS_CLUSTER_URLS", url, SCHEMES, EXPECTED)?;
        }
        let urls = cluster_urls.iter().map(SecretUrl::expose);
        ("REDIS_CLUSTER_URLS", RedisStore::builder_for_cluster(urls))
    } else {
        let Some(url) = url else {
            return Err(ProfileError::Missing {
                variable: "REDIS_URL",
                profile: "redis",
            });
        };
        check_scheme("REDIS_URL", url, SCHEMES, EXPECTED)?;
        ("REDIS_URL", RedisStore::builder(url.expose()))
    };
    let mut builder = tls.apply(builder.with_connect_timeout(timeout));
    if let Some(prefix) = prefix {
        builder = builder.with_key_prefix(prefix);
    }
    if let Some(replicas) = replica_acks {
        let wait =
            replica_ack_timeout_ms.map_or(DEFAULT_REPLICA_ACK_TIMEOUT, Duration::from_millis);
        builder = builder.with_replica_acknowledgement(*replicas, wait);
    }
    let store = builder.connect().await;
    let store = store.map_err(|e| failed(variable, "redis", timeout, e))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
pub(super) async fn postgres(
    _: &SecretUrl,
    _: Option<&str>,
    _: PgTls<'_>,
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
const CLEANUP: (Duration, u32) = (Duration::from_secs(60), 100);

#[cfg(feature = "postgres")]
pub(super) async fn postgres(
    url: &SecretUrl,
    schema: Option<&str>,
    tls: PgTls<'_>,
    timeout: Duration,
) -> Result<Built, ProfileError> {
    use crate::store::postgres::PostgresStore;

    const VAR: &str = "DATABASE_URL";
    check_scheme(VAR, url, &["postgres", "postgresql"], "a postgres:// URL")?;
    let mut builder =
        tls.apply(PostgresStore::builder(url.expose()).with_acquire_timeout(timeout))?;
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
