use std::error::Error as StdError;
use std::fmt;

/// A boxed error cause.
type Source = Box<dyn StdError + Send + Sync + 'static>;

/// What a store was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// Connecting or building the store.
    Connect,
    /// Applying the schema.
    Migrate,
    /// [`SessionStore::load`](super::SessionStore::load).
    Load,
    /// [`SessionStore::create`](super::SessionStore::create).
    Create,
    /// [`SessionStore::apply`](super::SessionStore::apply).
    Apply,
    /// [`SessionStore::compare_and_set`](super::SessionStore::compare_and_set).
    CompareAndSet,
    /// [`SessionStore::delete`](super::SessionStore::delete).
    Delete,
    /// [`SessionStore::health`](super::SessionStore::health).
    Health,
    /// Removing expired sessions.
    Cleanup,
    /// [`SessionStore::principal_sessions`](super::SessionStore::principal_sessions).
    ListPrincipal,
    /// [`SessionStore::revoke`](super::SessionStore::revoke).
    Revoke,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Migrate => "migrate",
            Self::Load => "load",
            Self::Create => "create",
            Self::Apply => "apply",
            Self::CompareAndSet => "compare-and-set",
            Self::Delete => "delete",
            Self::Health => "health",
            Self::Cleanup => "cleanup",
            Self::ListPrincipal => "list a principal's sessions",
            Self::Revoke => "revoke",
        })
    }
}

/// The kind of a store failure, which decides the HTTP status a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store could not be reached, or did not answer in time. Passing:
    /// requests get 503 with `Retry-After`.
    Unavailable,
    /// A stored record could not be decoded.
    Corrupt,
    /// The store answered with an error.
    Backend,
    /// The store's configuration is wrong.
    Config,
    /// The store does not offer the operation, such as a principal index.
    Unsupported,
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unavailable => "unavailable",
            Self::Corrupt => "corrupt record",
            Self::Backend => "backend error",
            Self::Config => "configuration error",
            Self::Unsupported => "not supported by this store",
        })
    }
}

/// A store failure: which backend, which operation, what kind, and the cause.
#[derive(Debug)]
pub struct StoreError {
    backend: &'static str,
    operation: Operation,
    kind: StoreErrorKind,
    source: Option<Source>,
}

impl StoreError {
    /// A failure of `backend` during `operation`, caused by `source`.
    pub fn new(
        backend: &'static str,
        operation: Operation,
        kind: StoreErrorKind,
        source: impl Into<Source>,
    ) -> Self {
        Self {
            backend,
            operation,
            kind,
            source: Some(source.into()),
        }
    }

    /// A failure with no underlying error to keep.
    #[must_use]
    pub fn without_source(
        backend: &'static str,
        operation: Operation,
        kind: StoreErrorKind,
    ) -> Self {
        Self {
            backend,
            operation,
            kind,
            source: None,
        }
    }

    /// The store's name, such as `"redis"`.
    #[must_use]
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// What the store was doing.
    #[must_use]
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// Whether the store was unreachable or too slow: a passing condition
    /// that a retry may fix.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        self.kind == StoreErrorKind::Unavailable
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} store: {} failed: {}",
            self.backend, self.operation, self.kind
        )
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// An error and its sources, joined by `": "`, for logs and health reports.
pub(crate) fn chain(error: &(dyn StdError + 'static)) -> String {
    use std::fmt::Write as _;

    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_backend_and_operation_and_keeps_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = StoreError::new("redis", Operation::Load, StoreErrorKind::Unavailable, io);
        assert_eq!(e.to_string(), "redis store: load failed: unavailable");
        assert!(e.is_unavailable());
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("refused")
        );
    }
}
