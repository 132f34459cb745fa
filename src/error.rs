//! The error a session call can return, and the response it becomes.

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

pub(crate) use crate::store::chain;
use crate::store::{InvalidName, StoreError};

/// Why a session call failed.
///
/// It implements [`IntoResponse`], so a handler can use `?` on session calls:
/// a store outage becomes 503 with `Retry-After`, a value that no longer
/// deserializes becomes 500, a value over the configured limits 413. The
/// cause is logged with `tracing`; the session id never is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A value could not be serialized to JSON.
    #[error("attribute {name:?} could not be serialized")]
    Serialize {
        /// The attribute's name.
        name: String,
        /// The serde_json error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value does not deserialize into the type asked for.
    #[error("attribute {name:?} could not be deserialized")]
    Deserialize {
        /// The attribute's name.
        name: String,
        /// The serde_json error.
        #[source]
        source: serde_json::Error,
    },
    /// A value, name or attribute count is over the configured limit.
    #[error("attribute {name:?}: {what} is over the limit of {limit}")]
    TooLarge {
        /// The attribute's name (cut to 64 bytes).
        name: String,
        /// Which limit.
        what: Limit,
        /// The configured limit.
        limit: usize,
    },
    /// An argument is out of range, such as an idle timeout of zero.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// [`Session::update`](crate::Session::update) kept losing the race for
    /// one attribute.
    #[error("attribute {name:?} kept changing under concurrent updates")]
    Contended {
        /// The attribute's name.
        name: String,
    },
    /// The operating system could not supply random bytes for a new id.
    #[error("the operating system's random number generator failed")]
    Random(#[source] getrandom::Error),
    /// The handler asked for a `Session` but no [`SessionLayer`](crate::SessionLayer)
    /// wraps the route.
    #[error("no SessionLayer wraps this route")]
    MissingLayer,
    /// The session ended while the request was using it: another request
    /// changed its id (a login) or ended it, or it expired. The store
    /// refused the request's changes, so none of them was written. The
    /// response is `409 Conflict` and tells the browser to drop its cookie.
    #[error("the session ended while the request was using it; nothing was written")]
    Ended,
    /// Every freshly drawn session id was already taken: the random number
    /// generator is broken.
    #[error(
        "every freshly drawn session id was already taken; the random number generator is broken"
    )]
    IdsExhausted,
    /// A principal name or session label was refused: empty, too long, not
    /// UTF-8 or holding a control character. The response is
    /// `400 Bad Request`; the name itself is never logged.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// The principal already holds the most sessions its
    /// [limit](crate::SessionConfig::with_session_limit) allows, and the
    /// policy refuses new logins. Nothing was written. The response is
    /// `409 Conflict`; the session the request had is kept as it was.
    #[error(
        "this principal already holds the most sessions allowed, and new logins are refused until one ends"
    )]
    SessionLimit,
    /// Sessions were bound to principals, or listed or revoked by
    /// principal, on a store that keeps no principal index (such as the
    /// tower-sessions adapter).
    #[error(
        "the {backend} store keeps no principal index; use the memory, Redis or PostgreSQL store to bind sessions to principals"
    )]
    PrincipalsUnsupported {
        /// The store's name.
        backend: &'static str,
    },
}

/// Which configured limit a [`SessionError::TooLarge`] passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// The bytes of one value's JSON
    /// ([`SessionConfig::with_max_attribute_bytes`](crate::SessionConfig::with_max_attribute_bytes)).
    ValueBytes,
    /// The bytes of one attribute name
    /// ([`SessionConfig::with_max_name_bytes`](crate::SessionConfig::with_max_name_bytes)).
    NameBytes,
    /// The number of attributes in one session
    /// ([`SessionConfig::with_max_attributes`](crate::SessionConfig::with_max_attributes)).
    AttributeCount,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ValueBytes => "value bytes",
            Self::NameBytes => "name bytes",
            Self::AttributeCount => "attribute count",
        })
    }
}

impl SessionError {
    /// The status a request gets for this error.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Store(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Contended { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Ended | Self::SessionLimit => StatusCode::CONFLICT,
            Self::InvalidName(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn too_large(name: &str, what: Limit, limit: usize) -> Self {
        let mut cut = name.len().min(64);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        Self::TooLarge {
            name: name[..cut].to_owned(),
            what,
            limit,
        }
    }

    /// The error as logged. serde_json's messages quote the value they
    /// failed on, which may be a secret kept in the session: for those, only
    /// the kind and position of the failure are logged.
    fn log_text(&self) -> String {
        match self {
            Self::Serialize { source, .. } | Self::Deserialize { source, .. } => format!(
                "{self}: {:?} error at line {}, column {}",
                source.classify(),
                source.line(),
                source.column()
            ),
            _ => chain(self),
        }
    }

    /// The response for this error, with `Retry-After` set to `retry_after`
    /// when the error is passing.
    pub(crate) fn to_response(&self, retry_after: Duration) -> Response {
        let status = self.status();
        let error = self.log_text();
        if status.is_server_error() {
            tracing::error!(%error, status = status.as_u16(), "session error");
        } else {
            tracing::warn!(%error, status = status.as_u16(), "session error");
        }
        // These say what to do and quote nothing the user sent.
        let body = match self {
            Self::SessionLimit | Self::InvalidName(_) => self.to_string(),
            _ => status.canonical_reason().unwrap_or("error").to_owned(),
        };
        let mut response = (status, body).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let secs = retry_after.as_secs().max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let mut response = self.to_response(Duration::from_secs(1));
        response
            .extensions_mut()
            .insert(SessionFailure(Arc::new(self)));
        response
    }
}

/// Put in a response's extensions when the session layer replaced or
/// answered it because of a [`SessionError`], for outer layers to inspect.
#[derive(Debug, Clone)]
pub struct SessionFailure(pub Arc<SessionError>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Operation, StoreErrorKind};

    #[test]
    fn store_outage_is_503_with_retry_after() {
        let e = SessionError::from(StoreError::without_source(
            "redis",
            Operation::Load,
            StoreErrorKind::Unavailable,
        ));
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert!(response.extensions().get::<SessionFailure>().is_some());
    }

    #[test]
    fn bad_value_is_500_and_large_is_413() {
        let source = serde_json::from_str::<u8>("\"x\"").unwrap_err();
        let e = SessionError::Deserialize {
            name: "cart".into(),
            source,
        };
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let e = SessionError::too_large(&"é".repeat(100), Limit::NameBytes, 256);
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        if let SessionError::TooLarge { name, .. } = e {
            assert_eq!(name.len(), 64);
        }
    }

    #[test]
    fn logs_never_quote_a_value() {
        let source = serde_json::from_str::<u8>("\"csrf-secret-123\"").unwrap_err();
        assert!(source.to_string().contains("csrf-secret-123"));
        let e = SessionError::Deserialize {
            name: "csrf".into(),
            source,
        };
        let text = e.log_text();
        assert!(text.starts_with("attribute \"csrf\" could not be deserialized: Data error"));
        assert!(!text.contains("csrf-secret-123"), "{text}");
    }

    #[test]
    fn chain_joins_sources() {
        let io = std::io::Error::other("refused");
        let e = StoreError::new(
            "postgres",
            Operation::Apply,
            StoreErrorKind::Unavailable,
            io,
        );
        assert_eq!(
            chain(&e),
            "postgres store: apply failed: unavailable: refused"
        );
    }
}
