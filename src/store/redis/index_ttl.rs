//! How long a principal's index lives (see "Expiry" in the
//! [store's module docs](super)): never less than the latest expiry of its
//! sessions plus their idle timeout, raised by bindings and touches only,
//! so that Redis expires the index of a principal who never comes back.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use ::redis::Value;

use super::principals::GRACE;
use super::{RedisStore, index_scripts, unexpected};
use crate::store::{Applied, Operation, Principal, StoreError, duration_millis, unix_millis};
use time::OffsetDateTime;

/// How far past its session's last access the index of the last binding
/// had to live, in ms: what a binding that cannot tell its session's idle
/// timeout asks of the index first (see [`RedisStore::binding_target`]). A
/// guess only: the write itself checks that the index outlives the session.
#[derive(Debug, Default)]
pub(super) struct Headroom(AtomicI64);

/// The earliest time (Unix ms) a session's index may expire: the session's
/// expiry plus its idle timeout. The headroom keeps a live session in its
/// index even if the extension that follows one touch fails: a touch at
/// `t`, before the old expiry `E`, moves the expiry to `t + idle`, earlier
/// than `E + idle`.
pub(super) fn index_deadline(expires: OffsetDateTime, idle: Duration) -> i64 {
    unix_millis(expires).saturating_add(duration_millis(idle))
}

impl RedisStore {
    /// Remembers that a binding's index had to live until `deadline`, for
    /// a session last accessed at `accessed`.
    pub(super) fn note_deadline(&self, deadline: i64, accessed: OffsetDateTime) {
        let ahead = deadline.saturating_sub(unix_millis(accessed));
        self.inner.headroom.0.store(ahead, Ordering::Relaxed);
    }

    /// What a binding of a session accessed at `accessed` that does not
    /// know its idle timeout asks of the index first: as far ahead as the
    /// last binding needed, and at least the [grace period](GRACE) a
    /// binding may take.
    pub(super) fn binding_target(&self, accessed: OffsetDateTime) -> i64 {
        let ahead = self
            .inner
            .headroom
            .0
            .load(Ordering::Relaxed)
            .max(duration_millis(GRACE));
        unix_millis(accessed).saturating_add(ahead)
    }

    /// Raises the expiry of `principal`'s index (and its mark) to at least
    /// `deadline`, giving a persistent index one only if `force`. Answers
    /// the index's expiry after (Unix ms), -1 if persistent, -2 if missing.
    pub(super) async fn extend_index(
        &self,
        op: Operation,
        principal: &Principal,
        deadline: i64,
        force: bool,
    ) -> Result<i64, StoreError> {
        let args = [
            deadline.to_string().into_bytes(),
            if force { b"f".to_vec() } else { Vec::new() },
        ];
        match self
            .invoke_keys(
                op,
                &index_scripts::EXTEND,
                &self.index_keys(principal),
                &args,
            )
            .await?
        {
            Value::Int(expiry) => Ok(expiry),
            _ => Err(unexpected(op)),
        }
    }

    /// Gives a persistent index, written before indexes expired, an expiry
    /// that outlives each of its members (read now) and the session being
    /// bound (`own`), with their headroom. Answers the index's expiry.
    pub(super) async fn migrate_index(
        &self,
        op: Operation,
        principal: &Principal,
        own: i64,
    ) -> Result<i64, StoreError> {
        let keys = self.members(op, principal).await?;
        let name = principal.as_str().as_bytes();
        // A member's idle timeout is at least its expiry less its last
        // access (less only when the absolute timeout caps the expiry, and
        // then no touch moves it).
        let deadline = self
            .read_meta(op, &keys)
            .await?
            .into_iter()
            .flatten()
            .filter(|m| m.principal.as_deref() == Some(name))
            .map(|m| {
                m.expires
                    .saturating_add(m.expires.saturating_sub(m.accessed).max(0))
            })
            .fold(own, i64::max);
        self.extend_index(op, principal, deadline, true).await
    }

    /// What an apply that touched a bound session answered
    /// (`{1, principal, deadline}`): the principal's index is made to live
    /// until the deadline before the write counts as done. If that fails,
    /// the write stands, and so does the index, until at least the
    /// session's old expiry plus its idle timeout, which is later than the
    /// new expiry.
    pub(super) async fn follow_touch(&self, items: &[Value]) -> Result<Applied, StoreError> {
        let op = Operation::Apply;
        let [Value::Int(1), Value::BulkString(name), Value::Int(deadline)] = items else {
            return Err(unexpected(op));
        };
        if let Ok(principal) = Principal::from_bytes(name) {
            self.extend_index(op, &principal, *deadline, false).await?;
        }
        Ok(Applied::Written)
    }
}
