-- Operating the queue: cancel, pause, priorities that cannot starve, per-job timeouts,
-- waiting for a result, dependencies, and the registry of live workers.

-- The priority the claim orders by: the job's own, until the reaper promotes a job that
-- waited longer than --promote-after (then the highest there is), so that a stream of
-- higher-priority work cannot starve it.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS effective_priority integer NOT NULL DEFAULT 0;
UPDATE jobs SET effective_priority = priority
WHERE priority <> 0 AND status IN ('PENDING', 'RETRY');

-- Seconds an attempt may run before its handler is cancelled (null: no limit here; the
-- task's own default applies).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS timeout_seconds float8;
-- How many of the jobs it depends on have not COMPLETED yet; it is claimed at 0 only.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS waiting_for integer NOT NULL DEFAULT 0;
-- Jobs wait for it: its end is written by the statement that also releases or cancels
-- them, not by the batched completion, which stays as lean as it was.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS has_dependents boolean NOT NULL DEFAULT false;
-- Someone waits for this job's end (aqueue.wait, GET /jobs/{id}?wait=): notify it.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS notify_finish boolean NOT NULL DEFAULT false;

-- The runnable index now follows the effective priority and leaves out jobs still
-- waiting for others; the claim and seconds_until_next_job read it alone.
CREATE INDEX IF NOT EXISTS jobs_claimable_idx
    ON jobs (queue, effective_priority DESC, run_after)
    WHERE status IN ('PENDING', 'RETRY') AND waiting_for = 0;
DROP INDEX IF EXISTS jobs_runnable_idx;

CREATE TABLE IF NOT EXISTS job_dependencies (
    parent_id uuid NOT NULL,
    child_id  uuid NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX IF NOT EXISTS job_dependencies_child_idx ON job_dependencies (child_id);

-- A queue's stored state: paused queues are not claimed from, by any worker, also after a
-- restart. A queue without a row is running.
CREATE TABLE IF NOT EXISTS queues (
    name       text PRIMARY KEY,
    paused     boolean     NOT NULL DEFAULT false,
    changed_at timestamptz NOT NULL DEFAULT now()
);

-- Finished attempts by queue over a recent window (GET /queues) without a join; BRIN
-- because job_events is appended in time order.
ALTER TABLE job_events ADD COLUMN IF NOT EXISTS queue text;
CREATE INDEX IF NOT EXISTS job_events_at_brin ON job_events USING brin (at);

-- Every live aqueue process, written by its heartbeat (one statement per interval).
CREATE TABLE IF NOT EXISTS workers (
    id             text PRIMARY KEY,
    host           text        NOT NULL,
    pid            integer     NOT NULL,
    version        text        NOT NULL,
    roles          text[]      NOT NULL,
    queues         jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- queue -> concurrency
    running        integer     NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    stopped_at     timestamptz
);
