-- Sessions and their attributes.
--
-- The store applies this file on a connection whose search_path is the
-- store's own schema, so these tables and sqlx's `_sqlx_migrations`
-- bookkeeping land there, away from the application's own migrations.
-- Names are therefore left unqualified.

-- One row per session. Rows are small and updated in place on every write
-- (the touch moves `expires_at`); the spare room left by the fillfactor keeps
-- the new row version on the same page.
CREATE TABLE sessions (
    -- The selector half of the session id: 22 characters of base64url.
    key text COLLATE "C" PRIMARY KEY,
    -- SHA-256 of the cookie's verifier; the verifier itself is never stored.
    verifier bytea NOT NULL CHECK (octet_length(verifier) = 32),
    created_at timestamptz NOT NULL,
    last_accessed_at timestamptz NOT NULL,
    idle_timeout_ms bigint NOT NULL CHECK (idle_timeout_ms >= 0),
    expires_at timestamptz NOT NULL
) WITH (fillfactor = 70);

-- Found by the cleanup task: the oldest expired sessions first.
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- One row per attribute, so that a request writes only the attributes it
-- changed. Values are serde_json text kept as given (`text`, not `jsonb`,
-- which would normalise it).
CREATE TABLE attributes (
    session_key text COLLATE "C" NOT NULL REFERENCES sessions (key) ON DELETE CASCADE,
    name text COLLATE "C" NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (session_key, name)
) WITH (fillfactor = 80);
