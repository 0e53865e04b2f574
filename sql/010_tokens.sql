-- API tokens (aqueue tokens create|list|revoke). The token itself is shown once, at
-- creation; only its SHA-256 digest is kept, so a copy of the database (a backup, a
-- replica, a support dump) lets no one call the API. A fast hash is enough: a token is 256
-- random bits, not a password a dictionary could guess.
CREATE TABLE IF NOT EXISTS api_tokens (
    name         text PRIMARY KEY,
    digest       bytea       NOT NULL UNIQUE,
    scopes       text[]      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    -- written at most once a minute per token (authenticate_token), so that an operator
    -- can tell a token still in use from a forgotten one before revoking it
    last_used_at timestamptz,
    CONSTRAINT api_tokens_scopes_valid CHECK (
        cardinality(scopes) > 0
        AND scopes <@ ARRAY['enqueue', 'read', 'admin', 'worker']::text[])
);
