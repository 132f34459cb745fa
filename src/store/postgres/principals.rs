//! The principal index: which principal each session is bound to, kept in
//! the session's own row (`principal` and `label`, from
//! `migrations/0002_principals.sql`) and found through a partial index on
//! `principal`.
//!
//! Binding, listing and revoking are one statement each. A binding with a
//! limit is made exact under concurrency by `admit_principal`, a function
//! of the store's schema that takes the principal's advisory lock before it
//! reads the principal's other sessions: see the migration. Statements that
//! don't bind or label a session are the store's plain ones, unchanged.

use super::error::from_sqlx;
use super::rows::decode_label;
use super::{BACKEND, PostgresStore};
use crate::store::{
    Applied, ChangeSet, LimitPolicy, Operation, Principal, PrincipalSession, Revocation,
    SessionLimit, StoreError, StoreErrorKind, StoreKey, from_unix_millis,
};

/// Bound `create`: `admit_principal` first (unless the key names a live
/// session: a taken key evicts nobody), and the session row, with its
/// principal ($9) and label ($10), only if admitted under the limit ($11
/// sessions, evicting with $12). Parameters 1 to 8 as the plain `create`.
/// Answers 1 when stored, 2 when the limit refused it, 0 when the key is
/// taken (perhaps by an expired session the caller may free and retry).
pub(super) fn create_statement(schema: &str) -> String {
    format!(
        "WITH adm AS MATERIALIZED ( \
             SELECT {schema}.admit_principal($9::text, $1::text, $11::integer, $12::boolean) \
                    AS ok \
             WHERE NOT EXISTS ( \
                 SELECT 1 FROM {schema}.sessions WHERE key = $1 AND expires_at > now()) \
         ), s AS ( \
             INSERT INTO {schema}.sessions \
                 (key, verifier, created_at, last_accessed_at, idle_timeout_ms, expires_at, \
                  sweep_at, principal, label) \
             SELECT $1, $2, $3, $4, $5, $6, $6, $9, $10 FROM adm WHERE adm.ok \
             ON CONFLICT (key) DO NOTHING \
             RETURNING key \
         ), a AS ( \
             INSERT INTO {schema}.attributes (session_key, name, value) \
             SELECT s.key, u.name, u.value \
             FROM s, unnest($7::text[], $8::text[]) AS u(name, value) \
         ) \
         SELECT CASE WHEN EXISTS (SELECT 1 FROM s) THEN 1 \
                     WHEN EXISTS (SELECT 1 FROM adm WHERE NOT adm.ok) THEN 2 \
                     ELSE 0 END"
    )
}

/// The live sessions bound to $1, through the partial index on
/// `principal`: one row each, with what a "your devices" page shows.
pub(super) fn list_statement(schema: &str) -> String {
    format!(
        "SELECT key, {created}, {accessed}, {expires}, label \
         FROM {schema}.sessions \
         WHERE principal = $1 AND expires_at > now()",
        created = super::sql::epoch_ms("created_at"),
        accessed = super::sql::epoch_ms("last_accessed_at"),
        expires = super::sql::epoch_ms("expires_at"),
    )
}

/// Deletes the live sessions bound to $1 that the keys name: only those in
/// $2 (NULL: any), all but $3 (NULL: none kept). Each row's principal is
/// checked when it is deleted (a row rebound meanwhile is checked again as
/// committed), and the cascade takes the attributes. The principal's lock
/// comes first, so a revocation and a binding that evicts, each deleting
/// several rows, never wait for each other in a cycle.
pub(super) fn revoke_statement(schema: &str) -> String {
    format!(
        "WITH g AS MATERIALIZED ( SELECT {schema}.lock_principal($1::text) ), \
         d AS ( \
             DELETE FROM {schema}.sessions t USING g \
             WHERE t.principal = $1 AND t.expires_at > now() \
               AND ($2::text[] IS NULL OR t.key = ANY($2::text[])) \
               AND ($3::text IS NULL OR t.key <> $3::text) \
             RETURNING 1 \
         ) \
         SELECT count(*) FROM d"
    )
}

/// The limit as the statements take it: how many sessions, and whether to
/// evict (else refuse).
pub(super) fn limit_params(limit: Option<&SessionLimit>) -> (Option<i32>, Option<bool>) {
    match limit {
        Some(limit) => (
            Some(i32::try_from(limit.max()).unwrap_or(i32::MAX)),
            Some(limit.policy() == LimitPolicy::EvictLeastRecentlyUsed),
        ),
        None => (None, None),
    }
}

/// A listed row: key, created, last accessed, expires (epoch
/// milliseconds), label.
type ListedRow = (
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

impl PostgresStore {
    /// The statement `apply` runs for `changes`, and the parameters past
    /// the plain statement's eleven: the bound variant when the change
    /// binds or labels the session, else the plain one.
    pub(super) fn apply_statement<'a>(
        &'a self,
        changes: &'a ChangeSet,
    ) -> (&'a str, Option<BindParams<'a>>) {
        let sql = &self.inner.sql;
        if changes.binding().is_none() && changes.label().is_none() {
            return (&sql.apply, None);
        }
        let binding = changes.binding();
        let (max, evict) = limit_params(binding.and_then(|b| b.limit.as_ref()));
        (
            &sql.apply_bound,
            Some(BindParams {
                principal: binding.map(|b| b.principal.as_str()),
                label: changes.label().map(|l| l.as_str()),
                max,
                evict,
            }),
        )
    }

    pub(super) async fn list_principal(
        &self,
        principal: &Principal,
    ) -> Result<Vec<PrincipalSession>, StoreError> {
        let op = Operation::ListPrincipal;
        let rows: Vec<ListedRow> = sqlx::query_as(&self.inner.sql.principal_sessions)
            .bind(principal.as_str())
            .fetch_all(self.pool())
            .await
            .map_err(|e| from_sqlx(op, e))?;
        rows.into_iter().map(listed).collect()
    }

    pub(super) async fn revoke_principal(
        &self,
        principal: &Principal,
        which: Revocation<'_>,
    ) -> Result<u64, StoreError> {
        let op = Operation::Revoke;
        let (only, except): (Option<Vec<&str>>, Option<&str>) = match which {
            Revocation::Only(keys) => (Some(keys.iter().map(StoreKey::as_str).collect()), None),
            Revocation::AllExcept(kept) => (None, Some(kept.as_str())),
            // All, and any way to name sessions added later, which this
            // version cannot read: revoke them all rather than none.
            _ => (None, None),
        };
        let revoked: i64 = sqlx::query_scalar(&self.inner.sql.revoke)
            .bind(principal.as_str())
            .bind(only)
            .bind(except)
            .fetch_one(self.pool())
            .await
            .map_err(|e| from_sqlx(op, e))?;
        Ok(u64::try_from(revoked).unwrap_or(0))
    }
}

/// The bound `apply` statement's own parameters, $12 to $15.
pub(super) struct BindParams<'a> {
    pub(super) principal: Option<&'a str>,
    pub(super) label: Option<&'a str>,
    pub(super) max: Option<i32>,
    pub(super) evict: Option<bool>,
}

/// Decodes a listed row.
fn listed(
    (key, created, accessed, expires, label): ListedRow,
) -> Result<PrincipalSession, StoreError> {
    let corrupt = |what: &'static str| {
        StoreError::new(
            BACKEND,
            Operation::ListPrincipal,
            StoreErrorKind::Corrupt,
            what,
        )
    };
    let time = |ms: Option<i64>| {
        ms.and_then(from_unix_millis)
            .ok_or_else(|| corrupt("stored time is out of range"))
    };
    Ok(PrincipalSession::new(
        StoreKey::parse(&key).ok_or_else(|| corrupt("stored session key is malformed"))?,
        time(created)?,
        time(accessed)?,
        time(expires)?,
        decode_label(label, Operation::ListPrincipal)?,
    ))
}

/// What an `apply` statement's answer means (the plain one never answers
/// 4).
pub(super) fn applied(state: i32) -> Applied {
    match state {
        1 => Applied::Written,
        2 => Applied::TooManyAttributes,
        3 => Applied::Stale,
        4 => Applied::LimitReached,
        _ => Applied::Gone,
    }
}
