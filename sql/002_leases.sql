-- 002_leases: what the hardened lease bookkeeping needs from the schema.

-- How many times a job was handed back at shutdown without spending its attempt. After a
-- few such refunds (settings.free_releases) a release spends the attempt like a failure,
-- so a handler that hangs until every shutdown still reaches DEAD instead of being
-- refunded for ever.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS releases integer NOT NULL DEFAULT 0;

-- The delay before retrying after attempt number `attempt` failed: min(cap, base *
-- 2^(attempt-1)), jittered down to half of that so that jobs failing together do not
-- retry together. The same rule as aqueue.model.backoff_seconds, which the worker uses
-- for a handler's failure; this one serves the statements that fail attempts without a
-- handler's outcome (an expired lease, a release that spends its attempt).
CREATE OR REPLACE FUNCTION aqueue_backoff(attempt integer, base float8, cap float8)
RETURNS interval
LANGUAGE sql VOLATILE AS $$
    SELECT make_interval(secs => least(cap, base * power(2::float8, greatest(attempt - 1, 0)))
                                 * (0.5 + random() * 0.5))
$$;
