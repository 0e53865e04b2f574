-- 009_flow_control: per-key concurrency caps and weighted fair share inside a queue.
-- The plain claim pays nothing for either: a queue that uses them is claimed by
-- claim_flow (sql/queries.sql), chosen by the worker from the queue's row.

-- A job may name a concurrency key (at most N of its key run at once, across every
-- worker) and a fair key (a tenant: tenants share the queue by weight). vtag is the job's
-- place in the queue's fair order (start-time fair queueing: a virtual time given at
-- enqueue); null for jobs without a fair key.
-- Appended to jobs and jobs_history alike, in the same order (rule 4 in queries.sql).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS concurrency_key text;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS fair_key text;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS vtag float8;
ALTER TABLE jobs_history ADD COLUMN IF NOT EXISTS concurrency_key text;
ALTER TABLE jobs_history ADD COLUMN IF NOT EXISTS fair_key text;
ALTER TABLE jobs_history ADD COLUMN IF NOT EXISTS vtag float8;
CREATE OR REPLACE VIEW all_jobs AS
    SELECT * FROM jobs
    UNION ALL
    SELECT * FROM jobs_history;

-- The fair claim's order: by priority, then by tag. Only tagged jobs are in it, so a
-- plain insert never touches it.
CREATE INDEX IF NOT EXISTS jobs_fair_idx
    ON jobs (queue, effective_priority DESC, vtag)
    WHERE status IN ('PENDING', 'RETRY') AND waiting_for = 0 AND vtag IS NOT NULL;

-- A queue's caps and weights. key_concurrency: at most this many jobs of any one key run
-- at once; key_limits: {"key": n} overrides for single keys (a key named there is capped
-- even when key_concurrency is null). fair_weights: {"tenant": w} (default 1). fair: jobs
-- with a fair key were enqueued here (set by the first one), so it is claimed in fair
-- order.
ALTER TABLE queues ADD COLUMN IF NOT EXISTS key_concurrency integer;
ALTER TABLE queues ADD COLUMN IF NOT EXISTS key_limits jsonb;
ALTER TABLE queues ADD COLUMN IF NOT EXISTS fair_weights jsonb;
ALTER TABLE queues ADD COLUMN IF NOT EXISTS fair boolean NOT NULL DEFAULT false;
ALTER TABLE queues ADD CONSTRAINT queues_key_concurrency_valid
    CHECK (coalesce(key_concurrency, 1) > 0);

-- A capped key's semaphore: one row per slot (cap rows per key), free while job_id is
-- null. The claim takes free rows FOR UPDATE SKIP LOCKED and writes its job's id into
-- them, so two claimers never take one slot and a count is never trusted (a count read in
-- the claim cannot see concurrent claims: see the flow-control research). Rows are made
-- by the claim that first meets a key. A key holds `cap` rows that are not `retired`;
-- when a cap is lowered below the jobs running, the excess held rows are retired: they
-- go away as jobs end (fit_slots in queries.sql).
CREATE TABLE IF NOT EXISTS concurrency_slots (
    queue    text    NOT NULL,
    key      text    NOT NULL,
    slot     integer NOT NULL,
    job_id   uuid,
    taken_at timestamptz,
    retired  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (queue, key, slot),
    CONSTRAINT concurrency_slots_retired_held CHECK (NOT retired OR job_id IS NOT NULL)
) WITH (fillfactor = 70);
-- No index on job_id: a release finds its row among its key's (a few) rows by the
-- primary key's prefix, and taking or freeing a slot stays a HOT update.

-- A running job of a key lets go of its slot whenever it stops running, whichever
-- statement ends the attempt (completion, retry, reaper, shutdown release, cancel), once:
-- only the row holding this job's id is touched, so a worker that lost its lease and
-- finishes late frees nothing (its outcome is refused, its row never leaves RUNNING by
-- its hand). The WHEN clauses are checked in the executor: jobs without a concurrency
-- key never call it.
-- While the key runs more jobs than its (lowered) cap, a slot is not freed: a retired
-- row goes away, or a kept row goes away and a retired one (still running) takes its
-- place, so no job starts until the key is under its cap. A retired row that another
-- release is taking over is skipped, not waited for: that release removes a row too.
-- When a slot is freed, the queue's workers are woken: a job of that key may start.
CREATE OR REPLACE FUNCTION aqueue_free_slot() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    mine concurrency_slots;
BEGIN
    -- the usual case, one statement: the key is within its cap, the slot is freed
    UPDATE concurrency_slots SET job_id = NULL, taken_at = NULL
    WHERE queue = OLD.queue AND key = OLD.concurrency_key AND job_id = OLD.id
      AND NOT retired
      AND NOT EXISTS (SELECT 1 FROM concurrency_slots r
                      WHERE r.queue = OLD.queue AND r.key = OLD.concurrency_key
                        AND r.retired);
    IF FOUND THEN
        PERFORM pg_notify('aqueue_jobs', OLD.queue);
        RETURN NULL;
    END IF;
    -- no slot (an uncapped key), or the key runs over a lowered cap
    SELECT * INTO mine FROM concurrency_slots
    WHERE queue = OLD.queue AND key = OLD.concurrency_key AND job_id = OLD.id
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF NOT mine.retired THEN
        UPDATE concurrency_slots SET retired = false
        WHERE (queue, key, slot) = (
            SELECT queue, key, slot FROM concurrency_slots
            WHERE queue = mine.queue AND key = mine.key AND retired
            ORDER BY slot LIMIT 1
            FOR UPDATE SKIP LOCKED);
        IF NOT FOUND THEN
            UPDATE concurrency_slots SET job_id = NULL, taken_at = NULL
            WHERE queue = mine.queue AND key = mine.key AND slot = mine.slot;
            PERFORM pg_notify('aqueue_jobs', OLD.queue);
            RETURN NULL;
        END IF;
    END IF;
    DELETE FROM concurrency_slots
    WHERE queue = mine.queue AND key = mine.key AND slot = mine.slot;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS jobs_free_slot ON jobs;
CREATE TRIGGER jobs_free_slot
    AFTER UPDATE ON jobs
    FOR EACH ROW
    WHEN (OLD.status = 'RUNNING' AND NEW.status <> 'RUNNING'
          AND OLD.concurrency_key IS NOT NULL)
    EXECUTE FUNCTION aqueue_free_slot();
DROP TRIGGER IF EXISTS jobs_free_slot_deleted ON jobs;
CREATE TRIGGER jobs_free_slot_deleted
    AFTER DELETE ON jobs
    FOR EACH ROW
    WHEN (OLD.status = 'RUNNING' AND OLD.concurrency_key IS NOT NULL)
    EXECUTE FUNCTION aqueue_free_slot();

-- A tenant's virtual clock in a fair queue: the tag its next job starts after. `base` is
-- where the last run of tags it was given began (the enqueue reads it back).
CREATE TABLE IF NOT EXISTS fair_keys (
    queue  text   NOT NULL,
    key    text   NOT NULL,
    vclock float8 NOT NULL,
    base   float8 NOT NULL,
    PRIMARY KEY (queue, key)
) WITH (fillfactor = 70);
