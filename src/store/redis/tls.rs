//! TLS to Redis and Redis Cluster: `rediss://` URLs, a CA file, a client
//! certificate (feature `tls`).
//!
//! A `rediss://` URL alone verifies the server against the platform's root
//! certificates and checks that its certificate names the URL's host.
//! [`with_tls_ca_file`](RedisStoreBuilder::with_tls_ca_file) trusts a private
//! CA instead, and
//! [`with_tls_client_identity`](RedisStoreBuilder::with_tls_client_identity)
//! sends a client certificate (mutual TLS, `tls-auth-clients yes`).

use ::redis::cluster::ClusterClientBuilder;
use ::redis::{Client, RedisError};

#[cfg(not(feature = "tls"))]
use super::config_error;
use super::{BACKEND, Problem, RedisStoreBuilder, redis_error};
use crate::store::{Operation, StoreError};

#[cfg(feature = "tls")]
pub(super) use self::on::TlsSettings;

/// A URL that redis refuses.
fn bad_url(error: RedisError) -> StoreError {
    StoreError::new(
        BACKEND,
        Operation::Connect,
        crate::store::StoreErrorKind::Config,
        error,
    )
}

/// Whether `url` asks for TLS.
fn is_tls_url(url: &str) -> bool {
    url.trim_start().starts_with("rediss://")
}

#[cfg(feature = "tls")]
mod on {
    use std::path::PathBuf;

    use ::redis::{ClientTlsConfig, TlsCertificates};

    use crate::store::tls::{TlsError, TlsFile, Trusted, read_certificates, read_private_key};

    /// The TLS settings of a builder.
    #[derive(Debug, Clone, Default)]
    pub(in crate::store::redis) struct TlsSettings {
        pub(super) ca_file: Option<PathBuf>,
        /// The client's certificate chain and key.
        pub(super) identity: Option<(PathBuf, PathBuf)>,
    }

    impl TlsSettings {
        pub(in crate::store::redis) fn is_set(&self) -> bool {
            self.ca_file.is_some() || self.identity.is_some()
        }

        pub(super) fn trusted(&self) -> Trusted {
            self.ca_file
                .clone()
                .map_or(Trusted::PlatformRoots, Trusted::CaFile)
        }

        /// The files, read and checked, as redis takes them.
        pub(super) fn certificates(&self) -> Result<TlsCertificates, TlsError> {
            let root_cert = self
                .ca_file
                .as_deref()
                .map(|path| read_certificates(TlsFile::CaFile, path))
                .transpose()?;
            let client_tls = self
                .identity
                .as_ref()
                .map(|(cert, key)| {
                    Ok::<_, TlsError>(ClientTlsConfig {
                        client_cert: read_certificates(TlsFile::ClientCert, cert)?,
                        client_key: read_private_key(key)?,
                    })
                })
                .transpose()?;
            Ok(TlsCertificates {
                client_tls,
                root_cert,
            })
        }
    }
}

#[cfg(feature = "tls")]
impl RedisStoreBuilder {
    /// Trusts the CA certificates in the PEM file at `path` instead of the
    /// platform's root certificates: for a Redis whose certificate a
    /// private CA signed. Needs `rediss://` URLs. Default: the platform's
    /// roots.
    ///
    /// The file is read when the store connects; a missing or unreadable
    /// file, or one without a certificate, fails
    /// [`connect`](Self::connect) with a [`TlsError`](crate::store::tls::TlsError)
    /// naming it.
    ///
    /// ```no_run
    /// use tower_httpsession::store::redis::RedisStore;
    ///
    /// # async fn run() -> Result<(), tower_httpsession::StoreError> {
    /// let store = RedisStore::builder("rediss://redis.internal:6380")
    ///     .with_tls_ca_file("/etc/ssl/private-ca.pem")
    ///     .connect()
    ///     .await?;
    /// # let _ = store; Ok(()) }
    /// ```
    pub fn with_tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls.ca_file = Some(path.into());
        self
    }

    /// Sends the client certificate chain in the PEM file `cert` with the
    /// private key in the PEM file `key` (PKCS#8, PKCS#1 or SEC1): mutual
    /// TLS, for a Redis started with `tls-auth-clients yes`. Needs
    /// `rediss://` URLs. Default: no client certificate.
    ///
    /// The files are read when the store connects.
    ///
    /// ```no_run
    /// use tower_httpsession::store::redis::RedisStore;
    ///
    /// # async fn run() -> Result<(), tower_httpsession::StoreError> {
    /// let store = RedisStore::builder_for_cluster(["rediss://10.0.0.1:7000"])
    ///     .with_tls_ca_file("/etc/redis/ca.pem")
    ///     .with_tls_client_identity("/etc/redis/client.pem", "/etc/redis/client.key")
    ///     .connect()
    ///     .await?;
    /// # let _ = store; Ok(()) }
    /// ```
    pub fn with_tls_client_identity(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.tls.identity = Some((cert.into(), key.into()));
        self
    }
}

impl RedisStoreBuilder {
    /// Checks that every URL asks for TLS if TLS settings are given, and
    /// that this build can speak TLS if a URL asks for it.
    pub(super) fn check_tls<'a>(
        &self,
        mut urls: impl Iterator<Item = &'a str>,
    ) -> Result<(), StoreError> {
        #[cfg(feature = "tls")]
        {
            let any_tls = urls.any(is_tls_url);
            if any_tls {
                crate::store::tls::ensure_crypto_provider();
            }
            if self.tls.is_set() && !self.all_tls() {
                return Err(crate::store::tls::config_error(
                    BACKEND,
                    crate::store::tls::TlsError::NotTlsUrl {
                        expected: "rediss://host:port",
                    },
                ));
            }
            Ok(())
        }
        #[cfg(not(feature = "tls"))]
        if urls.any(is_tls_url) {
            Err(config_error(
                "a rediss:// URL needs the crate feature `tls`",
            ))
        } else {
            Ok(())
        }
    }

    /// Whether every URL of the builder asks for TLS.
    #[cfg(feature = "tls")]
    fn all_tls(&self) -> bool {
        self.urls().all(is_tls_url)
    }

    /// The TLS files, read and checked, if any are set.
    #[cfg(feature = "tls")]
    fn tls_certificates(&self) -> Result<Option<::redis::TlsCertificates>, StoreError> {
        if !self.tls.is_set() {
            return Ok(None);
        }
        let certificates = self.tls.certificates();
        certificates
            .map(Some)
            .map_err(|e| crate::store::tls::config_error(BACKEND, e))
    }

    /// The client of a single node at `url`.
    pub(super) fn client_for(&self, url: &str) -> Result<Client, StoreError> {
        #[cfg(feature = "tls")]
        if let Some(certificates) = self.tls_certificates()? {
            return Client::build_with_tls(url, certificates).map_err(bad_url);
        }
        Client::open(url).map_err(bad_url)
    }

    /// `builder` with the TLS files, if any.
    pub(super) fn with_cluster_tls(
        &self,
        builder: ClusterClientBuilder,
    ) -> Result<ClusterClientBuilder, StoreError> {
        #[cfg(feature = "tls")]
        if let Some(certificates) = self.tls_certificates()? {
            return Ok(builder.certs(certificates));
        }
        Ok(builder)
    }

    /// Why a connect got no answer: with TLS, perhaps a port without it,
    /// whose server waits for the end of a command line that never comes.
    pub(super) fn no_answer(&self) -> Problem {
        if self.urls().any(is_tls_url) {
            Problem::NoTlsAnswer(self.connect_timeout)
        } else {
            Problem::NoAnswer(self.connect_timeout)
        }
    }

    /// Over TLS, one connection to the first node before any other: its
    /// handshake fails at once, with the cause, where the reconnecting
    /// single-node connection would retry it until the connect timeout and
    /// the cluster client would keep only its words. A node that refused
    /// the connection or dropped it is left to the usual connect, which
    /// retries.
    pub(super) async fn check_handshake(&self) -> Result<(), StoreError> {
        #[cfg(feature = "tls")]
        if let Some(first) = self.urls().next().filter(|url| is_tls_url(url)) {
            let client = self.client_for(first)?;
            // Bounded by the connect timeout alone.
            let config = ::redis::AsyncConnectionConfig::new()
                .set_connection_timeout(None)
                .set_response_timeout(None);
            let probe = self
                .within_connect_timeout(
                    client.get_multiplexed_async_connection_with_config(&config),
                )
                .await;
            if let Err(error) = probe {
                let passing = error.is_unavailable()
                    && std::error::Error::source(&error)
                        .is_some_and(|cause| cause.is::<RedisError>());
                if !passing {
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// A failure to connect: a failed TLS handshake that a setting explains
    /// is a configuration error naming it; anything else as usual.
    pub(super) fn connect_failed(&self, error: RedisError) -> StoreError {
        #[cfg(feature = "tls")]
        if let Some(explained) = crate::store::tls::explain(&error, &self.tls.trusted()) {
            return crate::store::tls::config_error(BACKEND, explained);
        }
        redis_error(Operation::Connect, error)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::StoreErrorKind;
    use crate::store::redis::RedisStore;

    #[cfg(not(feature = "tls"))]
    #[tokio::test]
    async fn a_rediss_url_without_the_feature_says_which_feature() {
        let error = RedisStore::builder("rediss://127.0.0.1:6380")
            .connect_lazy()
            .expect_err("no TLS in this build");
        assert_eq!(error.kind(), StoreErrorKind::Config);
        let cause = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(
            cause.as_deref(),
            Some("a rediss:// URL needs the crate feature `tls`")
        );
    }

    #[cfg(feature = "tls")]
    #[tokio::test]
    async fn tls_files_for_a_plain_url_are_refused_before_connecting() {
        let cluster =
            RedisStore::builder_for_cluster(["rediss://127.0.0.1:1", "redis://127.0.0.1:2"])
                .with_tls_ca_file("/nonexistent/ca.pem");
        let error = cluster.connect().await.expect_err("one URL is plain");
        assert_eq!(error.kind(), StoreErrorKind::Config);
        let cause = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(
            cause.as_deref(),
            Some("TLS settings need a URL that asks for TLS: rediss://host:port")
        );
    }
}
