//! TLS to the stores (feature `tls`): what Redis and PostgreSQL share.
//!
//! Both stores speak TLS through [rustls](https://docs.rs/rustls) with the
//! `ring` crypto provider, so no OpenSSL is needed to build. They verify the
//! server's certificate chain against the platform's root certificates, or
//! against a CA file (PEM) when one is given, and check that the certificate
//! names the host of the URL. A client certificate and key (PEM) add mutual
//! TLS.
//!
//! PostgreSQL's connections use `ring` by themselves. Redis's take the
//! process's default rustls provider: if the app has installed none when a
//! `rediss://` store connects, the store installs `ring`'s, so an app that
//! wants another provider installs it first
//! (`CryptoProvider::install_default`).
//!
//! Files named in the settings are read and checked when the store
//! connects, and a handshake that fails while it connects stops it with a
//! [`TlsError`] as the cause of a [`StoreErrorKind::Config`] error: which
//! file, or which check, failed.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{AlertDescription, CertificateError};

use super::{Operation, StoreError, StoreErrorKind};

/// Why a TLS connection to a store could not be set up.
///
/// Never holds a key or a password; file paths are shown as given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file named in the settings could not be read.
    #[error("cannot read the {file} {path}")]
    Unreadable {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A file named in the settings holds nothing of what it should.
    #[error("the {file} {path} holds no {expected} in PEM form")]
    NotPem {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// What it should hold.
        expected: &'static str,
    },
    /// TLS settings given for a URL that does not ask for TLS.
    #[error("TLS settings need a URL that asks for TLS: {expected}")]
    NotTlsUrl {
        /// What the URL should look like.
        expected: &'static str,
    },
    /// The server's certificate did not verify: unknown issuer, wrong
    /// host name, expired.
    #[error(
        "the server's certificate did not verify against {trusted}: {reason}; \
         check the CA file and that the URL's host is a name the certificate holds"
    )]
    ServerNotTrusted {
        /// What it was checked against.
        trusted: Trusted,
        /// Which check failed, in words.
        reason: String,
    },
    /// The server refused the client certificate, or wanted one and got
    /// none.
    #[error(
        "the server refused the client certificate ({alert}); \
         check the client certificate and key, and the CA the server trusts for clients"
    )]
    ClientRefused {
        /// The TLS alert the server sent.
        alert: String,
    },
    /// The PostgreSQL server declined TLS, which the `sslmode` requires.
    #[error(
        "the server does not offer TLS, which sslmode={mode} requires; \
         turn ssl on in the server or check the host and port"
    )]
    NotOffered {
        /// The `sslmode` of the connection.
        mode: &'static str,
    },
    /// The server did not speak TLS.
    #[error("the server did not answer in TLS; check that the port serves TLS")]
    NotTls,
}

/// A file of the TLS settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFile {
    /// The CA certificates the server's certificate is checked against.
    CaFile,
    /// The client's certificate chain.
    ClientCert,
    /// The client's private key.
    ClientKey,
}

impl fmt::Display for TlsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CaFile => "CA file",
            Self::ClientCert => "client certificate file",
            Self::ClientKey => "client key file",
        })
    }
}

/// What a server's certificate is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trusted {
    /// The platform's root certificates.
    PlatformRoots,
    /// The CA file at this path.
    CaFile(PathBuf),
    /// The CA file at this path besides the platform's root certificates,
    /// as PostgreSQL's connections add it.
    CaFileAndPlatformRoots(PathBuf),
}

impl fmt::Display for Trusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PlatformRoots => f.write_str("the platform's root certificates"),
            Self::CaFile(path) => write!(f, "the CA file {}", path.display()),
            Self::CaFileAndPlatformRoots(path) => write!(
                f,
                "the CA file {} and the platform's root certificates",
                path.display()
            ),
        }
    }
}

/// A configuration error of `backend` at connect, caused by `error`.
pub(crate) fn config_error(backend: &'static str, error: TlsError) -> StoreError {
    StoreError::new(backend, Operation::Connect, StoreErrorKind::Config, error)
}

/// Reads `path`, which must hold at least one PEM `expected` item as
/// `check` finds it; answers the file's bytes.
fn read_pem(
    file: TlsFile,
    path: &Path,
    expected: &'static str,
    check: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Unreadable {
        file,
        path: path.to_owned(),
        source,
    })?;
    if check(&bytes) {
        Ok(bytes)
    } else {
        Err(TlsError::NotPem {
            file,
            path: path.to_owned(),
            expected,
        })
    }
}

/// Whether `pem` holds at least one certificate and nothing unreadable.
fn holds_certificates(pem: &[u8]) -> bool {
    let mut certificates = CertificateDer::pem_slice_iter(pem).peekable();
    certificates.peek().is_some() && certificates.all(|c| c.is_ok())
}

/// Reads a CA file or a client certificate file: PEM certificates.
pub(crate) fn read_certificates(file: TlsFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    read_pem(file, path, "certificate", holds_certificates)
}

/// Reads a client key file: one PEM private key (PKCS#8, PKCS#1 or SEC1).
#[cfg(feature = "redis")]
pub(crate) fn read_private_key(path: &Path) -> Result<Vec<u8>, TlsError> {
    read_pem(TlsFile::ClientKey, path, "private key", |pem| {
        rustls::pki_types::PrivateKeyDer::from_pem_slice(pem).is_ok()
    })
}

/// Makes `ring` the process's rustls provider unless the app installed
/// one: rustls needs one chosen when a build holds more than one.
#[cfg(feature = "redis")]
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may install one between the check and this call;
        // then that one stays, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The rustls error somewhere in `error`'s chain, looking inside I/O
/// errors too (whose `source` skips the error they wrap).
fn find_rustls<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        // An I/O error's `source` skips the error it wraps, and so does a
        // shared error's (redis keeps its causes in an `Arc`).
        let wrapped: Option<&(dyn StdError + 'static)> = match error.downcast_ref::<io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => error
                .downcast_ref::<Arc<dyn StdError + Send + Sync>>()
                .map(|shared| shared.as_ref() as _),
        };
        if let Some(found) = wrapped.and_then(find_rustls) {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// What a failed TLS handshake means, when `error` holds one that a
/// setting explains: the server's certificate, the client's, or a server
/// that does not speak TLS.
pub(crate) fn explain(error: &(dyn StdError + 'static), trusted: &Trusted) -> Option<TlsError> {
    let tls = find_rustls(error)?;
    match tls {
        rustls::Error::InvalidCertificate(reason) => Some(TlsError::ServerNotTrusted {
            trusted: trusted.clone(),
            reason: certificate_reason(reason),
        }),
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError),
        ) => Some(TlsError::ClientRefused {
            alert: format!("{alert:?}"),
        }),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            Some(TlsError::NotTls)
        }
        _ => None,
    }
}

/// A certificate check's failure in words.
fn certificate_reason(reason: &CertificateError) -> String {
    match reason {
        CertificateError::UnknownIssuer => "signed by an unknown CA".to_owned(),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "not issued for the URL's host".to_owned()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired".to_owned(),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "not valid yet".to_owned()
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named_with_its_role() {
        let error = read_certificates(TlsFile::CaFile, Path::new("/nonexistent/ca.pem"))
            .expect_err("no such file");
        assert_eq!(
            error.to_string(),
            "cannot read the CA file /nonexistent/ca.pem"
        );
        assert!(error.source().is_some());
    }

    #[test]
    fn an_io_error_wrapping_a_rustls_error_is_explained() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = io::Error::new(io::ErrorKind::InvalidData, inner);
        let explained = explain(&io, &Trusted::PlatformRoots).expect("explained");
        assert_eq!(
            explained.to_string(),
            "the server's certificate did not verify against the platform's root \
             certificates: signed by an unknown CA; check the CA file and that the \
             URL's host is a name the certificate holds"
        );
        let other = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(explain(&other, &Trusted::PlatformRoots).is_none());
    }
}
