-- Touches update the session row in place (HOT), and the cleanup finds
-- expired sessions through a column that touches never change.
--
-- Applied like 0001, on a connection whose search_path is the store's own
-- schema.
--
-- Why: every touch moves `expires_at` (and `last_accessed_at`). While
-- `expires_at` was indexed (`sessions_expires_at`, 0001), no touch could be
-- a heap-only-tuple (HOT) update: an update that changes an indexed column
-- writes a new entry into every index of the table (the primary key, the
-- principal index and the expiry index), and those entries stay until
-- vacuum. So the indexes grew with the number of touches, not with the
-- number of sessions. In PostgreSQL 15 any index on the column blocks HOT,
-- a BRIN index too.
--
-- Instead, `sweep_at` is a lower bound of `expires_at`: set to the expiry
-- when the session is created, kept by a touch that moves the expiry later
-- (the usual case), lowered with it by one that moves it earlier (a shorter
-- idle timeout, rare), and moved forward only by the cleanup. The cleanup
-- visits the sessions whose `sweep_at` is due, oldest first, through
-- `sessions_sweep_at`: it deletes those that have expired and sets the
-- others' `sweep_at` to their current expiry. A session that stays in use
-- costs at most one non-HOT update per idle timeout, made by the cleanup,
-- instead of one per touch. A touch now changes no indexed column, so it
-- updates its row in place whenever the page has room (fillfactor 70 keeps
-- room, 0001).
--
-- Nothing else a touch or a write changes is indexed: the primary key is
-- never changed, and the principal index's column (and predicate) changes
-- only when a session is bound to another principal. Attribute rows are
-- keyed by (session_key, name) and a write changes only `value`, so an
-- attribute update is HOT whenever its page has room (fillfactor 80,
-- 0001). A value whose row is larger than about 2 KB is stored out of line
-- in the table's TOAST relation; rewriting it writes new TOAST chunks
-- (the old ones are reclaimed by vacuum), while the attribute row itself
-- still updates in place.
--
-- Loads, writes and deletes find sessions by primary key; the principal
-- listing, revocation and `admit_principal` (0002) by the principal index,
-- filtering on `expires_at` only among one principal's rows. None of them
-- needed the dropped index.
--
-- A deployment at 0002 migrates in place, quickly at any size: adding a
-- column with a constant default rewrites nothing (the default is kept in
-- the catalogue for the existing rows), so every existing session reads
-- `-infinity`, which is due at once: the cleanup visits each existing
-- session once, deleting the expired ones and moving the others' `sweep_at`
-- to their expiry. The index build reads the table once (writes wait for
-- that, as in 0002). The default stays, so an instance of the previous
-- version, still running during a rolling deploy, inserts sessions the
-- cleanup visits at once; that version's own cleanup, though, finds no
-- index on `expires_at` and scans the table for every batch: run the
-- cleanup only on the new version while both run.

ALTER TABLE sessions ADD COLUMN sweep_at timestamptz NOT NULL DEFAULT '-infinity';

-- The cleanup relies on `sweep_at` never being later than `expires_at`: a
-- session whose expiry passed before its `sweep_at` would only be deleted
-- once `sweep_at` came. Every row written from here on is checked (a
-- comparison of two columns of the row itself); the existing rows hold
-- `-infinity` and need no scan to prove it, hence NOT VALID.
ALTER TABLE sessions
    ADD CONSTRAINT sessions_sweep_at_bound CHECK (sweep_at <= expires_at) NOT VALID;

DROP INDEX sessions_expires_at;

-- Found by the cleanup: the sessions due for a visit, oldest first.
CREATE INDEX sessions_sweep_at ON sessions (sweep_at);
