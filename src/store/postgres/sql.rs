//! The statements the store runs, with its schema's name written in.
//!
//! Every operation is one statement, so one round trip: PostgreSQL runs a
//! single statement atomically, and the data-modifying CTEs below all see
//! the same snapshot and commit together.

/// The statements of one schema. Built once per store, so the texts are
/// stable and sqlx's per-connection cache keeps them prepared.
#[derive(Debug)]
pub(super) struct Statements {
    pub(super) load: String,
    pub(super) load_some: String,
    pub(super) create: String,
    pub(super) delete_expired_key: String,
    pub(super) apply: String,
    pub(super) create_bound: String,
    pub(super) apply_bound: String,
    pub(super) principal_sessions: String,
    pub(super) revoke: String,
    pub(super) cas_replace: String,
    pub(super) cas_remove: String,
    pub(super) cas_insert: String,
    pub(super) cas_current: String,
    pub(super) delete: String,
    pub(super) sweep: String,
    pub(super) health: String,
}

impl Statements {
    /// The statements for `schema`, an identifier already checked to need no
    /// quoting.
    pub(super) fn new(schema: &str) -> Self {
        let sessions = format!("{schema}.sessions");
        let attributes = format!("{schema}.attributes");
        // Whether a change fits the attribute limit ($10): see `apply`.
        let fits = format!(
            "$10::bigint IS NULL OR CASE \
                         WHEN (SELECT count(*) FROM {attributes} \
                               WHERE session_key = $1 AND name = ANY($6::text[])) \
                              = cardinality($6::text[]) THEN true \
                         ELSE (SELECT count(*) FROM {attributes} \
                               WHERE session_key = $1 \
                                 AND NOT (name = ANY($6::text[])) \
                                 AND NOT (name = ANY($8::text[]))) \
                              + cardinality($6::text[]) <= $10 \
                     END"
        );
        Self {
            // The session row with its attributes aggregated into two arrays
            // of the same order (one aggregate pass feeds both): one row,
            // however many attributes. An expired row is not returned.
            // The principal and the label come last, NULL when unset.
            // Timestamps come back as epoch milliseconds (NULL when not
            // finite), so a tampered row decodes as corrupt instead of
            // reaching the driver's timestamp decoder with a value out of
            // its range.
            load: format!(
                "SELECT s.verifier, {created}, {accessed}, s.idle_timeout_ms, \
                        {expires}, a.names, a.vals, s.principal, s.label \
                 FROM {sessions} s \
                 CROSS JOIN LATERAL ( \
                     SELECT coalesce(array_agg(name), ARRAY[]::text[]) AS names, \
                            coalesce(array_agg(value), ARRAY[]::text[]) AS vals \
                     FROM {attributes} WHERE session_key = s.key \
                 ) a \
                 WHERE s.key = $1 AND s.expires_at > now()",
                created = epoch_ms("s.created_at"),
                accessed = epoch_ms("s.last_accessed_at"),
                expires = epoch_ms("s.expires_at"),
            ),
            // The attributes are inserted only if the session row was: a
            // taken key writes nothing. The foreign key is checked at the end
            // of the statement, when the new session row is visible.
            create: format!(
                "WITH s AS ( \
                     INSERT INTO {sessions} \
                         (key, verifier, created_at, last_accessed_at, idle_timeout_ms, expires_at, \
                          sweep_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6) \
                     ON CONFLICT (key) DO NOTHING \
                     RETURNING key \
                 ), a AS ( \
                     INSERT INTO {attributes} (session_key, name, value) \
                     SELECT s.key, u.name, u.value \
                     FROM s, unnest($7::text[], $8::text[]) AS u(name, value) \
                 ) \
                 SELECT EXISTS (SELECT 1 FROM s)"
            ),
            // Frees a key held by an expired session the cleanup task has not
            // reached yet, so that `create` can take it.
            delete_expired_key: format!(
                "DELETE FROM {sessions} WHERE key = $1 AND expires_at <= now()"
            ),
            // `s` locks the session row, so applies to one session run one
            // after the other, and a concurrent delete either waits for it
            // or makes it match no row. Only when it matched do the other
            // CTEs (which read `s`) write anything: a session deleted or
            // expired meanwhile, one whose verifier hash is not the required
            // one ($9), and a change that adds names past the attribute limit
            // ($10) write nothing at all.
            //
            // The limit counts the session's attribute rows only when a name
            // set is not stored yet (CASE evaluates its branches lazily), so
            // replacing a value costs one index probe per name.
            //
            // The session row itself is rewritten only for new metadata ($4
            // the idle timeout, $5 the verifier) or a touch ($2, the access
            // time) that is due: $11 milliseconds (NULL: a twentieth of the
            // idle timeout) after the stored access. Most writes change
            // attributes only: skipping the session row saves a row version
            // per write. A touch moves the expiry to the earlier of the
            // access time plus the idle timeout (the new one, if set) and the
            // creation time plus the absolute timeout ($3, milliseconds, NULL
            // for none; least() ignores NULL). The cleanup's mark `sweep_at`
            // (migration 0003) stays unless the expiry moves before it, so a
            // touch changes no indexed column and updates the row in place
            // (HOT). Metadata left NULL keeps its value.
            //
            // Names are unique within each array and the two arrays are
            // disjoint, because a ChangeSet keeps every name either set or
            // removed, once. So the upsert never meets the same row twice
            // (which PostgreSQL would refuse), and the DELETE and the upsert
            // never touch the same row. Only the attribute rows named are
            // written: the session's other attributes are neither read nor
            // rewritten.
            //
            // Answers 1 when written, 2 when over the limit, 0 when gone, 3
            // when the session is live but its verifier is not $9 (the id
            // was changed after the request's cookie was issued).
            apply: apply(&sessions, &attributes, &fits, None),
            apply_bound: apply(&sessions, &attributes, &fits, Some(schema)),
            create_bound: super::principals::create_statement(schema),
            principal_sessions: super::principals::list_statement(schema),
            revoke: super::principals::revoke_statement(schema),
            // Only the attributes named in $2, found through the primary key
            // index: the other attributes' rows are never read. Otherwise as
            // `load`. The session's attribute count is left out: counting
            // its index entries made the statement about a third slower for
            // a session of 50 attributes.
            load_some: format!(
                "SELECT s.verifier, {created}, {accessed}, s.idle_timeout_ms, \
                        {expires}, a.names, a.vals, s.principal, s.label \
                 FROM {sessions} s \
                 CROSS JOIN LATERAL ( \
                     SELECT coalesce(array_agg(name), ARRAY[]::text[]) AS names, \
                            coalesce(array_agg(value), ARRAY[]::text[]) AS vals \
                     FROM {attributes} \
                     WHERE session_key = s.key AND name = ANY($2::text[]) \
                 ) a \
                 WHERE s.key = $1 AND s.expires_at > now()",
                created = epoch_ms("s.created_at"),
                accessed = epoch_ms("s.last_accessed_at"),
                expires = epoch_ms("s.expires_at"),
            ),
            // Compare-and-set writes the attribute row alone, with the
            // expected value in its WHERE clause. A concurrent writer of the
            // same row makes the UPDATE or DELETE wait for its commit, after
            // which PostgreSQL checks the condition again against the row as
            // now committed: two swaps from the same value cannot both win.
            // $3 is the expected value, $4 the new one, $5 the verifier hash
            // the session must have.
            cas_replace: cas(
                &sessions,
                &attributes,
                5,
                "UPDATE {attributes} a SET value = $4 FROM s \
                 WHERE a.session_key = s.key AND a.name = $2 AND a.value = $3 \
                 RETURNING 1",
            ),
            cas_remove: cas(
                &sessions,
                &attributes,
                4,
                "DELETE FROM {attributes} a USING s \
                 WHERE a.session_key = s.key AND a.name = $2 AND a.value = $3 \
                 RETURNING 1",
            ),
            // Expected absent: insert unless a row exists (or is being
            // inserted: ON CONFLICT waits for that transaction's outcome).
            // $3 is the new value, $4 the verifier hash.
            cas_insert: cas(
                &sessions,
                &attributes,
                4,
                "INSERT INTO {attributes} (session_key, name, value) \
                 SELECT s.key, $2, $3 FROM s \
                 ON CONFLICT (session_key, name) DO NOTHING \
                 RETURNING 1",
            ),
            // Expected absent and new absent: nothing to write. Is the
            // session alive with verifier $3, and what does the attribute
            // hold?
            cas_current: format!(
                "SELECT (SELECT value FROM {attributes} \
                         WHERE session_key = s.key AND name = $2) \
                 FROM {sessions} s \
                 WHERE s.key = $1 AND s.expires_at > now() AND s.verifier = $3"
            ),
            // Deletes the session only for the cookie that names it ($2, its
            // verifier hash), or once it has expired anyway.
            delete: format!(
                "DELETE FROM {sessions} \
                 WHERE key = $1 AND (verifier = $2 OR expires_at <= now())"
            ),
            // One batch of the cleanup: at most $1 sessions whose mark
            // `sweep_at` is due, the oldest mark first, found through its
            // index (migration 0003). Those expired are deleted (the cascade
            // removes their attributes); the others' mark moves to their
            // expiry, when they are due again. Rows another transaction holds
            // are skipped, not waited for. Both writes check the row as
            // locked, so a session touched after this statement's snapshot
            // is neither deleted nor moved, and is visited again. The writes
            // find their rows by `key = ANY(array)`, which the planner
            // always answers from the primary key: a join with the batch
            // was planned as a scan of the whole table when the statistics
            // said few sessions are live. Answers how many sessions it
            // visited, deleted and moved. Its commit does not wait for the
            // WAL flush (`synchronous_commit` off for its own transaction
            // only): a batch lost in a server crash left expired sessions,
            // which read as gone anyway and the next batch deletes; the
            // server flushes its WAL with the live requests' commits
            // instead of once more for every batch.
            sweep: format!(
                "WITH due AS ( \
                     SELECT key, expires_at <= now() AS expired FROM {sessions} \
                     WHERE sweep_at <= now() \
                     ORDER BY sweep_at \
                     LIMIT $1 \
                     FOR UPDATE SKIP LOCKED \
                 ), gone AS ( \
                     DELETE FROM {sessions} s \
                     WHERE s.key = ANY((SELECT array_agg(key) FROM due WHERE expired)::text[]) \
                       AND s.expires_at <= now() \
                     RETURNING 1 \
                 ), moved AS ( \
                     UPDATE {sessions} s SET sweep_at = s.expires_at \
                     WHERE s.key = ANY((SELECT array_agg(key) FROM due WHERE NOT expired)::text[]) \
                       AND s.expires_at > now() \
                     RETURNING 1 \
                 ) \
                 SELECT (SELECT count(*) FROM due), (SELECT count(*) FROM gone), \
                        (SELECT count(*) FROM moved) \
                 FROM (SELECT set_config('synchronous_commit', 'off', true)) AS commit_without_flush"
            ),
            // Whether the table exists, and the planner's estimate of its row
            // count (negative until the table was first analysed): no scan.
            health: "SELECT c.oid IS NOT NULL, \
                            CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END \
                     FROM (SELECT to_regclass($1) AS rel) r \
                     LEFT JOIN pg_catalog.pg_class c ON c.oid = r.rel"
                .to_owned(),
        }
    }
}

/// The `apply` statement; see its comment in [`Statements::new`]. With
/// `bind` (the schema, whose functions it calls) it is the variant that
/// also binds the session to a principal ($12, or keeps it if NULL) with
/// a limit ($14 sessions, evicting with $15, refusing without) and sets
/// the label ($13, or keeps it if NULL).
///
/// The variant takes the principal's lock before the session's row lock
/// (every statement that holds a principal's lock takes row locks only after
/// it, and no other statement waits for that lock while holding a row, so
/// the two never wait for each other in a cycle), checks the guards on the
/// session row, and only then makes room under the limit (see
/// `admit_principal` in `migrations/0002_principals.sql`): a request that may
/// not write evicts nobody. The session row is always rewritten, since it
/// holds the principal and the label. Answers as the plain statement, and 4
/// when the limit refused the binding. Having waited for the lock, it tells
/// a session deleted meanwhile (say, evicted by that lock's holder) from a
/// stale verifier by the row as now committed, not as in the statement's
/// snapshot: the checks after the guards lock the row they find
/// (`FOR KEY SHARE`), which reads its newest version.
fn apply(sessions: &str, attributes: &str, fits: &str, bind: Option<&str>) -> String {
    // The default touch interval is this fraction of the idle timeout.
    let divisor = crate::store::policy::TOUCH_DIVISOR;
    // A touch's expiry, of the row `t` being updated.
    let expiry = "least($2 + coalesce($4, t.idle_timeout_ms) * interval '1 millisecond', \
                  t.created_at + $3::bigint * interval '1 millisecond')";
    let plain_meta_due = format!(
        "AND ( \
             $4::bigint IS NOT NULL OR $5::bytea IS NOT NULL \
             OR ($2::timestamptz IS NOT NULL AND $2 - s.last_accessed_at \
                 >= coalesce($11::bigint, s.idle_timeout_ms / {divisor}) \
                    * interval '1 millisecond')) "
    );
    let (head, from, lock, admit, binds, due, refused, recheck) = match bind {
        None => (
            "WITH s AS ( ".to_owned(),
            String::new(),
            "FOR NO KEY UPDATE ",
            String::new(),
            " ",
            plain_meta_due,
            "",
            "",
        ),
        Some(schema) => (
            format!(
                "WITH g AS MATERIALIZED ( SELECT {schema}.lock_principal($12::text) ), \
                 guarded AS ( "
            ),
            ", g".to_owned(),
            "FOR NO KEY UPDATE OF sessions ",
            format!(
                "), adm AS MATERIALIZED ( \
                     SELECT {schema}.admit_principal($12::text, guarded.key, $14::integer, \
                                                     $15::boolean) AS ok \
                     FROM guarded \
                 ), s AS ( SELECT guarded.* FROM guarded, adm WHERE adm.ok "
            ),
            ", principal = coalesce($12::text, t.principal), \
             label = coalesce($13::text, t.label) ",
            String::new(),
            "WHEN EXISTS (SELECT 1 FROM guarded) THEN 4 ",
            " FOR KEY SHARE",
        ),
    };
    format!(
        "{head}\
             SELECT key, last_accessed_at, idle_timeout_ms FROM {sessions}{from} \
             WHERE key = $1 AND expires_at > now() \
               AND ($9::bytea IS NULL OR verifier = $9) \
               AND ({fits}) \
             {lock}\
         {admit}), meta AS ( \
             UPDATE {sessions} t SET \
                 last_accessed_at = coalesce($2, t.last_accessed_at), \
                 expires_at = CASE WHEN $2::timestamptz IS NULL THEN t.expires_at \
                     ELSE {expiry} END, \
                 sweep_at = CASE WHEN $2::timestamptz IS NULL THEN t.sweep_at \
                     ELSE least(t.sweep_at, {expiry}) END, \
                 idle_timeout_ms = coalesce($4, t.idle_timeout_ms), \
                 verifier = coalesce($5, t.verifier){binds}\
             FROM s \
             WHERE t.key = s.key {due}\
         ), removed AS ( \
             DELETE FROM {attributes} a USING s \
             WHERE a.session_key = s.key AND a.name = ANY($8::text[]) \
         ), written AS ( \
             INSERT INTO {attributes} (session_key, name, value) \
             SELECT s.key, u.name, u.value \
             FROM s, unnest($6::text[], $7::text[]) AS u(name, value) \
             ON CONFLICT (session_key, name) DO UPDATE SET value = excluded.value \
         ) \
         SELECT CASE \
             WHEN EXISTS (SELECT 1 FROM s) THEN 1 \
             {refused}\
             WHEN $10::bigint IS NOT NULL AND EXISTS ( \
                 SELECT 1 FROM {sessions} \
                 WHERE key = $1 AND expires_at > now() \
                   AND ($9::bytea IS NULL OR verifier = $9){recheck}) THEN 2 \
             WHEN $9::bytea IS NOT NULL AND EXISTS ( \
                 SELECT 1 FROM {sessions} \
                 WHERE key = $1 AND expires_at > now(){recheck}) THEN 3 \
             ELSE 0 END"
    )
}

/// One compare-and-set attempt as one statement: `write` (which reads the
/// live session from `s` and returns a row if it wrote) and, only if it
/// wrote nothing, the attribute's current value. Answers whether the session
/// is alive, whether the write happened, and the current value.
///
/// The current value is read with a row lock. In READ COMMITTED, locking
/// finds the newest committed version of the row (waiting for a writer still
/// at work), where a plain read sees the statement's snapshot: after an
/// UPDATE or DELETE that waited for a concurrent swap and then found a new
/// value, the snapshot still holds the value the caller expected, and the
/// caller would retry for nothing. That UPDATE or DELETE already holds the
/// newest version's lock, so taking it again writes nothing; only a mismatch
/// that did not wait (the caller's value was stale) locks the row anew.
///
/// What the lock cannot see: a row inserted after the snapshot (the store
/// sees the expected value back and tries again), and a session deleted
/// while the statement waited, which reads as the attribute absent (the
/// caller's next attempt finds the session gone).
///
/// The session must be live and hold the verifier hash bound as parameter
/// `verifier` (`$n`): a request whose cookie was replaced by a new id, or
/// whose session ended, writes nothing. The statement sees the session row
/// as of its snapshot, so a swap that started before a concurrent id change
/// committed is ordered before it.
fn cas(sessions: &str, attributes: &str, verifier: u8, write: &str) -> String {
    let write = write.replace("{attributes}", attributes);
    format!(
        "WITH s AS ( \
             SELECT key FROM {sessions} \
             WHERE key = $1 AND expires_at > now() AND verifier = ${verifier} \
         ), w AS ( \
             {write} \
         ), cur AS ( \
             SELECT a.value FROM {attributes} a, s \
             WHERE a.session_key = s.key AND a.name = $2 \
               AND NOT EXISTS (SELECT 1 FROM w) \
             FOR SHARE OF a \
         ) \
         SELECT EXISTS (SELECT 1 FROM s), EXISTS (SELECT 1 FROM w), \
                (SELECT value FROM cur)"
    )
}

/// `column` as epoch milliseconds, NULL unless finite.
pub(super) fn epoch_ms(column: &str) -> String {
    format!("CASE WHEN isfinite({column}) THEN (extract(epoch FROM {column}) * 1000)::bigint END")
}
