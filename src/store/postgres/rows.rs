//! The rows of the store's statements: binding a record or a swap to its
//! statement, and decoding a loaded row.

use std::collections::HashMap;
use std::time::Duration;

use time::OffsetDateTime;

use sqlx::Row as _;

use super::principals::limit_params;
use super::{BACKEND, PostgresStore};
use crate::store::{
    Label, Operation, Principal, Record, SessionLimit, StoreError, StoreErrorKind, StoreKey,
    VerifierHash, duration_millis, from_unix_millis, unix_millis,
};

/// A time at the millisecond resolution every store keeps.
pub(super) fn millis(t: OffsetDateTime) -> OffsetDateTime {
    from_unix_millis(unix_millis(t)).unwrap_or(t)
}

impl PostgresStore {
    /// One `create` statement: the plain one for a record with neither
    /// principal nor label, else the bound one with `limit`. Answers 1 when
    /// stored, 2 when the limit refused it, 0 when the key is taken.
    pub(super) async fn try_create(
        &self,
        key: &StoreKey,
        record: &Record,
        limit: Option<&SessionLimit>,
    ) -> Result<i32, sqlx::Error> {
        let (names, values): (Vec<&str>, Vec<&str>) = record
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .unzip();
        let plain = record.principal.is_none() && record.label.is_none();
        let sql = &self.inner.sql;
        let query = sqlx::query(if plain {
            &sql.create
        } else {
            &sql.create_bound
        })
        .bind(key.as_str())
        .bind(record.verifier.as_bytes().as_slice())
        .bind(millis(record.created))
        .bind(millis(record.last_accessed))
        .bind(duration_millis(record.max_inactive))
        .bind(millis(record.expires_at))
        .bind(names.as_slice())
        .bind(values.as_slice());
        if plain {
            let row = query.fetch_one(self.pool()).await?;
            return Ok(i32::from(row.try_get::<bool, _>(0)?));
        }
        let (max, evict) = limit_params(limit);
        let row = query
            .bind(record.principal.as_ref().map(Principal::as_str))
            .bind(record.label.as_ref().map(Label::as_str))
            .bind(max)
            .bind(evict)
            .fetch_one(self.pool())
            .await?;
        row.try_get(0)
    }

    /// One compare-and-set attempt, one statement: `None` if the session is
    /// gone, else whether it swapped and, if not, the attribute's value now.
    pub(super) async fn try_swap(
        &self,
        key: &StoreKey,
        verifier: &VerifierHash,
        name: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<Option<Attempt>, sqlx::Error> {
        let sql = &self.inner.sql;
        let verifier = verifier.as_bytes().as_slice();
        let query = match (expected, new) {
            (Some(expected), Some(new)) => sqlx::query_as(&sql.cas_replace)
                .bind(key.as_str())
                .bind(name)
                .bind(expected)
                .bind(new)
                .bind(verifier),
            (Some(expected), None) => sqlx::query_as(&sql.cas_remove)
                .bind(key.as_str())
                .bind(name)
                .bind(expected)
                .bind(verifier),
            (None, Some(new)) => sqlx::query_as(&sql.cas_insert)
                .bind(key.as_str())
                .bind(name)
                .bind(new)
                .bind(verifier),
            // Absent stays absent: nothing to write, the value decides.
            (None, None) => {
                let current: Option<Option<String>> = sqlx::query_scalar(&sql.cas_current)
                    .bind(key.as_str())
                    .bind(name)
                    .bind(verifier)
                    .fetch_optional(self.pool())
                    .await?;
                return Ok(current.map(|current| Attempt {
                    swapped: false,
                    current,
                }));
            }
        };
        let (alive, swapped, current): (bool, bool, Option<String>) =
            query.fetch_one(self.pool()).await?;
        Ok(alive.then_some(Attempt { swapped, current }))
    }
}

/// The outcome of one compare-and-set statement on a live session.
pub(super) struct Attempt {
    pub(super) swapped: bool,
    /// The attribute's value now, read only if nothing was swapped.
    pub(super) current: Option<String>,
}

/// Decodes a loaded row into a record.
pub(super) fn record_from_row(
    (verifier, created, last_accessed, idle_ms, expires_at, names, values, principal, label): LoadedRow,
) -> Result<Record, StoreError> {
    let corrupt = |what: &'static str| {
        StoreError::new(BACKEND, Operation::Load, StoreErrorKind::Corrupt, what)
    };
    let verifier = VerifierHash::from_slice(&verifier)
        .ok_or_else(|| corrupt("stored verifier is not 32 bytes"))?;
    let idle_ms = u64::try_from(idle_ms).map_err(|_| corrupt("stored idle timeout is negative"))?;
    let time = |ms: Option<i64>| {
        ms.and_then(crate::store::from_unix_millis)
            .ok_or_else(|| corrupt("stored time is out of range"))
    };
    if names.len() != values.len() {
        return Err(corrupt("attribute names and values do not pair up"));
    }
    Ok(Record {
        verifier,
        created: time(created)?,
        last_accessed: time(last_accessed)?,
        max_inactive: Duration::from_millis(idle_ms),
        expires_at: time(expires_at)?,
        attributes: names.into_iter().zip(values).collect::<HashMap<_, _>>(),
        principal: principal
            .map(|p| Principal::new(p).map_err(|_| corrupt("stored principal name is invalid")))
            .transpose()?,
        label: decode_label(label, Operation::Load)?,
    })
}

/// Decodes a stored label, NULL for none.
pub(super) fn decode_label(
    label: Option<String>,
    operation: Operation,
) -> Result<Option<Label>, StoreError> {
    label
        .map(|l| {
            Label::new(l).map_err(|_| {
                StoreError::new(
                    BACKEND,
                    operation,
                    StoreErrorKind::Corrupt,
                    "stored session label is invalid",
                )
            })
        })
        .transpose()
}

pub(super) type LoadedRow = (
    Vec<u8>,
    Option<i64>,
    Option<i64>,
    i64,
    Option<i64>,
    Vec<String>,
    Vec<String>,
    Option<String>,
    Option<String>,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_keep_milliseconds() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(unix_millis(millis(t)), 1_700_000_000_123);
        assert_eq!(millis(t).nanosecond() % 1_000_000, 0);
    }
}
