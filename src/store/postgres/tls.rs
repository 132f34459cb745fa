//! TLS to PostgreSQL: `sslmode` and `sslrootcert`, from the URL or the
//! builder (feature `tls` for every mode that encrypts).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::BACKEND;
use super::builder::PostgresStoreBuilder;
use super::error::from_sqlx;
use crate::store::{Operation, StoreError};

/// How the store's connections use TLS: libpq's `sslmode`.
///
/// | Mode | Encrypted | Server's certificate checked |
/// | --- | --- | --- |
/// | `disable` | no | |
/// | `allow`, `prefer` | if the server offers it | no |
/// | `require` | yes | no; as `verify-ca` if a root certificate is given |
/// | `verify-ca` | yes | signed by a trusted CA |
/// | `verify-full` | yes | signed by a trusted CA, and names the URL's host |
///
/// Only `verify-full` stops a man in the middle who holds any certificate
/// of the trusted CAs; choose it for a database reached over a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// Plain first, TLS if the server wants it.
    Allow,
    /// TLS first, plain if the server does not offer it; sqlx's default.
    Prefer,
    /// TLS, without checking the server's certificate unless a root
    /// certificate is given.
    Require,
    /// TLS, the server's certificate signed by a trusted CA.
    VerifyCa,
    /// TLS, the server's certificate signed by a trusted CA and naming the
    /// host of the URL.
    VerifyFull,
}

impl SslMode {
    /// The mode as `sslmode` spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Whether the mode refuses a connection without TLS.
    fn requires_tls(self) -> bool {
        matches!(self, Self::Require | Self::VerifyCa | Self::VerifyFull)
    }

    fn from_sqlx(mode: PgSslMode) -> Self {
        match mode {
            PgSslMode::Disable => Self::Disable,
            PgSslMode::Allow => Self::Allow,
            PgSslMode::Prefer => Self::Prefer,
            PgSslMode::Require => Self::Require,
            PgSslMode::VerifyCa => Self::VerifyCa,
            PgSslMode::VerifyFull => Self::VerifyFull,
        }
    }

    fn to_sqlx(self) -> PgSslMode {
        match self {
            Self::Disable => PgSslMode::Disable,
            Self::Allow => PgSslMode::Allow,
            Self::Prefer => PgSslMode::Prefer,
            Self::Require => PgSslMode::Require,
            Self::VerifyCa => PgSslMode::VerifyCa,
            Self::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not an `sslmode`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not an sslmode: expected one of disable, allow, prefer, require, verify-ca, verify-full")]
#[non_exhaustive]
pub struct UnknownSslMode;

impl FromStr for SslMode {
    type Err = UnknownSslMode;

    /// Reads `disable`, `allow`, `prefer`, `require`, `verify-ca` or
    /// `verify-full`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "disable" => Ok(Self::Disable),
            "allow" => Ok(Self::Allow),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            _ => Err(UnknownSslMode),
        }
    }
}

/// The TLS settings of a builder.
#[derive(Debug, Default)]
pub(super) struct TlsSettings {
    mode: Option<SslMode>,
    root_cert: Option<PathBuf>,
}

/// The value of the query parameter `name` in `url`, percent-decoded.
fn url_param(url: &str, name: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    let value = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)?
        .1;
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (b'+', _) => {
                decoded.push(b' ');
                i += 1;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

impl TlsSettings {
    /// The root certificate file: the builder's, else the URL's.
    fn root_cert(&self, url: &str) -> Option<PathBuf> {
        self.root_cert.clone().or_else(|| {
            ["sslrootcert", "ssl-root-cert", "ssl-ca"]
                .iter()
                .find_map(|name| url_param(url, name))
                .map(PathBuf::from)
        })
    }

    /// `options` with the builder's settings over the URL's; the root
    /// certificate file, from either, is read and checked now so that a
    /// missing or wrong file is named at start-up.
    pub(super) fn apply(
        &self,
        url: &str,
        options: PgConnectOptions,
    ) -> Result<PgConnectOptions, StoreError> {
        let options = match self.mode {
            Some(mode) => options.ssl_mode(mode.to_sqlx()),
            None => options,
        };
        let mode = SslMode::from_sqlx(options.get_ssl_mode());
        if !cfg!(feature = "tls") && mode.requires_tls() {
            return Err(StoreError::new(
                BACKEND,
                Operation::Connect,
                crate::store::StoreErrorKind::Config,
                format!("sslmode={mode} needs the crate feature `tls`"),
            ));
        }
        let Some(path) = self.root_cert(url) else {
            return Ok(options);
        };
        #[cfg(feature = "tls")]
        {
            use crate::store::tls::{TlsFile, config_error, read_certificates};
            read_certificates(TlsFile::CaFile, &path).map_err(|e| config_error(BACKEND, e))?;
        }
        Ok(options.ssl_root_cert(path))
    }

    /// A failure to connect with `options`: a failed TLS handshake that a
    /// setting explains is a configuration error naming it; anything else
    /// as usual.
    pub(super) fn connect_failed(
        &self,
        url: &str,
        options: &PgConnectOptions,
        error: sqlx::Error,
    ) -> StoreError {
        #[cfg(feature = "tls")]
        {
            let mode = SslMode::from_sqlx(options.get_ssl_mode());
            use crate::store::tls::{TlsError, Trusted, config_error, explain};
            // sqlx adds the file to the platform's roots.
            let trusted = self
                .root_cert(url)
                .map_or(Trusted::PlatformRoots, Trusted::CaFileAndPlatformRoots);
            if let Some(explained) = explain(&error, &trusted) {
                return config_error(BACKEND, explained);
            }
            // sqlx says only in words that the server declined TLS; with
            // the files checked already, that is what a TLS error without
            // a handshake behind it means.
            if mode.requires_tls() && matches!(error, sqlx::Error::Tls(_)) {
                return config_error(
                    BACKEND,
                    TlsError::NotOffered {
                        mode: mode.as_str(),
                    },
                );
            }
        }
        #[cfg(not(feature = "tls"))]
        let _ = (self, url, options);
        from_sqlx(Operation::Connect, error)
    }
}

impl PostgresStoreBuilder {
    /// How the connections use TLS. Default: the URL's `sslmode`, else
    /// [`SslMode::Prefer`]. Every mode but `disable`, `allow` and `prefer`
    /// needs the feature `tls`.
    ///
    /// ```no_run
    /// use tower_httpsession::store::postgres::{PostgresStore, SslMode};
    ///
    /// # async fn run() -> Result<(), tower_httpsession::StoreError> {
    /// let store = PostgresStore::builder("postgres://app@db.internal/app")
    ///     .with_ssl_mode(SslMode::VerifyFull)
    ///     .with_ssl_root_cert("/etc/ssl/db-ca.pem")
    ///     .connect()
    ///     .await?;
    /// # let _ = store; Ok(()) }
    /// ```
    pub fn with_ssl_mode(mut self, mode: SslMode) -> Self {
        self.tls.mode = Some(mode);
        self.pool_setting("with_ssl_mode")
    }

    /// Trusts the CA certificates in the PEM file at `path` for the
    /// server's certificate, instead of the platform's root certificates.
    /// Default: the URL's `sslrootcert`, else the platform's roots.
    ///
    /// The file is read and checked when the store connects, and again by
    /// each new connection (a renewed CA is picked up without a restart).
    pub fn with_ssl_root_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.root_cert = Some(path.into());
        self.pool_setting("with_ssl_root_cert")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "tls"))]
    #[tokio::test]
    async fn an_encrypting_mode_without_the_feature_says_which_feature() {
        let error = super::super::PostgresStore::builder("postgres://u@127.0.0.1:1/db")
            .with_ssl_mode(SslMode::VerifyFull)
            .connect_lazy()
            .expect_err("no TLS in this build");
        assert_eq!(error.kind(), crate::store::StoreErrorKind::Config);
        let cause = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(
            cause.as_deref(),
            Some("sslmode=verify-full needs the crate feature `tls`")
        );
    }

    #[test]
    fn url_params_are_found_and_decoded() {
        let url = "postgres://u:p@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem";
        assert_eq!(url_param(url, "sslmode").as_deref(), Some("verify-full"));
        assert_eq!(
            url_param(url, "sslrootcert").as_deref(),
            Some("/etc/ca x.pem")
        );
        assert_eq!(url_param(url, "sslcert"), None);
        assert_eq!(url_param("postgres://h/db", "sslmode"), None);
    }

    #[test]
    fn modes_read_as_libpq_spells_them() {
        for mode in [
            SslMode::Disable,
            SslMode::Allow,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert_eq!(mode.as_str().parse::<SslMode>().ok(), Some(mode));
            assert_eq!(SslMode::from_sqlx(mode.to_sqlx()), mode);
        }
        assert_eq!(
            "Verify-Full".parse::<SslMode>().ok(),
            Some(SslMode::VerifyFull)
        );
        assert!("verify_full".parse::<SslMode>().is_err());
    }
}
