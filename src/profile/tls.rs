//! The TLS settings of the Redis and PostgreSQL profiles: read from the
//! environment, checked, and given to the store's builder.

use std::path::PathBuf;

use super::ProfileError;

/// The files of TLS to Redis, as the profile holds them.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RedisTlsFiles<'a> {
    pub(super) ca_file: Option<&'a PathBuf>,
    pub(super) client_cert: Option<&'a PathBuf>,
    pub(super) client_key: Option<&'a PathBuf>,
}

/// The TLS settings of PostgreSQL, as the profile holds them.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(super) struct PgTls<'a> {
    pub(super) sslmode: Option<&'a str>,
    pub(super) sslrootcert: Option<&'a PathBuf>,
}

/// The words `sslmode` takes.
pub(super) const SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];
const SSL_MODES_EXPECTED: &str = "one of disable, allow, prefer, require, verify-ca, verify-full";

/// Checks an `sslmode` as the environment or a file gives it.
pub(super) fn check_sslmode(value: &str) -> Result<(), ProfileError> {
    if SSL_MODES.contains(&value.trim().to_ascii_lowercase().as_str()) {
        Ok(())
    } else {
        Err(ProfileError::Invalid {
            variable: "SESSION_PG_SSLMODE",
            shown: format!("{value:?}"),
            expected: SSL_MODES_EXPECTED,
        })
    }
}

impl RedisTlsFiles<'_> {
    /// Checks that a client certificate comes with its key, and that the
    /// build can use what is set.
    pub(super) fn check(&self) -> Result<(), ProfileError> {
        match (self.client_cert, self.client_key) {
            (Some(_), None) => {
                return Err(ProfileError::Incomplete {
                    variable: "SESSION_REDIS_TLS_CLIENT_CERT",
                    needs: "SESSION_REDIS_TLS_CLIENT_KEY",
                });
            }
            (None, Some(_)) => {
                return Err(ProfileError::Incomplete {
                    variable: "SESSION_REDIS_TLS_CLIENT_KEY",
                    needs: "SESSION_REDIS_TLS_CLIENT_CERT",
                });
            }
            _ => {}
        }
        if !cfg!(feature = "tls") {
            let set = [
                (self.ca_file, "SESSION_REDIS_TLS_CA_FILE"),
                (self.client_cert, "SESSION_REDIS_TLS_CLIENT_CERT"),
            ];
            if let Some((_, variable)) = set.iter().find(|(value, _)| value.is_some()) {
                return Err(ProfileError::NeedsFeature {
                    variable,
                    feature: "tls",
                });
            }
        }
        Ok(())
    }

    /// `builder` with the files set.
    #[cfg(all(feature = "redis", feature = "tls"))]
    pub(super) fn apply(
        &self,
        mut builder: crate::store::redis::RedisStoreBuilder,
    ) -> crate::store::redis::RedisStoreBuilder {
        if let Some(ca) = self.ca_file {
            builder = builder.with_tls_ca_file(ca);
        }
        if let (Some(cert), Some(key)) = (self.client_cert, self.client_key) {
            builder = builder.with_tls_client_identity(cert, key);
        }
        builder
    }

    /// `builder` as it is: [`check`](Self::check) refused any file.
    #[cfg(all(feature = "redis", not(feature = "tls")))]
    #[allow(clippy::unused_self)]
    pub(super) fn apply(
        &self,
        builder: crate::store::redis::RedisStoreBuilder,
    ) -> crate::store::redis::RedisStoreBuilder {
        builder
    }
}

impl PgTls<'_> {
    /// `builder` with the settings over the URL's.
    #[cfg(feature = "postgres")]
    pub(super) fn apply(
        &self,
        mut builder: crate::store::postgres::PostgresStoreBuilder,
    ) -> Result<crate::store::postgres::PostgresStoreBuilder, ProfileError> {
        if let Some(mode) = self.sslmode {
            check_sslmode(mode)?;
            let mode = mode.parse().map_err(|_| ProfileError::Invalid {
                variable: "SESSION_PG_SSLMODE",
                shown: format!("{mode:?}"),
                expected: SSL_MODES_EXPECTED,
            })?;
            builder = builder.with_ssl_mode(mode);
        }
        if let Some(path) = self.sslrootcert {
            builder = builder.with_ssl_root_cert(path);
        }
        Ok(builder)
    }
}
