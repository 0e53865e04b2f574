-- The API's rate limit, one row per client, shared by every API replica: GCRA keeps one
-- timestamp per client (the theoretical arrival time of its next request). UNLOGGED: a
-- budget is worth no WAL; after a crash PostgreSQL empties the table and every client
-- starts with a full budget, which is all that is lost.
CREATE UNLOGGED TABLE IF NOT EXISTS api_rate_limits (
    client  text PRIMARY KEY,
    tat     timestamptz NOT NULL,
    -- how many requests the last statement on this row let through (take_rate_tokens)
    granted integer     NOT NULL DEFAULT 0
);
