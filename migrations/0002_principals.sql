-- The principal index: which principal (user) each session is bound to, and
-- the label the app gave it ("Firefox on Linux").
--
-- Applied like 0001, on a connection whose search_path is the store's own
-- schema. A deployment at 0001 migrates in place: adding nullable columns
-- without a default rewrites nothing; building the index reads the sessions
-- table once (writes wait for that) and stores nothing for the sessions
-- that exist, none of which is bound.

ALTER TABLE sessions
    ADD COLUMN principal text COLLATE "C",
    ADD COLUMN label text;

-- A principal's sessions, for listing, revoking and limiting them. Only
-- bound sessions are entered, and a touch never changes the column, so a
-- touch updates this index only when it has to update the row's other
-- indexes anyway.
CREATE INDEX sessions_principal ON sessions (principal) WHERE principal IS NOT NULL;

-- The functions below resolve names in this schema only, never in a
-- temporary schema or the caller's search_path: `SET search_path FROM
-- CURRENT` keeps the value set here, for this migration's transaction.
SELECT set_config('search_path', quote_ident(current_schema()) || ', pg_catalog, pg_temp', true);

-- Serializes the bindings, revocations and limits of one principal until
-- the calling transaction ends. The key is a 64-bit hash of the name under
-- a seed of the store's own, so another user of advisory locks in the
-- database is unlikely to meet it; two principals whose hashes collide
-- merely wait for each other. A NULL principal takes no lock.
CREATE FUNCTION lock_principal(p_principal text) RETURNS void
LANGUAGE sql VOLATILE
SET search_path FROM CURRENT
AS $$
    SELECT pg_advisory_xact_lock(hashtextextended(p_principal, 7384616931087235871))
    WHERE p_principal IS NOT NULL
$$;

-- Makes room for the session under `p_key` among the live sessions bound
-- to `p_principal`, at most `p_max` of them with it, and answers whether it
-- may be bound: with `p_evict`, the least recently used other sessions past
-- the limit are deleted (by last access, then by creation); without it,
-- the answer is false when the others already fill the limit. The session
-- under `p_key` never counts against itself. A NULL principal admits at
-- once; a NULL limit admits after the pruning below.
--
-- Every binding first deletes the principal's expired sessions, found
-- through the principal index: a user who logs in again and again never
-- gathers more sessions than the limit plus those that expired since the
-- last login, whether or not the cleanup task runs.
--
-- It takes the principal's lock first, and each statement after it reads
-- a fresh snapshot (a VOLATILE function in READ COMMITTED): it sees every
-- binding committed before the lock was granted. The lock is held until the
-- caller's statement commits, so the next binding of the principal sees
-- this one's session.
CREATE FUNCTION admit_principal(p_principal text, p_key text, p_max integer, p_evict boolean)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path FROM CURRENT
AS $$
DECLARE
    others bigint;
BEGIN
    IF p_principal IS NULL THEN
        RETURN true;
    END IF;
    PERFORM lock_principal(p_principal);
    DELETE FROM sessions WHERE principal = p_principal AND expires_at <= now();
    IF p_max IS NULL THEN
        RETURN true;
    END IF;
    IF p_evict THEN
        DELETE FROM sessions WHERE key IN (
            SELECT key FROM sessions
            WHERE principal = p_principal AND key <> p_key AND expires_at > now()
            ORDER BY last_accessed_at DESC, created_at DESC
            OFFSET greatest(p_max - 1, 0)
        );
        RETURN true;
    END IF;
    SELECT count(*) INTO others FROM sessions
    WHERE principal = p_principal AND key <> p_key AND expires_at > now();
    RETURN others < p_max;
END
$$;
