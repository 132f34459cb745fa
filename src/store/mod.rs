//! The store contract and the stores that keep it.
//!
//! A [`SessionStore`] keeps records keyed by [`StoreKey`]. The session layer
//! calls it at most twice per request: one [`load`](SessionStore::load) when
//! the handler first touches the session, and one
//! [`create`](SessionStore::create) or [`apply`](SessionStore::apply) when the
//! response goes out, and only if something changed.
//!
//! # The contract
//!
//! Every store, whatever keeps its bytes, promises the following. The
//! behavioural suite in [`testing`] (feature `testing`) checks each promise
//! against a live store, and every store in this crate runs it.
//!
//! - **Expired records are gone.** `load`, `apply` and `compare_and_set`
//!   treat a record whose `expires_at` has passed exactly like a missing one.
//! - **`create` never overwrites.** If the key exists, it answers
//!   [`Created::KeyTaken`] and writes nothing; the layer draws a new id.
//! - **`apply` writes only the delta, atomically.** Attributes named in the
//!   [`ChangeSet`] are written or deleted; every other attribute keeps
//!   whatever another request wrote meanwhile. All of it lands or none of it.
//! - **`apply` never resurrects.** If the record was deleted or expired
//!   meanwhile, it answers [`Applied::Gone`] and writes nothing.
//! - **`apply` checks its guards in the same atomic step.** A stored
//!   verifier hash other than the [required](ChangeSet::required_verifier)
//!   one is answered as [`Applied::Stale`]; a change that adds names past the
//!   [attribute limit](ChangeSet::attribute_limit) as
//!   [`Applied::TooManyAttributes`]; either way nothing is written. A
//!   [`Touch`] sets the last access and moves the expiry to
//!   [`Touch::expires_at`] of the stored creation time and idle timeout
//!   (the new one if the change sets it). So a request may write to a
//!   session without reading it first.
//! - **A stale verifier changes nothing.** Every operation that changes a
//!   session (`apply`, `compare_and_set`, `delete`) carries the verifier hash
//!   of the cookie that asked for it and compares it with the stored one in
//!   the same atomic step as the write: after the id was changed (or the
//!   session ended), a request still carrying the old cookie, even one that
//!   read the session before the change, writes nothing. `apply` answers
//!   [`Applied::Stale`] for a live session whose verifier differs,
//!   `compare_and_set` answers [`Swap::Gone`], `delete` deletes nothing.
//! - **`compare_and_set` is atomic** for one attribute: it swaps only if the
//!   stored value is still the expected one (`None`: absent), and otherwise
//!   answers the current value so the caller can retry.
//! - **`delete` is idempotent.**
//! - **Values round-trip exactly**: the serde_json text given is the text
//!   returned, whatever characters it holds.
//! - **Errors say what failed**: [`StoreError`] names the backend and the
//!   operation and keeps the cause as its source.
//!
//! # Principals
//!
//! A store that [supports principals](SessionStore::supports_principals)
//! also keeps an index from each principal (a user) to its sessions. Its
//! rules, checked by the [`principal_suite!`](crate::principal_suite):
//!
//! - **Bindings are indexed before they are live.** A `create` of a record
//!   with a [principal](Record::principal), or an `apply` with a
//!   [binding](ChangeSet::binding), enters the session in the principal's
//!   index in the same atomic step, or, where the index lives apart from the
//!   session (a Redis Cluster keeps it in the principal's own slot), first:
//!   a crash between the two writes leaves an index entry without its
//!   session, which readers skip and prune, never a live session missing
//!   from the index. `load` and `load_some` return the principal and the
//!   [label](Record::label).
//! - **The limit holds under concurrency.** With a [`SessionLimit`] of `k`,
//!   however many bindings of one principal race, no more than `k` of its
//!   sessions are live afterwards. [`LimitPolicy::EvictLeastRecentlyUsed`]
//!   deletes the least recently used others at once (deleted, not marked);
//!   [`LimitPolicy::RefuseNewLogin`] writes nothing and answers
//!   `LimitReached`. The guards (verifier, attribute limit, a gone session)
//!   are checked before anybody is evicted.
//! - **Listing shows only live sessions** still bound to the principal.
//! - **Revocation checks the principal** in the same atomic step as each
//!   deletion: a key that names another principal's session, or none,
//!   deletes nothing. After `revoke` returns, the session is gone for every
//!   request, including those already in flight.
//! - **The index does not leak.** Deleted and expired sessions leave it
//!   without a sweep of the whole store: a principal's index holds its live
//!   sessions plus a small bounded slack.

mod changes;
mod error;
pub(crate) mod instrumented;
pub(crate) mod key;
pub mod memory;
pub mod policy;
#[cfg(feature = "postgres")]
pub mod postgres;
mod principal;
mod record;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "tls")]
#[cfg_attr(
    not(any(feature = "redis", feature = "postgres")),
    allow(dead_code, unused_imports)
)]
pub mod tls;
#[cfg(feature = "tower-sessions")]
pub mod tower_sessions;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

pub use self::changes::{ChangeSet, ChangeSetBuilder, Touch};
pub(crate) use self::error::chain;
pub use self::error::{Operation, StoreError, StoreErrorKind};
pub use self::key::{StoreKey, VerifierHash};
pub use self::memory::MemoryStore;
pub use self::principal::{
    Binding, InvalidName, InvalidSessionRef, Label, LimitPolicy, MAX_LABEL_BYTES,
    MAX_PRINCIPAL_BYTES, Principal, PrincipalSession, Revocation, SessionLimit, SessionRef,
};
pub use self::record::{PartialRecord, Record};

/// What [`SessionStore::create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum Created {
    /// The record was stored.
    Stored,
    /// A record with that key exists; nothing was written.
    KeyTaken,
    /// The record was bound to a principal whose
    /// [limit](SessionLimit) refuses new sessions
    /// ([`LimitPolicy::RefuseNewLogin`]); nothing was written.
    LimitReached,
    /// The record was bound to a principal, and a concurrent login of the
    /// same principal evicted it under the principal's limit before it was
    /// stored; nothing was written.
    Evicted,
}

/// What [`SessionStore::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum Applied {
    /// The change set was written.
    Written,
    /// The session was deleted or expired meanwhile; nothing was written.
    Gone,
    /// The session is live but its stored verifier hash is not the
    /// [required](ChangeSet::required_verifier) one: its id was changed
    /// after the request's cookie was issued. Nothing was written.
    Stale,
    /// The change would add names past the attribute limit; nothing was
    /// written.
    TooManyAttributes,
    /// The change binds the session to a principal whose
    /// [limit](SessionLimit) refuses new sessions
    /// ([`LimitPolicy::RefuseNewLogin`]); nothing was written.
    LimitReached,
}

/// What [`SessionStore::compare_and_set`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum Swap {
    /// The stored value was the expected one and now is the new one.
    Swapped,
    /// The stored value differs from the expected one; nothing was written.
    Mismatch {
        /// The value the store holds now (`None`: absent).
        current: Option<String>,
    },
    /// The session was deleted or expired, or its stored verifier hash is
    /// not the one given; nothing was written.
    Gone,
}

/// Whether a store answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthStatus {
    /// The store answered.
    Up,
    /// The store did not answer, or answered with an error.
    Down,
}

/// The result of [`SessionStore::health`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreHealth {
    /// Up or down.
    pub status: HealthStatus,
    /// The store's name, such as `"redis"`.
    pub backend: &'static str,
    /// How long the check took.
    pub latency: Duration,
    /// What went wrong, when down.
    pub error: Option<String>,
    /// How many sessions the store holds, where it can count cheaply.
    pub sessions: Option<u64>,
}

impl StoreHealth {
    /// A store that answered in `latency`, holding `sessions` if it can
    /// count them cheaply.
    #[must_use]
    pub fn up(backend: &'static str, latency: Duration, sessions: Option<u64>) -> Self {
        Self {
            status: HealthStatus::Up,
            backend,
            latency,
            error: None,
            sessions,
        }
    }

    /// A store that failed after `latency`, with what went wrong.
    #[must_use]
    pub fn down(backend: &'static str, latency: Duration, error: impl Into<String>) -> Self {
        Self {
            status: HealthStatus::Down,
            backend,
            latency,
            error: Some(error.into()),
            sessions: None,
        }
    }

    /// Runs `check` and reports its outcome with the time it took.
    pub async fn measure<F>(backend: &'static str, check: F) -> Self
    where
        F: Future<Output = Result<Option<u64>, StoreError>>,
    {
        let started = tokio::time::Instant::now();
        let outcome = check.await;
        let latency = started.elapsed();
        match outcome {
            Ok(sessions) => Self::up(backend, latency, sessions),
            Err(e) => Self::down(backend, latency, error::chain(&e)),
        }
    }
}

/// Where sessions live. Object safe: the layer holds an
/// `Arc<dyn SessionStore>`. See the [module docs](self) for the contract.
#[async_trait]
pub trait SessionStore: fmt::Debug + Send + Sync + 'static {
    /// A short name for logs and health reports, such as `"redis"`.
    fn backend(&self) -> &'static str;

    /// Loads a live record, or `None` if there is none (or it expired).
    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError>;

    /// Loads a live record's metadata and only the attributes named in
    /// `names` (those of them that exist), in one round trip: what a request
    /// that reads or writes a few attributes of a large session needs.
    ///
    /// The default loads the whole record and drops the rest; stores that
    /// can read a subset override it.
    async fn load_some(
        &self,
        key: &StoreKey,
        names: &[&str],
    ) -> Result<Option<PartialRecord>, StoreError> {
        Ok(self
            .load(key)
            .await?
            .map(|record| PartialRecord::from_record(record, names)))
    }

    /// Stores a new record unless the key is taken.
    ///
    /// A record [bound](Record::principal) to a principal is entered in the
    /// principal's index in the same operation, or (where the index lives
    /// apart from the session) before the record is written, and `limit`
    /// (if any) is enforced: see the [module docs](self).
    async fn create(
        &self,
        key: &StoreKey,
        record: &Record,
        limit: Option<&SessionLimit>,
    ) -> Result<Created, StoreError>;

    /// Applies a change set atomically to a live record.
    async fn apply(&self, key: &StoreKey, changes: &ChangeSet) -> Result<Applied, StoreError>;

    /// Sets one attribute to `new` (`None`: removes it) if the session's
    /// stored verifier hash is `verifier` and the attribute currently holds
    /// `expected` (`None`: absent). A live session with another verifier is
    /// answered as [`Swap::Gone`].
    async fn compare_and_set(
        &self,
        key: &StoreKey,
        verifier: &VerifierHash,
        name: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<Swap, StoreError>;

    /// Deletes a record if its stored verifier hash is `verifier`; deleting
    /// a missing record, or one with another verifier, deletes nothing and
    /// is not an error.
    async fn delete(&self, key: &StoreKey, verifier: &VerifierHash) -> Result<(), StoreError>;

    /// Checks that the store answers.
    async fn health(&self) -> StoreHealth;

    /// Whether the store keeps an index from principals to their sessions,
    /// so that sessions may be bound to principals, listed, revoked and
    /// limited per principal. The default is `false`; a store that answers
    /// `true` implements [`principal_sessions`](Self::principal_sessions)
    /// and [`revoke`](Self::revoke), and honours bindings in
    /// [`create`](Self::create) and [`apply`](Self::apply).
    fn supports_principals(&self) -> bool {
        false
    }

    /// The live sessions bound to `principal`, in no particular order.
    /// Expired sessions, deleted ones and those since bound to another
    /// principal are not listed (and a store may prune them from its index
    /// on the way).
    ///
    /// The default answers [`StoreErrorKind::Unsupported`].
    async fn principal_sessions(
        &self,
        principal: &Principal,
    ) -> Result<Vec<PrincipalSession>, StoreError> {
        let _ = principal;
        Err(StoreError::without_source(
            self.backend(),
            Operation::ListPrincipal,
            StoreErrorKind::Unsupported,
        ))
    }

    /// Deletes the live sessions bound to `principal` that `which` names,
    /// each checked to be bound to `principal` in the same atomic step as
    /// its deletion, and answers how many it deleted. A key that names no
    /// session of `principal` deletes nothing.
    ///
    /// The default answers [`StoreErrorKind::Unsupported`].
    async fn revoke(
        &self,
        principal: &Principal,
        which: Revocation<'_>,
    ) -> Result<u64, StoreError> {
        let _ = (principal, which);
        Err(StoreError::without_source(
            self.backend(),
            Operation::Revoke,
            StoreErrorKind::Unsupported,
        ))
    }
}

#[async_trait]
impl<T: SessionStore + ?Sized> SessionStore for Arc<T> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        (**self).load(key).await
    }
    async fn load_some(
        &self,
        key: &StoreKey,
        names: &[&str],
    ) -> Result<Option<PartialRecord>, StoreError> {
        (**self).load_some(key, names).await
    }
    async fn create(
        &self,
        key: &StoreKey,
        record: &Record,
        limit: Option<&SessionLimit>,
    ) -> Result<Created, StoreError> {
        (**self).create(key, record, limit).await
    }
    async fn apply(&self, key: &StoreKey, changes: &ChangeSet) -> Result<Applied, StoreError> {
        (**self).apply(key, changes).await
    }
    async fn compare_and_set(
        &self,
        key: &StoreKey,
        verifier: &VerifierHash,
        name: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<Swap, StoreError> {
        (**self)
            .compare_and_set(key, verifier, name, expected, new)
            .await
    }
    async fn delete(&self, key: &StoreKey, verifier: &VerifierHash) -> Result<(), StoreError> {
        (**self).delete(key, verifier).await
    }
    async fn health(&self) -> StoreHealth {
        (**self).health().await
    }
    fn supports_principals(&self) -> bool {
        (**self).supports_principals()
    }
    async fn principal_sessions(
        &self,
        principal: &Principal,
    ) -> Result<Vec<PrincipalSession>, StoreError> {
        (**self).principal_sessions(principal).await
    }
    async fn revoke(
        &self,
        principal: &Principal,
        which: Revocation<'_>,
    ) -> Result<u64, StoreError> {
        (**self).revoke(principal, which).await
    }
}

/// Milliseconds since the Unix epoch, the resolution every store keeps.
#[must_use]
pub fn unix_millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The inverse of [`unix_millis`]; `None` if out of range.
#[must_use]
pub fn from_unix_millis(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// A duration in whole milliseconds, saturating.
#[must_use]
pub fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The current time at the millisecond resolution stores keep, so that a
/// record round-trips exactly.
#[must_use]
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    from_unix_millis(unix_millis(t)).unwrap_or(t)
}
