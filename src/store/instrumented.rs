//! The store as the session layer and the health endpoints call it: every
//! call in a `tracing` span and, with the feature `metrics`, timed and its
//! errors counted.
//!
//! [`Instrumented`] is not a [`SessionStore`]: its methods are inherent and
//! call the store they wrap directly, so it adds neither a dynamic call nor
//! a boxed future to a store call. The span is at debug level: a subscriber
//! that does not want it costs one check of the call site's interest.
//!
//! Names and attributes follow OpenTelemetry's semantic conventions for
//! database clients. No key, verifier, attribute name or value becomes a
//! field or a label: only the store's kind, the operation and the error's
//! kind do.

use std::fmt;
use std::sync::Arc;

use tracing::Instrument as _;

use super::{
    Applied, ChangeSet, Created, HealthStatus, PartialRecord, Record, SessionStore, StoreError,
    StoreErrorKind, StoreHealth, StoreKey, Swap, VerifierHash,
};

/// `error.type` of a health check that failed, whose kind the report does
/// not keep: OpenTelemetry's value for an error of no listed type.
#[cfg_attr(
    not(feature = "health"),
    allow(dead_code, reason = "only the health endpoints check the store")
)]
const OTHER_ERROR: &str = "_OTHER";

/// The `db.system.name` of a store whose [`SessionStore::backend`] is
/// `backend`: OpenTelemetry's name where it has one (`postgresql`,
/// `redis`), `memory` for the in-process store, `tower_sessions` for the
/// adapter, and a third-party store's own name as it is.
#[must_use]
pub(crate) fn system_name(backend: &'static str) -> &'static str {
    match backend {
        "postgres" => "postgresql",
        "tower-sessions" => "tower_sessions",
        other => other,
    }
}

/// The `error.type` of a store failure: its kind in snake case.
#[must_use]
pub(crate) fn error_type(kind: StoreErrorKind) -> &'static str {
    match kind {
        StoreErrorKind::Unavailable => "unavailable",
        StoreErrorKind::Corrupt => "corrupt",
        StoreErrorKind::Backend => "backend",
        StoreErrorKind::Config => "config",
        StoreErrorKind::Unsupported => "unsupported",
    }
}

/// A store operation, as `db.operation.name` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Load,
    LoadSome,
    Create,
    Apply,
    CompareAndSet,
    Delete,
    Health,
    PrincipalSessions,
    Revoke,
}

impl Op {
    /// Every operation, in the order of their handles.
    #[cfg(feature = "metrics")]
    const ALL: [Self; 9] = [
        Self::Load,
        Self::LoadSome,
        Self::Create,
        Self::Apply,
        Self::CompareAndSet,
        Self::Delete,
        Self::Health,
        Self::PrincipalSessions,
        Self::Revoke,
    ];

    /// The value of `db.operation.name`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::LoadSome => "load_some",
            Self::Create => "create",
            Self::Apply => "apply",
            Self::CompareAndSet => "compare_and_set",
            Self::Delete => "delete",
            Self::Health => "health",
            Self::PrincipalSessions => "principal_sessions",
            Self::Revoke => "revoke",
        }
    }
}

/// A shared store with every call traced and, with the feature `metrics`,
/// measured. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Instrumented {
    inner: Arc<dyn SessionStore>,
    system: &'static str,
    #[cfg(feature = "metrics")]
    handles: Arc<recorded::Handles>,
}

impl fmt::Debug for Instrumented {
    /// The store's own `Debug`: the wrapper adds nothing worth printing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// A debug-level span for one store call, in OpenTelemetry's terms.
macro_rules! store_span {
    ($system:expr, $op:expr) => {
        tracing::debug_span!(
            "session_store",
            otel.name = $op.name(),
            otel.kind = "client",
            db.system.name = $system,
            db.operation.name = $op.name(),
            "error.type" = tracing::field::Empty,
        )
    };
}

impl Instrumented {
    /// `store`, traced, and with the feature `metrics` measured through the
    /// recorder installed now: one installed later is not seen.
    pub(crate) fn new(store: Arc<dyn SessionStore>) -> Self {
        let system = system_name(store.backend());
        Self {
            inner: store,
            system,
            #[cfg(feature = "metrics")]
            handles: Arc::new(recorded::Handles::new(system)),
        }
    }

    /// The wrapped store's [`backend`](SessionStore::backend).
    pub(crate) fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    /// Runs one store call in its span, timing it and counting its error.
    async fn observe<T>(
        &self,
        op: Op,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let span = store_span!(self.system, op);
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        let outcome = call.instrument(span.clone()).await;
        #[cfg(feature = "metrics")]
        let elapsed = started.elapsed();
        match &outcome {
            Ok(_) => {
                #[cfg(feature = "metrics")]
                self.handles.succeeded(op, elapsed);
            }
            Err(error) => {
                let kind = error_type(error.kind());
                span.record("error.type", kind);
                #[cfg(feature = "metrics")]
                self.handles.failed(op, kind, elapsed);
            }
        }
        outcome
    }

    /// [`SessionStore::load`].
    pub(crate) async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.observe(Op::Load, self.inner.load(key)).await
    }

    /// [`SessionStore::load_some`].
    pub(crate) async fn load_some(
        &self,
        key: &StoreKey,
        names: &[&str],
    ) -> Result<Option<PartialRecord>, StoreError> {
        self.observe(Op::LoadSome, self.inner.load_some(key, names))
            .await
    }

    /// [`SessionStore::create`].
    pub(crate) async fn create(
        &self,
        key: &StoreKey,
        record: &Record,
        limit: Option<&crate::store::SessionLimit>,
    ) -> Result<Created, StoreError> {
        self.observe(Op::Create, self.inner.create(key, record, limit))
            .await
    }

    /// [`SessionStore::apply`].
    pub(crate) async fn apply(
        &self,
        key: &StoreKey,
        changes: &ChangeSet,
    ) -> Result<Applied, StoreError> {
        self.observe(Op::Apply, self.inner.apply(key, changes))
            .await
    }

    /// [`SessionStore::compare_and_set`].
    pub(crate) async fn compare_and_set(
        &self,
        key: &StoreKey,
        verifier: &VerifierHash,
        name: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<Swap, StoreError> {
        let call = self
            .inner
            .compare_and_set(key, verifier, name, expected, new);
        self.observe(Op::CompareAndSet, call).await
    }

    /// [`SessionStore::delete`].
    pub(crate) async fn delete(
        &self,
        key: &StoreKey,
        verifier: &VerifierHash,
    ) -> Result<(), StoreError> {
        self.observe(Op::Delete, self.inner.delete(key, verifier))
            .await
    }

    /// [`SessionStore::supports_principals`].
    pub(crate) fn supports_principals(&self) -> bool {
        self.inner.supports_principals()
    }

    /// [`SessionStore::principal_sessions`].
    pub(crate) async fn principal_sessions(
        &self,
        principal: &crate::store::Principal,
    ) -> Result<Vec<crate::store::PrincipalSession>, StoreError> {
        self.observe(
            Op::PrincipalSessions,
            self.inner.principal_sessions(principal),
        )
        .await
    }

    /// [`SessionStore::revoke`].
    pub(crate) async fn revoke(
        &self,
        principal: &crate::store::Principal,
        which: crate::store::Revocation<'_>,
    ) -> Result<u64, StoreError> {
        self.observe(Op::Revoke, self.inner.revoke(principal, which))
            .await
    }

    /// [`SessionStore::health`]. With the feature `metrics`, the report's
    /// own latency is the duration recorded and its session count sets the
    /// live sessions gauge: the metrics and the health details show one
    /// sample.
    #[cfg_attr(
        not(feature = "health"),
        allow(dead_code, reason = "only the health endpoints check the store")
    )]
    pub(crate) async fn health(&self) -> StoreHealth {
        let op = Op::Health;
        let span = store_span!(self.system, op);
        let health = self.inner.health().instrument(span.clone()).await;
        if health.status == HealthStatus::Down {
            span.record("error.type", OTHER_ERROR);
        }
        #[cfg(feature = "metrics")]
        self.handles.checked(&health);
        health
    }
}

/// The metric handles, registered once with the recorder installed when
/// the store was wrapped.
#[cfg(feature = "metrics")]
mod recorded {
    use std::time::Duration;

    use metrics::{Gauge, Histogram, Unit};

    use super::{HealthStatus, OTHER_ERROR, Op, StoreHealth};

    /// Histogram of store call durations, in seconds.
    const OPERATION_DURATION: &str = "db.client.operation.duration";
    /// Counter of failed store calls.
    const STORE_ERRORS: &str = "httpsession.store.errors";
    /// Gauge of the sessions the store holds, as its last health check counted.
    const LIVE_SESSIONS: &str = "httpsession.sessions.live";
    /// Attribute: the kind of store.
    const SYSTEM: &str = "db.system.name";
    /// Attribute: the store operation.
    const OPERATION: &str = "db.operation.name";
    /// Attribute: the kind of failure.
    const ERROR_TYPE: &str = "error.type";

    pub(super) struct Handles {
        system: &'static str,
        /// The duration of successful calls, by [`Op::ALL`]'s order.
        durations: [Histogram; 9],
        /// Set by the health check (feature `health`).
        #[cfg_attr(
            not(feature = "health"),
            allow(dead_code, reason = "only the health endpoints check the store")
        )]
        live: Gauge,
    }

    impl Handles {
        pub(super) fn new(system: &'static str) -> Self {
            metrics::describe_histogram!(
                OPERATION_DURATION,
                Unit::Seconds,
                "Duration of session store operations."
            );
            metrics::describe_counter!(
                STORE_ERRORS,
                Unit::Count,
                "Session store operations that failed, by error.type."
            );
            metrics::describe_gauge!(
                LIVE_SESSIONS,
                Unit::Count,
                "Sessions the store holds, as its last health check counted."
            );
            Self {
                system,
                durations: Op::ALL.map(|op| {
                    metrics::histogram!(OPERATION_DURATION, SYSTEM => system, OPERATION => op.name())
                }),
                live: metrics::gauge!(LIVE_SESSIONS, SYSTEM => system),
            }
        }

        pub(super) fn succeeded(&self, op: Op, elapsed: Duration) {
            // `Op::ALL` lists the operations in their declared order.
            self.durations[op as usize].record(elapsed);
        }

        /// Errors are rare: their series are looked up when they happen.
        pub(super) fn failed(&self, op: Op, kind: &'static str, elapsed: Duration) {
            let labels = [
                (SYSTEM, self.system),
                (OPERATION, op.name()),
                (ERROR_TYPE, kind),
            ];
            metrics::histogram!(OPERATION_DURATION, &labels).record(elapsed);
            metrics::counter!(STORE_ERRORS, &labels).increment(1);
        }

        #[cfg_attr(
            not(feature = "health"),
            allow(dead_code, reason = "only the health endpoints check the store")
        )]
        pub(super) fn checked(&self, health: &StoreHealth) {
            match health.status {
                HealthStatus::Up => {
                    self.succeeded(Op::Health, health.latency);
                    if let Some(sessions) = health.sessions {
                        self.live.set(sessions as f64);
                    }
                }
                HealthStatus::Down => self.failed(Op::Health, OTHER_ERROR, health.latency),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;

    use tracing_subscriber::fmt::format::FmtSpan;

    use super::*;
    use crate::store::MemoryStore;

    /// What the subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Whether `text` shows `field` with `value`, quoted or not.
    fn shows(text: &str, field: &str, value: &str) -> bool {
        text.contains(&format!("{field}=\"{value}\""))
            || text.contains(&format!("{field}={value} "))
    }

    #[tokio::test]
    async fn every_call_is_a_debug_span_named_by_store_and_operation() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_span_events(FmtSpan::CLOSE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let store = Instrumented::new(Arc::new(MemoryStore::default()));
        let key = StoreKey::random().unwrap();
        assert!(store.load_some(&key, &["a"]).await.unwrap().is_none());
        let verifier = VerifierHash::random().unwrap();
        store.delete(&key, &verifier).await.unwrap();

        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("session_store").count(), 2, "{text}");
        assert!(shows(&text, "db.system.name", "memory"), "{text}");
        assert!(shows(&text, "db.operation.name", "load_some"), "{text}");
        assert!(shows(&text, "db.operation.name", "delete"), "{text}");
        assert!(!text.contains(key.as_str()), "no key in a span: {text}");
    }

    #[test]
    fn system_names_are_opentelemetry_s() {
        assert_eq!(system_name("postgres"), "postgresql");
        assert_eq!(system_name("redis"), "redis");
        assert_eq!(system_name("memory"), "memory");
        assert_eq!(system_name("tower-sessions"), "tower_sessions");
        assert_eq!(system_name("dynamo"), "dynamo");
        assert_eq!(error_type(StoreErrorKind::Unavailable), "unavailable");
    }
}
