-- A queue's rate limit, spent inside the claim (GCRA, one timestamp per queue): at most
-- rate_count jobs start per rate_period seconds across every worker, in bursts of up to
-- rate_count. Null rate_count: no limit, and the claim does not look here.
ALTER TABLE queues ADD COLUMN IF NOT EXISTS rate_count integer;
ALTER TABLE queues ADD COLUMN IF NOT EXISTS rate_period float8;
ALTER TABLE queues ADD COLUMN IF NOT EXISTS rate_tat timestamptz;
ALTER TABLE queues ADD CONSTRAINT queues_rate_valid
    CHECK ((rate_count IS NULL) = (rate_period IS NULL) AND coalesce(rate_count, 1) > 0
           AND coalesce(rate_period, 1) > 0);
