-- 001_init: the jobs table (the seed's columns and names kept), its history, and the
-- indexes the hot path needs. Applied once, in a transaction, by aqueue.db.migrate().

-- Needs PostgreSQL 13 or newer (gen_random_uuid() in core); aqueue targets 14+.

-- A time-ordered UUID (version 7: 48 bits of Unix milliseconds, then random bits), the
-- same kind aqueue's Python code makes. Ids in creation order let the primary key grow at
-- its right edge and serve as the listing order, so no created_at index is needed.
CREATE OR REPLACE FUNCTION aqueue_uuid7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(
                        floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

CREATE TABLE IF NOT EXISTS jobs (
    id               uuid PRIMARY KEY DEFAULT aqueue_uuid7(),
    type             text        NOT NULL,
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status           text        NOT NULL DEFAULT 'PENDING',
    queue            text        NOT NULL DEFAULT 'default',
    priority         integer     NOT NULL DEFAULT 0,
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL DEFAULT 5,
    run_after        timestamptz NOT NULL DEFAULT now(),
    locked_by        text,
    locked_at        timestamptz,
    last_error       text,
    idempotency_key  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- added for the guarantees: the lease that fences a worker's outcome
    lease_token      uuid,
    lease_expires_at timestamptz,
    result           jsonb,
    started_at       timestamptz,
    finished_at      timestamptz,
    CONSTRAINT jobs_status_valid CHECK (status IN
        ('PENDING', 'RUNNING', 'RETRY', 'COMPLETED', 'DEAD', 'CANCELLED')),
    CONSTRAINT jobs_attempts_valid CHECK (attempts >= 0 AND max_attempts >= 1),
    -- a RUNNING job always carries a lease; nothing else does
    CONSTRAINT jobs_lease_iff_running CHECK
        ((status = 'RUNNING') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- The claim reads this index only: runnable jobs, in the order they are handed out.
-- Being partial, its size follows the backlog, not the finished history.
CREATE INDEX IF NOT EXISTS jobs_runnable_idx
    ON jobs (queue, priority DESC, run_after)
    WHERE status IN ('PENDING', 'RETRY');

-- The reaper's scan for expired leases.
CREATE INDEX IF NOT EXISTS jobs_lease_idx
    ON jobs (lease_expires_at)
    WHERE status = 'RUNNING';

-- One job per idempotency key, also under concurrent enqueues.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency_key_idx
    ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The history of a job, one row per finished attempt: when it started (the RUNNING
-- transition) and when and how it ended (status RETRY, DEAD, COMPLETED, ... with the
-- worker and the error). Written by the statement that ends the attempt, so history costs
-- no round trip and the claim writes nothing but the job row. The creation and a running
-- attempt are read from the job row itself (created_at; started_at, locked_by), so
-- store.job_events shows every transition with its time. No foreign key: a check per row
-- on the hot path buys nothing, and retention deletes both.
-- Workers are woken by `pg_notify('aqueue_jobs', queue)`, sent by aqueue's insert
-- statements (sql/queries.sql) once per statement and queue. A job inserted by other SQL
-- is found by the workers' safety-net poll, or at once if that SQL sends the same NOTIFY.
CREATE TABLE IF NOT EXISTS job_events (
    job_id     uuid        NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    status     text        NOT NULL,
    attempt    integer     NOT NULL,
    worker     text,
    error      text,
    started_at timestamptz  -- when this attempt went RUNNING (null: it never ran)
);
CREATE INDEX IF NOT EXISTS job_events_job_idx ON job_events (job_id, at);
