-- 005_history: finished jobs leave the table the claim reads.
--
-- `jobs` holds runnable and running work only (PENDING, RETRY, RUNNING); a job that
-- finishes (COMPLETED, DEAD, CANCELLED) moves to `jobs_history`, in the transaction that
-- finishes it. The hot table's size and its dead tuples then follow the backlog, not the
-- history: autovacuum keeps up with it, and a million finished jobs cost the claim
-- nothing. The rules every finishing statement follows are at the top of
-- sql/queries.sql.

-- Same columns, same order, same defaults and checks as jobs (the trigger below inserts
-- NEW.* as it is). A migration that adds a column to jobs adds it to jobs_history too, in
-- the same order, and recreates all_jobs; tests/integration/test_history.py checks it.
CREATE TABLE IF NOT EXISTS jobs_history (LIKE jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE jobs_history ADD CONSTRAINT jobs_history_pkey PRIMARY KEY (id);
-- Only finished jobs: also lets the planner skip this table for a listing of PENDING,
-- RUNNING or RETRY jobs through all_jobs (constraint exclusion on UNION ALL).
ALTER TABLE jobs_history ADD CONSTRAINT jobs_history_finished
    CHECK (status IN ('COMPLETED', 'DEAD', 'CANCELLED'));
-- Listing failed jobs (GET /jobs?status=DEAD|CANCELLED), as jobs_failed_idx did on jobs.
CREATE INDEX IF NOT EXISTS jobs_history_failed_idx
    ON jobs_history (status, id)
    WHERE status IN ('DEAD', 'CANCELLED');

-- Idempotency keys, of the jobs in both tables. A unique index cannot span two tables,
-- and jobs' own one could not see a job that moved: a repeat would then insert a second
-- job. The key row is written by the keyed enqueue (only by that one: the unkeyed insert
-- pays nothing), never touched when the job moves, and deleted by retention with its job.
-- Concurrent enqueues with one key: the second waits on this primary key for the first to
-- commit, then finds the key taken and reads the job it names.
CREATE TABLE IF NOT EXISTS job_keys (
    idempotency_key text PRIMARY KEY,
    job_id          uuid NOT NULL
);
INSERT INTO job_keys (idempotency_key, job_id)
SELECT idempotency_key, id FROM jobs WHERE idempotency_key IS NOT NULL
ON CONFLICT DO NOTHING;

-- Any UPDATE that makes a job finished moves it: the statements that finish jobs rarely
-- (the reaper making a job DEAD, a shutdown release spending the last attempt, a restored
-- forgotten claim, an operator's cancel, and any such statement added later) need nothing
-- more than the UPDATE they always did. The WHEN clause is evaluated in the executor, so
-- the updates that do not finish a job (every claim, every heartbeat) never call the
-- function. The hot path (record_outcomes) moves its rows in its own statement instead:
-- a function call per row made that statement 4x slower (see queries.sql).
-- The trigger fires at the end of the statement, after its RETURNING rows and its
-- data-modifying CTEs (job_events) are done, so those statements read as before.
CREATE OR REPLACE FUNCTION aqueue_move_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM jobs WHERE id = NEW.id;
    INSERT INTO jobs_history SELECT NEW.*;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS jobs_move_finished ON jobs;
CREATE TRIGGER jobs_move_finished
    AFTER UPDATE ON jobs
    FOR EACH ROW
    WHEN (NEW.status IN ('COMPLETED', 'DEAD', 'CANCELLED'))
    EXECUTE FUNCTION aqueue_move_finished();

-- The finished jobs already stored move now (one statement: a big history takes a while,
-- under the lock this migration holds; see the README's upgrade note).
WITH moved AS (
    DELETE FROM jobs WHERE status IN ('COMPLETED', 'DEAD', 'CANCELLED') RETURNING *
)
INSERT INTO jobs_history SELECT * FROM moved;

-- Nothing finished stays in jobs any more, so nothing lists failed jobs from there.
DROP INDEX IF EXISTS jobs_failed_idx;

-- Every job wherever it lives, for reads that do not care (GET /jobs, a job's events).
-- ORDER BY id ... LIMIT over it is a merge of both primary keys, newest first.
CREATE OR REPLACE VIEW all_jobs AS
    SELECT * FROM jobs
    UNION ALL
    SELECT * FROM jobs_history;

-- The smallest time-ordered id (aqueue_uuid7) of a time: every job created before `at`
-- has a smaller id. Retention walks the history's primary key up to it.
CREATE OR REPLACE FUNCTION aqueue_uuid7_floor(at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT (lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0')
            || '00000000000000000000')::uuid
$$;
