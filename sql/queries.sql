-- Every statement aqueue runs, each under a `-- name: x --` header.
-- Loaded once by aqueue/store.py, which is the only module that runs them.
-- Conventions: the statement that ends an attempt writes its job_events row (a
-- data-modifying CTE), and a worker's outcome is fenced by its lease token.
--
-- Where a job lives (sql/005_history.sql): `jobs` holds PENDING, RETRY and RUNNING jobs
-- only, the claim's table; a finished job (COMPLETED, DEAD, CANCELLED) is in
-- `jobs_history`, same columns. `all_jobs` is both, for reads. The rules:
--
-- 1. A statement that finishes jobs UPDATEs them in `jobs` to the finished status, as any
--    other transition: `UPDATE jobs SET status = 'CANCELLED', finished_at = now(),
--    locked_by = NULL, locked_at = NULL, lease_token = NULL, lease_expires_at = NULL,
--    updated_at = now() WHERE ... RETURNING ...`, with its job_events row written from
--    RETURNING in the same statement. The trigger jobs_move_finished moves each such row
--    to jobs_history at the end of the statement: nothing else to do, nothing to forget.
--    Within that statement the row is still in `jobs`; any later statement finds it in
--    `jobs_history` (read `all_jobs` when either will do).
-- 2. A statement that finishes jobs on the hot path moves them itself, as
--    record_outcomes does: `moved AS (DELETE FROM jobs ... RETURNING ...)` then
--    `INSERT INTO jobs_history (every column) SELECT ... FROM moved` with the finished
--    values. That writes what the UPDATE wrote (the old version dead, one new tuple),
--    where the trigger's function call per row made record_outcomes 4x slower.
-- 3. A finished job that runs again (retry_job, retry_dead) moves back the same way:
--    `DELETE FROM jobs_history ... RETURNING`, `INSERT INTO jobs (every column)`.
-- 4. Never INSERT into `jobs` with a finished status, never UPDATE `jobs_history` to an
--    unfinished one (its CHECK refuses). A column added to jobs is added to jobs_history
--    (same order) and to the column lists of the moving statements; all_jobs is
--    recreated. tests/integration/test_history.py checks all three.
-- 5. Idempotency keys live in `job_keys` (key -> job id, wherever the job is): a keyed
--    insert writes it first (insert_job_keyed); retention deletes it with the job.

-- name: insert_job --
-- One round trip for the common case, the NOTIFY included (delivered only if the
-- transaction commits; a trigger doing the same cost a third of the insert rate).
-- A job without an idempotency key: nothing to check, a plain insert. It returns only
-- what the database decides (the times); the caller knows the rest. The whole row cost
-- a third of the statement's time, mostly in sending and decoding 29 columns. The NOTIFY
-- is in the RETURNING list, not in a query around the insert: the pool plans every
-- execution anew, and planning that outer query cost 10% of the enqueue.
INSERT INTO jobs (id, type, payload, queue, priority, effective_priority, run_after,
                  max_attempts, timeout_seconds)
VALUES ($1, $2, $3, $4, $5, $5, coalesce($6, now()), $7, $8)
RETURNING run_after, created_at, updated_at, pg_notify('aqueue_jobs', queue) AS notified;

-- name: insert_job_keyed --
-- A job with an idempotency key: the key is claimed in job_keys first, which holds the
-- keys of finished jobs too. A taken key (also one taken by a concurrent enqueue, which
-- this statement waits for) returns no row; the caller then reads the job the key names
-- (a new statement, so it sees the winner's commit).
WITH keyed AS (
    INSERT INTO job_keys (idempotency_key, job_id) VALUES ($9, $1)
    ON CONFLICT DO NOTHING
    RETURNING job_id
)
INSERT INTO jobs (id, type, payload, queue, priority, effective_priority, run_after,
                  max_attempts, timeout_seconds, idempotency_key)
SELECT job_id, $2, $3, $4, $5, $5, coalesce($6, now()), $7, $8, $9 FROM keyed
RETURNING run_after, created_at, updated_at, pg_notify('aqueue_jobs', queue) AS notified;

-- name: insert_jobs --
-- A whole batch in one statement, and one NOTIFY per queue, not per row: a batch of
-- 1,000 jobs wakes the workers once. (The scalar subquery runs the `woken` CTE once.)
-- The batch arrives as one JSON array of jobs: one document to encode and parse, where
-- eight parallel arrays cost ~30% of the insert rate in per-element encoding.
-- For batches without idempotency keys; insert_jobs_keyed takes the others.
WITH inserted AS (
    INSERT INTO jobs (id, type, payload, queue, priority, effective_priority, run_after,
                      max_attempts, timeout_seconds)
    SELECT u.id, u.type, u.payload, u.queue, u.priority, u.priority,
           coalesce(u.run_after, now()), u.max_attempts, u.timeout_seconds
    FROM jsonb_to_recordset($1::jsonb)
         AS u(id uuid, type text, payload jsonb, queue text, priority int,
              run_after timestamptz, max_attempts int, timeout_seconds float8)
    RETURNING id, queue
), woken AS (
    SELECT pg_notify('aqueue_jobs', queue) FROM (SELECT DISTINCT queue FROM inserted) q
)
SELECT id FROM inserted WHERE (SELECT count(*) FROM woken) > 0;

-- name: insert_jobs_keyed --
-- insert_jobs for a batch with idempotency keys: each key is claimed in job_keys first
-- (see insert_job_keyed); a job whose key is taken (or repeated within the batch) is not
-- inserted and its id not returned.
WITH batch AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb)
         AS u(id uuid, type text, payload jsonb, queue text, priority int,
              run_after timestamptz, max_attempts int, idempotency_key text,
              timeout_seconds float8)
), keyed AS (
    INSERT INTO job_keys (idempotency_key, job_id)
    SELECT idempotency_key, id FROM batch WHERE idempotency_key IS NOT NULL
    ORDER BY idempotency_key
    ON CONFLICT DO NOTHING
    RETURNING job_id
), inserted AS (
    INSERT INTO jobs (id, type, payload, queue, priority, effective_priority, run_after,
                      max_attempts, idempotency_key, timeout_seconds)
    SELECT u.id, u.type, u.payload, u.queue, u.priority, u.priority,
           coalesce(u.run_after, now()), u.max_attempts, u.idempotency_key,
           u.timeout_seconds
    FROM batch u
    WHERE u.idempotency_key IS NULL OR u.id IN (SELECT job_id FROM keyed)
    RETURNING id, queue
), woken AS (
    SELECT pg_notify('aqueue_jobs', queue) FROM (SELECT DISTINCT queue FROM inserted) q
)
SELECT id FROM inserted WHERE (SELECT count(*) FROM woken) > 0;

-- name: insert_jobs_flow --
-- insert_jobs for jobs that name a concurrency key or a fair key (single jobs too: the
-- plain inserts stay as they were), idempotency keys as in insert_jobs_keyed. Returns
-- the inserted rows whole.
-- A fair key gives each job a tag (start-time fair queueing): the tenant's jobs are
-- spaced 1/weight apart from where its clock stands, and a clock that fell behind the
-- queue's virtual time (the smallest tag still due, or the largest clock when none is)
-- is moved up to it first, so an idle tenant cannot bank credit and a flood of one
-- tenant's jobs lies ahead of another's only by their share. The tenant rows are locked
-- in (queue, key) order. The first fair job of a queue marks it fair and tells the
-- workers, which then claim it with claim_flow.
WITH batch AS (
    SELECT u.*, row_number() OVER () AS ord
    FROM jsonb_to_recordset($1::jsonb)
         AS u(id uuid, type text, payload jsonb, queue text, priority int,
              run_after timestamptz, max_attempts int, idempotency_key text,
              timeout_seconds float8, concurrency_key text, fair_key text)
), keyed AS (
    INSERT INTO job_keys (idempotency_key, job_id)
    SELECT idempotency_key, id FROM batch WHERE idempotency_key IS NOT NULL
    ORDER BY idempotency_key
    ON CONFLICT DO NOTHING
    RETURNING job_id
), accepted AS MATERIALIZED (
    SELECT b.*, row_number() OVER (PARTITION BY b.queue, b.fair_key ORDER BY b.ord) AS nth
    FROM batch b
    WHERE b.idempotency_key IS NULL OR b.id IN (SELECT job_id FROM keyed)
), tenants AS MATERIALIZED (
    SELECT a.queue, a.fair_key, count(*) AS n,
           1.0 / coalesce((SELECT (q.fair_weights ->> a.fair_key)::float8
                           FROM queues q WHERE q.name = a.queue), 1.0) AS step
    FROM accepted a WHERE a.fair_key IS NOT NULL
    GROUP BY a.queue, a.fair_key
), marked AS (
    INSERT INTO queues (name, fair)
    SELECT DISTINCT t.queue, true FROM tenants t
    WHERE NOT EXISTS (SELECT 1 FROM queues q WHERE q.name = t.queue AND q.fair)
    ON CONFLICT (name) DO UPDATE SET fair = true, changed_at = now()
    RETURNING pg_notify('aqueue_queue', name)
), clocks AS (
    INSERT INTO fair_keys AS f (queue, key, base, vclock)
    SELECT t.queue, t.fair_key, v.now, v.now + t.n * t.step
    FROM tenants t CROSS JOIN LATERAL (
        SELECT coalesce(
            (SELECT j.vtag FROM jobs j
             WHERE j.queue = t.queue AND j.status IN ('PENDING', 'RETRY')
               AND j.waiting_for = 0 AND j.vtag IS NOT NULL AND j.run_after <= now()
             ORDER BY j.effective_priority DESC, j.vtag LIMIT 1),
            (SELECT max(k.vclock) FROM fair_keys k WHERE k.queue = t.queue),
            0) AS now) v
    ORDER BY t.queue, t.fair_key
    ON CONFLICT (queue, key) DO UPDATE
        SET base = greatest(f.vclock, excluded.base),
            vclock = greatest(f.vclock, excluded.base) + (excluded.vclock - excluded.base)
    RETURNING f.queue, f.key, f.base
), inserted AS (
    INSERT INTO jobs (id, type, payload, queue, priority, effective_priority, run_after,
                      max_attempts, idempotency_key, timeout_seconds, concurrency_key,
                      fair_key, vtag)
    SELECT a.id, a.type, a.payload, a.queue, a.priority, a.priority,
           coalesce(a.run_after, now()), a.max_attempts, a.idempotency_key,
           a.timeout_seconds, a.concurrency_key, a.fair_key, c.base + a.nth * t.step
    FROM accepted a
    LEFT JOIN clocks c ON c.queue = a.queue AND c.key = a.fair_key
    LEFT JOIN tenants t ON t.queue = a.queue AND t.fair_key = a.fair_key
    RETURNING *
), woken AS (
    SELECT pg_notify('aqueue_jobs', queue) FROM (SELECT DISTINCT queue FROM inserted) q
)
SELECT inserted.* FROM inserted WHERE (SELECT count(*) FROM woken) >= 0
  AND (SELECT count(*) FROM marked) >= 0;

-- name: job_ids_by_keys --
SELECT idempotency_key, job_id AS id FROM job_keys WHERE idempotency_key = ANY($1::text[]);

-- name: job_by_key --
SELECT * FROM all_jobs
WHERE id = (SELECT job_id FROM job_keys WHERE idempotency_key = $1);

-- name: get_job --
-- One snapshot for both tables: a job moving between them is seen in exactly one.
SELECT * FROM all_jobs WHERE id = $1;

-- name: list_jobs --
-- Newest first (ids are time-ordered), keyset-paginated on the id through the primary
-- key: a page costs the same however deep. Used unfiltered, and for the statuses an index
-- finds: DEAD and CANCELLED (jobs_history_failed_idx), RUNNING (jobs_lease_idx).
-- store.py runs this and list_jobs_bounded on `all_jobs` as written when no status is
-- asked for (a merge of both tables' primary keys), else on the one table that holds
-- jobs of that status: `jobs` or `jobs_history` in place of `all_jobs`.
SELECT * FROM all_jobs
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::text IS NULL OR queue = $2)
  AND ($3::text IS NULL OR type = $3)
  AND ($4::uuid IS NULL OR id < $4)
ORDER BY id DESC
LIMIT $5;

-- name: list_jobs_bounded --
-- list_jobs for the other filters, which no index serves: a filter that matches rarely
-- (or never: ?queue=nope) would walk the whole primary key to fill a page. This walk
-- examines at most $6 jobs below the cursor (the inner LIMIT; the pipeline stops sooner
-- once the page is full) and also returns the last job examined, `matched` false unless
-- it matches, so that a short page can say where to continue.
-- On 500,000 jobs, ?queue=nope went from reading the whole table (86 ms, 17,800 buffers)
-- to 9 ms (394 buffers); a filter that matches often still stops at its page (0.1-0.5 ms).
-- Why not an index per filter instead: (status, id), (queue, id) and (type, id) took the
-- WAL of an insert from 420 to 670 bytes, of a claim and completion from 1,060 to 1,640,
-- and PostgreSQL's CPU per job from 9 to 13 us for batch inserts and from 33 to 53 us for
-- a claim and completion (70,000 jobs, medians of 5 runs): the hot path pays for every
-- job what a listing would save now and then. (queue, id) and (type, id) alone: +35-50%.
SELECT * FROM (
    SELECT scanned.*,
           ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR queue = $2)
               AND ($3::text IS NULL OR type = $3) AS matched
    FROM (
        SELECT all_jobs.*, row_number() OVER (ORDER BY id DESC) AS examined
        FROM all_jobs
        WHERE ($4::uuid IS NULL OR id < $4)
        ORDER BY id DESC
        LIMIT $6
    ) scanned
) page
WHERE matched OR examined = $6
ORDER BY id DESC
LIMIT $5;

-- name: job_events --
-- The history of a job as transitions: its creation and a running attempt come from the
-- job row (wherever it lives), each finished attempt gives two (its start, its end) from
-- job_events.
SELECT * FROM (
    SELECT created_at AS at, 'PENDING' AS status, 0 AS attempt, NULL AS worker,
           NULL AS error
    FROM all_jobs WHERE id = $1
    UNION ALL
    SELECT started_at, 'RUNNING', attempt, worker, NULL
    FROM job_events WHERE job_id = $1 AND started_at IS NOT NULL
    UNION ALL
    SELECT at, status, attempt, worker, error FROM job_events WHERE job_id = $1
    UNION ALL
    SELECT started_at, 'RUNNING', attempts, locked_by, NULL
    FROM jobs WHERE id = $1 AND status = 'RUNNING'
) history
ORDER BY at, status = 'RUNNING' DESC;

-- name: claim_lease --
-- A fragment of the claims (store.py puts its text where they name it
-- in double braces): lease the picked jobs to worker $3 for $4 seconds and return what
-- it runs (the plain claim adds a column to this list; the others name it `claimed`).
-- A lease token is the claim's 64 random bits ($5, made by the worker for each claim)
-- then the last 64 bits of the job's id: a claim of the same job again (also one that
-- repeats a claim a crash made PostgreSQL forget) gets other random bits, and the jobs of
-- one claim differ by their ids' (62 of those bits are random in every id aqueue makes).
-- gen_random_uuid() made an idle worker's claim 35-50 us longer on the server (claims on
-- a backend idle for 20 ms, statement durations p50: 312 against 264 and 335 against
-- 301 us), and cost 1.1-1.3 us per row warm against 0.75 for these string operations.
UPDATE jobs j SET
    status = 'RUNNING',
    attempts = j.attempts + 1,
    locked_by = $3,
    locked_at = now(),
    lease_token = (left($5::uuid::text, 18) || right(j.id::text, 18))::uuid,
    lease_expires_at = now() + make_interval(secs => $4),
    started_at = now(),
    updated_at = now()
WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
-- The times as epoch seconds: decoding three timestamptz per job cost the worker a
-- third more CPU per job than the whole rest of the claim; the handler's context
-- turns them into datetimes only if it asks.
RETURNING j.id, j.type, j.payload, j.queue, j.priority, j.attempts, j.max_attempts,
          j.lease_token, date_part('epoch', j.created_at),
          date_part('epoch', j.run_after), date_part('epoch', j.started_at),
          j.timeout_seconds

-- name: claim_result --
-- A fragment of the claims: the claimed jobs; a first attempt's claim
-- commits without waiting for its WAL flush (see claim).
SELECT claimed.* FROM claimed,
    (SELECT set_config('synchronous_commit',
                       CASE WHEN EXISTS (SELECT 1 FROM claimed WHERE attempts > 1)
                            THEN 'on' ELSE 'off' END,
                       true)) AS durability

-- name: claim --
-- The hot path: pick up to $2 runnable jobs of queue $1 and lease them to worker $3 for
-- $4 seconds, in one statement. SKIP LOCKED lets concurrent workers pass each other's
-- picks instead of queueing behind them; the picked ids are handed to the UPDATE as an
-- array (`id = ANY(ARRAY(...))`) so the planner cannot turn the pick into a bad join.
-- Each claim gets a fresh lease token: only its holder may record the outcome. The claim
-- writes no history row: started_at and locked_by are the RUNNING transition until the
-- attempt ends and its job_events row is written.
-- A first attempt's claim commits without waiting for its WAL flush (the claim loop's own
-- connection has synchronous_commit off; see CLAIM_SERVER_SETTINGS): waiting behind the
-- completer's flushes cost a third of the drain rate. A claim forgotten by a PostgreSQL
-- crash leaves the job as it was, so it runs again and the lease fence refuses the
-- forgotten run's outcome (the worker that still holds it writes the attempt back:
-- restore_forgotten); every outcome is flushed after the claims it follows, the WAL being
-- flushed in order. A claim of a job that has run before commits durably: a job whose
-- handler crashes PostgreSQL (or has a backend OOM-killed) right after its claim cannot
-- lose its attempts to crash recovery and crash-loop the database for ever; it reaches
-- DEAD like any failing job. The last column turns synchronous_commit on for the
-- statement's transaction (set_config(..., true)) as it returns such a job: deciding it
-- in a CTE joined to the result, as the flow claims do, made an idle worker's claim
-- round trip ~35 us (4%) longer in a timed probe.
-- It reads jobs_claimable_idx alone: jobs still waiting for others (waiting_for > 0)
-- are not in it, and a paused queue costs one primary-key probe of `queues` per claim
-- (an InitPlan, evaluated once per statement, not per row). A queue with a rate limit,
-- key caps or fair keys is claimed only by claim_flow: a worker that has not heard of
-- them yet claims nothing here rather than past them.
WITH picked AS (
    SELECT id FROM jobs
    WHERE status IN ('PENDING', 'RETRY') AND waiting_for = 0 AND queue = $1
      AND run_after <= now()
      AND NOT EXISTS (SELECT 1 FROM queues WHERE name = $1
                      AND (paused OR rate_count IS NOT NULL OR fair
                           OR key_concurrency IS NOT NULL OR key_limits IS NOT NULL))
    ORDER BY effective_priority DESC, run_after
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
{{claim_lease}},
          CASE WHEN j.attempts > 1 THEN set_config('synchronous_commit', 'on', true) END;

-- name: claim_flow --
-- claim for a queue with flow control: a rate limit, per-key concurrency caps, fair keys,
-- in any combination (the worker picks this variant only for such queues, so the plain
-- claim never looks at any of it). One statement, locks always taken in one order: the
-- queue's bucket row (the only lock that waits: one short row, and waiting is cheaper
-- than skipping and claiming nothing), then jobs and slot rows, both SKIP LOCKED.
-- Rate (GCRA): `burst - ceil((tat - now) / interval)` jobs may start; the bucket is
-- charged for the jobs actually claimed. A paused queue allows none.
-- Fair share: tagged jobs (a fair key) are taken in tag order within a priority, from
-- jobs_fair_idx; untagged jobs of the queue fill what is left of the batch.
-- Key caps: a job of a capped key is a candidate only while its key has a free slot row
-- (or none yet); the k-th candidate of a key in the batch needs the k-th free slot this
-- claim could lock, so a batch never takes more than the free slots (graphile-worker
-- #621), and a slot taken concurrently is skipped, never shared. The first claim that
-- meets a capped key makes its slot rows (its jobs start at the next claim, which the
-- NOTIFY triggers). A claim that takes a slot commits durably: a slot forgotten by a
-- crash would let its job run uncounted.
WITH conf AS MATERIALIZED (
    SELECT paused, rate_count, key_concurrency, key_limits FROM queues WHERE name = $1
), bucket AS MATERIALIZED (
    SELECT rate_period / rate_count AS step, rate_count AS burst,
           greatest(coalesce(rate_tat, now()), now()) AS t0
    FROM queues WHERE name = $1 AND rate_count IS NOT NULL AND NOT paused
    FOR UPDATE
), allowed AS MATERIALIZED (
    SELECT CASE WHEN c.paused THEN 0
                WHEN c.rate_count IS NULL THEN $2
                ELSE coalesce((
                    SELECT greatest(0, least($2, b.burst - ceil(
                        round((extract(epoch FROM b.t0 - now()) / b.step)::numeric, 6))::int))
                    FROM bucket b), 0)
           END AS n
    FROM conf c
), tagged AS (
    SELECT j.id, j.concurrency_key AS ckey, j.effective_priority AS prio, j.vtag,
           j.run_after
    FROM jobs j
    WHERE j.status IN ('PENDING', 'RETRY') AND j.waiting_for = 0 AND j.queue = $1
      AND j.vtag IS NOT NULL AND j.run_after <= now()
      AND {{slot_may_be_free}}
    ORDER BY j.effective_priority DESC, j.vtag
    LIMIT coalesce((SELECT n FROM allowed), 0)
    FOR UPDATE OF j SKIP LOCKED
), untagged AS (
    SELECT j.id, j.concurrency_key AS ckey, j.effective_priority AS prio, j.vtag,
           j.run_after
    FROM jobs j
    WHERE j.status IN ('PENDING', 'RETRY') AND j.waiting_for = 0 AND j.queue = $1
      AND j.vtag IS NULL AND j.run_after <= now()
      AND {{slot_may_be_free}}
    ORDER BY j.effective_priority DESC, j.run_after
    LIMIT coalesce((SELECT n FROM allowed), 0) - (SELECT count(*) FROM tagged)
    FOR UPDATE OF j SKIP LOCKED
), cand AS MATERIALIZED (
    SELECT u.*, coalesce(((SELECT key_limits FROM conf) ->> u.ckey)::int,
                         (SELECT key_concurrency FROM conf)) AS cap,
           row_number() OVER (PARTITION BY u.ckey
                              ORDER BY u.prio DESC, u.vtag, u.run_after) AS rn
    FROM (SELECT * FROM tagged UNION ALL SELECT * FROM untagged) u
), need AS MATERIALIZED (
    SELECT c.ckey, c.n, c.cap,
           EXISTS (SELECT 1 FROM concurrency_slots s
                   WHERE s.queue = $1 AND s.key = c.ckey) AS has_rows
    FROM (SELECT ckey, count(*) AS n, max(cap) AS cap FROM cand
          WHERE ckey IS NOT NULL AND cap IS NOT NULL
          GROUP BY ckey) c
), slots AS MATERIALIZED (
    SELECT s.key, s.slot, row_number() OVER (PARTITION BY s.key ORDER BY s.slot) AS rn
    FROM need CROSS JOIN LATERAL (
        SELECT key, slot FROM concurrency_slots
        WHERE queue = $1 AND key = need.ckey AND job_id IS NULL
        ORDER BY slot LIMIT need.n
        FOR UPDATE SKIP LOCKED) s
), made AS (
    INSERT INTO concurrency_slots (queue, key, slot)
    SELECT $1, need.ckey, g FROM need, generate_series(0, need.cap - 1) AS g
    WHERE NOT need.has_rows
    ORDER BY need.ckey, g
    ON CONFLICT DO NOTHING
    -- (once per row, sent once: the same notification twice in a transaction is one)
    RETURNING pg_notify('aqueue_jobs', $1)
), pick AS MATERIALIZED (
    SELECT c.id, c.ckey, sl.slot FROM cand c
    LEFT JOIN slots sl ON sl.key = c.ckey AND sl.rn = c.rn
    WHERE c.ckey IS NULL OR c.cap IS NULL OR sl.slot IS NOT NULL
), held AS (
    UPDATE concurrency_slots s SET job_id = p.id, taken_at = now()
    FROM pick p
    WHERE s.queue = $1 AND s.key = ANY(ARRAY(SELECT ckey FROM pick WHERE slot IS NOT NULL))
      AND s.key = p.ckey AND s.slot = p.slot
), picked AS (
    SELECT id FROM pick
), claimed AS (
{{claim_lease}}
), spent AS (
    UPDATE queues q SET rate_tat = b.t0 + make_interval(secs => b.step * (
        SELECT count(*) FROM claimed))
    FROM bucket b WHERE q.name = $1 AND EXISTS (SELECT 1 FROM claimed)
)
SELECT claimed.* FROM claimed,
    (SELECT set_config('synchronous_commit',
                       CASE WHEN EXISTS (SELECT 1 FROM claimed WHERE attempts > 1)
                              OR EXISTS (SELECT 1 FROM pick WHERE slot IS NOT NULL)
                            THEN 'on' ELSE 'off' END,
                       true)) AS durability;

-- name: claim_fair --
-- claim_flow for a queue without key caps (a rate limit, fair keys, or both): the same
-- bucket and the same order, without the slot work, so a fair queue pays for its order
-- only.
WITH bucket AS MATERIALIZED (
    SELECT rate_period / rate_count AS step, rate_count AS burst,
           greatest(coalesce(rate_tat, now()), now()) AS t0
    FROM queues WHERE name = $1 AND rate_count IS NOT NULL AND NOT paused
    FOR UPDATE
), allowed AS MATERIALIZED (
    SELECT CASE WHEN q.paused THEN 0
                -- caps just set: a worker that has not heard yet claims nothing here
                WHEN q.key_concurrency IS NOT NULL OR q.key_limits IS NOT NULL THEN 0
                WHEN q.rate_count IS NULL THEN $2
                ELSE coalesce((
                    SELECT greatest(0, least($2, b.burst - ceil(
                        round((extract(epoch FROM b.t0 - now()) / b.step)::numeric, 6))::int))
                    FROM bucket b), 0)
           END AS n
    FROM queues q WHERE q.name = $1
), tagged AS (
    SELECT j.id FROM jobs j
    WHERE j.status IN ('PENDING', 'RETRY') AND j.waiting_for = 0 AND j.queue = $1
      AND j.vtag IS NOT NULL AND j.run_after <= now()
    ORDER BY j.effective_priority DESC, j.vtag
    LIMIT coalesce((SELECT n FROM allowed), 0)
    FOR UPDATE OF j SKIP LOCKED
), untagged AS (
    SELECT j.id FROM jobs j
    WHERE j.status IN ('PENDING', 'RETRY') AND j.waiting_for = 0 AND j.queue = $1
      AND j.vtag IS NULL AND j.run_after <= now()
    ORDER BY j.effective_priority DESC, j.run_after
    LIMIT coalesce((SELECT n FROM allowed), 0) - (SELECT count(*) FROM tagged)
    FOR UPDATE OF j SKIP LOCKED
), picked AS (
    SELECT id FROM tagged UNION ALL SELECT id FROM untagged
), claimed AS (
{{claim_lease}}
), spent AS (
    UPDATE queues q SET rate_tat = b.t0 + make_interval(secs => b.step * (
        SELECT count(*) FROM claimed))
    FROM bucket b WHERE q.name = $1 AND EXISTS (SELECT 1 FROM claimed)
)
{{claim_result}};

-- name: slot_may_be_free --
-- A fragment of claim_flow: job j may start as far as its key's cap goes: it has no
-- concurrency key, or its key has no cap here, or a free slot row, or no rows yet.
(j.concurrency_key IS NULL
 OR coalesce(((SELECT key_limits FROM conf) ->> j.concurrency_key)::int,
             (SELECT key_concurrency FROM conf)) IS NULL
 OR (SELECT bool_or(s.job_id IS NULL) FROM concurrency_slots s
     WHERE s.queue = $1 AND s.key = j.concurrency_key) IS NOT FALSE)

-- name: seconds_until_next_job --
-- How long a worker of queue $1 may sleep before a delayed or retrying job comes due: the
-- earliest run_after among its runnable jobs (negative: one is due now; null: none, or
-- the queue is paused). The index is ordered by effective priority first, so this walks
-- it one distinct priority at a time (a loose index scan): a few index probes, where
-- min(run_after) would read the whole backlog.
WITH RECURSIVE priorities AS (
    (SELECT effective_priority AS priority FROM jobs
     WHERE status IN ('PENDING', 'RETRY') AND waiting_for = 0 AND queue = $1
     ORDER BY effective_priority DESC LIMIT 1)
    UNION ALL
    SELECT (SELECT j.effective_priority FROM jobs j
            WHERE j.status IN ('PENDING', 'RETRY') AND j.waiting_for = 0 AND j.queue = $1
              AND j.effective_priority < p.priority
            ORDER BY j.effective_priority DESC LIMIT 1)
    FROM priorities p WHERE p.priority IS NOT NULL
)
SELECT extract(epoch FROM min(
           (SELECT j.run_after FROM jobs j
            WHERE j.status IN ('PENDING', 'RETRY') AND j.waiting_for = 0 AND j.queue = $1
              AND j.effective_priority = p.priority
            ORDER BY j.run_after LIMIT 1)) - now())::float8
FROM priorities p
WHERE p.priority IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM queues WHERE name = $1 AND paused);

-- name: record_outcomes --
-- A batch of outcomes (COMPLETED, RETRY or DEAD) in one statement. A row is written only
-- while the job is still RUNNING under the same lease token: a worker whose lease was
-- reclaimed cannot overwrite the new owner's outcome. Returns the lease tokens accepted.
-- A RETRY stays in jobs (an UPDATE); a COMPLETED or DEAD job moves to jobs_history here,
-- deleted from jobs and inserted there finished (rule 2 at the top), which writes about
-- what the UPDATE to COMPLETED wrote before (the old version dead, one new tuple):
-- 504 bytes of WAL per job with its job_events row, 523 before; 22 us of PostgreSQL
-- time per job, as before (batches of 100, one connection, medians of 3). Left to the
-- trigger, the same statement took 93 us per job. The RETRY update finds its rows by
-- id (`= ANY`): joined to the outcomes, the planner scanned every running job per
-- outcome (0.7 ms per batch of 100 that had no retry at all).
-- The outcomes arrive sorted by id and the rows are locked in the order they are probed
-- (a hash join on the running jobs, probed by the outcomes in turn; the RETRY rows by an
-- index scan of their ids), so in id order: the RETRY rows first, then the finished ones.
-- The rows of one batch are all this worker's, and the other multi-row statements on
-- running jobs (heartbeat, reaper) never wait for a lock (SKIP LOCKED); a deadlock with
-- an operator's transaction aborts the batch, which the completer retries whole.
-- (The completer wakes the workers of a queue that got a RETRY: see notify_queues.)
-- A job that others depend on (has_dependents) or that someone waits for (notify_finish)
-- is refused here: the completer writes its outcome with finish_with_consequences
-- instead, which also releases or cancels its dependents and notifies its waiters, so
-- this statement stays as lean for every other job (a NOTIFY step here, even one that
-- sent nothing, cost a microsecond per job).
WITH outcome AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], $5::text[],
                         $6::float8[])
        AS o(id, token, status, result, error, retry_in)
), retried AS (
    UPDATE jobs j SET
        status = 'RETRY',
        result = o.result,
        last_error = coalesce(o.error, j.last_error),
        run_after = now() + make_interval(secs => o.retry_in),
        finished_at = NULL,
        locked_by = NULL,
        locked_at = NULL,
        lease_token = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM outcome o
    WHERE j.id = ANY(ARRAY(SELECT id FROM outcome WHERE status = 'RETRY'))
      AND j.id = o.id AND j.lease_token = o.token AND j.status = 'RUNNING'
      AND NOT (j.has_dependents OR j.notify_finish)
    RETURNING j.id, o.token, j.status, j.attempts, j.started_at, o.error, j.queue
), moved AS (
    DELETE FROM jobs j
    USING outcome o
    WHERE o.status <> 'RETRY'
      AND j.id = o.id AND j.lease_token = o.token AND j.status = 'RUNNING'
      AND NOT (j.has_dependents OR j.notify_finish)
    RETURNING j.*, o.token AS o_token, o.status AS o_status, o.result AS o_result,
              o.error AS o_error
), archived AS (
    INSERT INTO jobs_history (id, type, payload, status, queue, priority, attempts,
                              max_attempts, run_after, locked_by, locked_at, last_error,
                              idempotency_key, created_at, updated_at, lease_token,
                              lease_expires_at, result, started_at, finished_at, releases,
                              effective_priority, timeout_seconds, waiting_for,
                              has_dependents, notify_finish, concurrency_key, fair_key,
                              vtag)
    SELECT id, type, payload, o_status, queue, priority, attempts,
           max_attempts, run_after, NULL, NULL, coalesce(o_error, last_error),
           idempotency_key, created_at, now(), NULL,
           NULL, o_result, started_at, now(), releases,
           effective_priority, timeout_seconds, waiting_for,
           has_dependents, notify_finish, concurrency_key, fair_key,
           vtag
    FROM moved
), finished AS (
    SELECT id, token, status, attempts, started_at, error, queue FROM retried
    UNION ALL
    SELECT id, o_token, o_status, attempts, started_at, o_error, queue FROM moved
), logged AS (
    INSERT INTO job_events (job_id, status, attempt, worker, error, started_at, queue)
    SELECT id, status, attempts, $7, error, started_at, queue FROM finished
)
SELECT token FROM finished;

-- name: restore_forgotten --
-- Attempts whose claim PostgreSQL forgot: it crashed before the claim's asynchronous
-- commit reached the disk, so the job row is back as it was before the claim (PENDING or
-- RETRY, one attempt fewer, untouched since before that claim started) while the worker
-- still runs or has finished the attempt. The worker writes the attempt back, durably:
-- as RUNNING under its own lease when its handler still runs (the heartbeat), or with the
-- attempt's outcome (the completer). Either way the attempt counts. A row that anything
-- else changed since (another claim, an operator) is left alone. A COMPLETED or DEAD
-- outcome moves the job to jobs_history at the end of the statement (the trigger: rule 1).
WITH mine AS (
    SELECT m.id, m.token, m.attempt, to_timestamp(m.started_epoch) AS started_at, m.status,
           m.result, m.error, m.retry_in
    FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::float8[], $5::text[], $6::jsonb[],
                $7::text[], $8::float8[])
        AS m(id, token, attempt, started_epoch, status, result, error, retry_in)
), forgotten AS (
    SELECT j.id FROM jobs j JOIN mine m ON m.id = j.id
    WHERE j.id = ANY($1::uuid[]) AND j.status IN ('PENDING', 'RETRY')
      AND j.attempts = m.attempt - 1 AND j.updated_at < m.started_at
    ORDER BY j.id
    FOR UPDATE OF j
), restored AS (
    UPDATE jobs j SET
        status = m.status,
        attempts = m.attempt,
        result = m.result,
        last_error = coalesce(m.error, j.last_error),
        run_after = CASE WHEN m.status = 'RETRY'
                         THEN now() + make_interval(secs => m.retry_in)
                         ELSE j.run_after END,
        finished_at = CASE WHEN m.status IN ('RUNNING', 'RETRY') THEN NULL ELSE now() END,
        locked_by = CASE WHEN m.status = 'RUNNING' THEN $9 END,
        locked_at = CASE WHEN m.status = 'RUNNING' THEN m.started_at END,
        lease_token = CASE WHEN m.status = 'RUNNING' THEN m.token END,
        lease_expires_at = CASE WHEN m.status = 'RUNNING'
                                THEN now() + make_interval(secs => $10) END,
        started_at = m.started_at,
        updated_at = now()
    FROM mine m
    WHERE j.id = ANY(ARRAY(SELECT id FROM forgotten)) AND j.id = m.id
    RETURNING j.id, j.status, j.attempts, j.started_at, j.queue, m.error, j.has_dependents,
              j.notify_finish
), logged AS (
    INSERT INTO job_events (job_id, status, attempt, worker, error, started_at, queue)
    SELECT id, status, attempts, $9, error, started_at, queue FROM restored
    WHERE status <> 'RUNNING'
), woken AS (
    SELECT pg_notify('aqueue_jobs', queue)
    FROM (SELECT DISTINCT queue FROM restored WHERE status = 'RETRY') q
)
SELECT id, status, has_dependents, notify_finish FROM restored
WHERE (SELECT count(*) FROM woken) >= 0;

-- name: extend_leases --
-- The worker's heartbeat: renew the leases it still holds, one statement for all. It
-- never waits for a row lock (SKIP LOCKED): a row locked by another statement (this
-- worker's completer finishing it, an operator) is renewed next round, and waiting would
-- let every other lease run out behind it. Returns each lease asked about with what
-- became of it: renewed; busy (locked: still ours as far as this statement can see, not
-- renewed this round); or neither: lost (reclaimed, cancelled, or a claim PostgreSQL
-- forgot, which restore_forgotten tells apart).
WITH held AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[]) AS h(id, token)
), renewable AS (
    SELECT j.id FROM jobs j JOIN held h ON h.id = j.id AND h.token = j.lease_token
    WHERE j.id = ANY($1::uuid[]) AND j.status = 'RUNNING'
    ORDER BY j.id
    FOR NO KEY UPDATE OF j SKIP LOCKED
), renewed AS (
    UPDATE jobs j SET lease_expires_at = now() + make_interval(secs => $3)
    WHERE j.id = ANY(ARRAY(SELECT id FROM renewable))
    RETURNING j.id
)
SELECT h.token,
       r.id IS NOT NULL AS renewed,
       coalesce(j.status = 'RUNNING' AND j.lease_token = h.token, false) AS ours
FROM held h
LEFT JOIN renewed r ON r.id = h.id
LEFT JOIN jobs j ON j.id = h.id;

-- name: release_jobs --
-- Graceful shutdown: hand unfinished jobs back, due now. The first $5 releases of a job
-- refund its attempt; after that a release spends it (with the retry backoff, and DEAD
-- when none are left), so a handler that hangs until every shutdown still ends. A job
-- made DEAD moves to jobs_history at the end of the statement (the trigger: rule 1).
WITH released AS (
    UPDATE jobs j SET
        status = CASE WHEN j.releases >= $5 AND j.attempts >= j.max_attempts
                      THEN 'DEAD' ELSE 'RETRY' END,
        attempts = CASE WHEN j.releases >= $5 THEN j.attempts
                        ELSE greatest(j.attempts - 1, 0) END,
        releases = j.releases + 1,
        run_after = CASE WHEN j.releases >= $5
                         THEN now() + aqueue_backoff(j.attempts, $6, $7)
                         ELSE now() END,
        finished_at = CASE WHEN j.releases >= $5 AND j.attempts >= j.max_attempts
                           THEN now() END,
        last_error = $3 || CASE WHEN j.releases >= $5
                                THEN format(' (released %s times: this attempt counts)',
                                            j.releases + 1)
                                ELSE ' (the attempt does not count)' END,
        locked_by = NULL,
        locked_at = NULL,
        lease_token = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM unnest($1::uuid[], $2::uuid[]) AS r(id, token)
    WHERE j.id = ANY($1::uuid[]) AND j.id = r.id AND j.lease_token = r.token
      AND j.status = 'RUNNING'
    RETURNING j.id, j.status, j.attempts, j.queue, j.started_at, j.last_error,
              j.releases > $5 AS spent, j.has_dependents, j.notify_finish
), logged AS (
    INSERT INTO job_events (job_id, status, attempt, worker, error, started_at, queue)
    SELECT id, status, CASE WHEN spent THEN attempts ELSE attempts + 1 END, $4, last_error,
           started_at, queue
    FROM released  -- the attempt cut short
)
SELECT id, queue, status, has_dependents, notify_finish FROM released;

-- name: reclaim_expired --
-- The reaper: jobs whose lease ran out (their worker died or hung) go back to RETRY after
-- the same backoff as a failed attempt ($3 base, $4 cap: a job that kills its worker is
-- not handed to the next one at once, crash after crash), or to DEAD when their attempts
-- are used up. At most $1 per statement. A job made DEAD moves to jobs_history at the end
-- of the statement (the trigger: rule 1 at the top).
WITH expired AS (
    SELECT id FROM jobs
    WHERE status = 'RUNNING' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), reclaimed AS (
    UPDATE jobs j SET
        status = CASE WHEN j.attempts >= j.max_attempts THEN 'DEAD' ELSE 'RETRY' END,
        last_error = 'lease expired: worker ' || coalesce(j.locked_by, '?')
                     || ' stopped renewing it (killed or hung?)',
        run_after = now() + aqueue_backoff(j.attempts, $3, $4),
        finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
        locked_by = NULL,
        locked_at = NULL,
        lease_token = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    WHERE j.id = ANY(ARRAY(SELECT id FROM expired))
    RETURNING j.id, j.status, j.attempts, j.queue, j.last_error, j.started_at,
              j.has_dependents, j.notify_finish
), logged AS (
    INSERT INTO job_events (job_id, status, attempt, worker, error, started_at, queue)
    SELECT id, status, attempts, $2, last_error, started_at, queue FROM reclaimed
)
SELECT id, status, queue, has_dependents, notify_finish FROM reclaimed;

-- name: revive_into_jobs --
-- A fragment of retry_job and retry_dead: the rows `revived` (deleted from jobs_history)
-- back into jobs, PENDING and due now with a fresh budget.
INSERT INTO jobs (id, type, payload, status, queue, priority, attempts,
                      max_attempts, run_after, locked_by, locked_at, last_error,
                      idempotency_key, created_at, updated_at, lease_token,
                      lease_expires_at, result, started_at, finished_at, releases,
                      effective_priority, timeout_seconds, waiting_for, has_dependents,
                      notify_finish, concurrency_key, fair_key, vtag)
    SELECT id, type, payload, 'PENDING', queue, priority, 0,
           max_attempts, now(), NULL, NULL, NULL,
           idempotency_key, created_at, now(), NULL,
           NULL, NULL, NULL, NULL, 0,
           -- it runs now without waiting for its parents again; jobs waiting on it
           -- (not cancelled meanwhile) still do; it keeps its place in the fair order
           priority, timeout_seconds, 0, has_dependents,
           false, concurrency_key, fair_key, vtag
    FROM revived

-- name: retry_job --
-- A DEAD or CANCELLED job runs again (rule 3): back to jobs as PENDING, due now, with
-- fresh attempts and releases and no result or error (its attempts stay in job_events,
-- with this retry as a PENDING event), waking the workers of its queue as an insert
-- does. No row: the job is unknown or not DEAD/CANCELLED (store.retry_job tells which).
WITH revived AS (
    DELETE FROM jobs_history WHERE id = $1 AND status IN ('DEAD', 'CANCELLED')
    RETURNING *
), restored AS (
    {{revive_into_jobs}}
    RETURNING *
), logged AS (
    INSERT INTO job_events (job_id, status, attempt, worker, error, queue)
    SELECT r.id, 'PENDING', 0, $2, 'retried (was ' || v.status || ')', r.queue
    FROM restored r JOIN revived v ON v.id = r.id
)
SELECT restored.*, pg_notify('aqueue_jobs', restored.queue) AS notified FROM restored;

-- name: retry_dead --
-- retry_job for the DEAD jobs of queue $1 (of type $2 when given), at most $3 per
-- statement, above id $4 (the last of the previous batch): each batch is its own short
-- transaction, and the walk through jobs_history_failed_idx never revisits a row.
-- One NOTIFY for the batch. Returns how many, and the last id picked.
WITH picked AS (
    SELECT id FROM jobs_history
    WHERE status = 'DEAD' AND queue = $1 AND ($2::text IS NULL OR type = $2)
      AND ($4::uuid IS NULL OR id > $4)
    ORDER BY id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), revived AS (
    DELETE FROM jobs_history h WHERE h.id = ANY(ARRAY(SELECT id FROM picked))
    RETURNING h.*
), restored AS (
    {{revive_into_jobs}}
    RETURNING id, queue
), logged AS (
    INSERT INTO job_events (job_id, status, attempt, worker, error, queue)
    SELECT id, 'PENDING', 0, $5, 'retried (was DEAD)', queue FROM restored
), woken AS (
    SELECT pg_notify('aqueue_jobs', queue) FROM (SELECT DISTINCT queue FROM restored) q
)
SELECT (SELECT count(*) FROM restored) AS retried,
       (SELECT id FROM picked ORDER BY id DESC LIMIT 1) AS last_id,
       (SELECT count(*) FROM woken) AS woken;

-- name: purge_history --
-- Retention (the reaper role): delete at most $2 jobs that finished more than $1 seconds
-- ago, with their job_events and idempotency keys; one short transaction per batch,
-- SKIP LOCKED so it never waits for a row (a retry moving it back, say). The walk is up
-- the primary key: a job finished before the cutoff was created before it, so its
-- time-ordered id is below the cutoff's (aqueue_uuid7_floor), and the scan stops there
-- instead of reading the recent history. Returns how many were deleted.
WITH old AS (
    SELECT id FROM jobs_history
    WHERE id < aqueue_uuid7_floor(now() - make_interval(secs => $1))
      AND finished_at < now() - make_interval(secs => $1)
    ORDER BY id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM jobs_history h WHERE h.id = ANY(ARRAY(SELECT id FROM old))
    RETURNING h.id, h.idempotency_key
), events AS (
    DELETE FROM job_events e WHERE e.job_id = ANY(ARRAY(SELECT id FROM gone))
), keys AS (
    DELETE FROM job_keys k USING gone g
    WHERE k.idempotency_key = g.idempotency_key AND k.job_id = g.id
)
SELECT count(*) FROM gone;

-- name: hot_table_stats --
-- Dead and live tuples of jobs (the cumulative statistics, flushed by every backend about
-- once a second), and whether this role may VACUUM it (its owner, or a superuser).
SELECT n_dead_tup AS dead, n_live_tup AS live,
       pg_has_role(current_user, c.relowner, 'USAGE')
           OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS may_vacuum
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.relid = 'jobs'::regclass;

-- name: metrics_gauges --
-- Everything GET /metrics reads from the database, in one statement (aqueue/metrics.py
-- caches it for a couple of seconds and shares it between concurrent scrapes): per queue
-- (every queue with jobs in the hot table, a live worker or a row in `queues`), arrays in
-- queue order: due jobs (PENDING or RETRY, run_after passed, not waiting on dependencies),
-- the depth by status as GET /queues counts it, the age of the oldest due job, the live
-- workers serving it ($1: seconds without a heartbeat after which a worker is lost);
-- then the bloat guardrails: the hot table's tuples, vacuums and size, the history's size,
-- and the sessions of this database that hold back vacuum. A session's horizon is the
-- older of its snapshot's xmin and its own xid (an idle read-committed transaction that
-- wrote has no xmin, only its xid); autovacuum workers never hold anything back, and
-- since PostgreSQL 14 only this database's sessions (and a standby's walsender) count.
-- This statement's own session is left out. Sessions of other roles show their state
-- only to a role with pg_read_all_stats (pg_monitor).
WITH depth AS (
    SELECT queue,
           count(*) FILTER (WHERE status IN ('PENDING', 'RETRY') AND waiting_for = 0
                            AND run_after <= now()) AS due,
           count(*) FILTER (WHERE status = 'PENDING' AND waiting_for = 0
                            AND run_after <= now()) AS pending,
           count(*) FILTER (WHERE status = 'PENDING' AND waiting_for = 0
                            AND run_after > now()) AS scheduled,
           count(*) FILTER (WHERE status = 'PENDING' AND waiting_for > 0) AS waiting,
           count(*) FILTER (WHERE status = 'RETRY') AS retry,
           count(*) FILTER (WHERE status = 'RUNNING') AS running,
           extract(epoch FROM now() - min(run_after) FILTER (
               WHERE status IN ('PENDING', 'RETRY') AND waiting_for = 0
                 AND run_after <= now()))::float8 AS oldest_due_seconds
    FROM jobs WHERE status IN ('PENDING', 'RETRY', 'RUNNING')
    GROUP BY queue
), alive AS (
    SELECT q.key AS queue, count(*) AS workers
    FROM workers w, jsonb_each(w.queues) q
    WHERE w.stopped_at IS NULL AND w.last_heartbeat > now() - make_interval(secs => $1)
    GROUP BY q.key
), per_queue AS (
    SELECT n.queue, coalesce(d.due, 0) AS due, coalesce(d.pending, 0) AS pending,
           coalesce(d.scheduled, 0) AS scheduled, coalesce(d.waiting, 0) AS waiting,
           coalesce(d.retry, 0) AS retry, coalesce(d.running, 0) AS running,
           greatest(coalesce(d.oldest_due_seconds, 0), 0) AS oldest_due_seconds,
           coalesce(a.workers, 0) AS workers
    FROM (SELECT queue FROM depth UNION SELECT queue FROM alive
          UNION SELECT name FROM queues) n
    LEFT JOIN depth d ON d.queue = n.queue
    LEFT JOIN alive a ON a.queue = n.queue
), sessions AS (
    SELECT state, xact_start,
           greatest(age(backend_xmin), age(backend_xid)) AS horizon_age
    FROM pg_stat_activity
    WHERE pid <> pg_backend_pid() AND backend_type <> 'autovacuum worker'
      AND (datname = current_database() OR backend_type = 'walsender')
)
SELECT q.*, h.*, s.*,
       pg_total_relation_size('jobs') AS jobs_bytes,
       pg_total_relation_size('jobs_history') AS history_bytes
FROM (
    SELECT array_agg(queue ORDER BY queue) AS queues, array_agg(due ORDER BY queue) AS due,
           array_agg(pending ORDER BY queue) AS pending,
           array_agg(scheduled ORDER BY queue) AS scheduled,
           array_agg(waiting ORDER BY queue) AS waiting,
           array_agg(retry ORDER BY queue) AS retry,
           array_agg(running ORDER BY queue) AS running,
           array_agg(oldest_due_seconds ORDER BY queue) AS oldest_due_seconds,
           array_agg(workers ORDER BY queue) AS workers
    FROM per_queue
) q, (
    SELECT coalesce(max(n_dead_tup), 0) AS dead_tuples,
           coalesce(max(n_live_tup), 0) AS live_tuples,
           coalesce(max(extract(epoch FROM last_autovacuum)), 0)::float8 AS last_autovacuum,
           coalesce(max(extract(epoch FROM last_vacuum)), 0)::float8 AS last_vacuum
    FROM pg_stat_user_tables WHERE relid = 'jobs'::regclass
) h, (
    SELECT coalesce(max(horizon_age), 0) AS oldest_xmin_age,
           greatest(coalesce(extract(epoch FROM now() - min(xact_start)), 0), 0)::float8
               AS oldest_transaction_seconds,
           count(*) FILTER (WHERE state LIKE 'idle in transaction%') AS idle_in_transaction,
           greatest(coalesce(extract(epoch FROM now() - min(xact_start) FILTER (
               WHERE state LIKE 'idle in transaction%')), 0), 0)::float8
               AS idle_in_transaction_seconds
    FROM sessions
) s;

-- name: vacuum_jobs --
-- Not in a transaction (VACUUM refuses one); SKIP_LOCKED: when another reaper's VACUUM
-- holds the table, this one returns at once instead of queueing behind it.
VACUUM (SKIP_LOCKED) jobs;

-- name: notify_queues --
-- Wake the workers of these queues (jobs became runnable other than by an INSERT).
SELECT pg_notify('aqueue_jobs', q) FROM unnest($1::text[]) AS q;

-- name: ping --
SELECT 1;

-- === operating the queue ================================================================
-- What a job's end means for others (store.settle runs these in the transaction of the
-- statement that ended it): jobs depending on a COMPLETED job wait for one fewer, jobs
-- depending on one that ended DEAD or CANCELLED are CANCELLED themselves (and theirs in
-- turn), and whoever waits for a finished job is notified.

-- name: finish_with_consequences --
-- record_outcomes for one job that others depend on or someone waits for (it refuses
-- such jobs), fenced by the lease the same way. Returns the job's end, for store.settle.
WITH finished AS (
    UPDATE jobs j SET
        status = $3,
        result = $4,
        last_error = coalesce($5, j.last_error),
        run_after = CASE WHEN $3 = 'RETRY' THEN now() + make_interval(secs => $6)
                         ELSE j.run_after END,
        finished_at = CASE WHEN $3 = 'RETRY' THEN NULL ELSE now() END,
        locked_by = NULL,
        locked_at = NULL,
        lease_token = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    WHERE j.id = $1 AND j.lease_token = $2 AND j.status = 'RUNNING'
    RETURNING j.id, j.status, j.attempts, j.started_at, j.queue, j.has_dependents,
              j.notify_finish
), logged AS (
    INSERT INTO job_events (job_id, status, attempt, worker, error, started_at, queue)
    SELECT id, status, attempts, $7, $5, started_at, queue FROM finished
)
SELECT id, status, has_dependents, notify_finish FROM finished;

-- name: release_dependents --
-- Jobs waiting on these COMPLETED jobs ($1) wait for one fewer each; those that now wait
-- for none become claimable, and their queues are woken. Rows locked in id order.
WITH counts AS (
    SELECT child_id, count(*) AS n FROM job_dependencies
    WHERE parent_id = ANY($1::uuid[]) GROUP BY child_id
), locked AS (
    SELECT j.id FROM jobs j
    WHERE j.id IN (SELECT child_id FROM counts) AND j.status = 'PENDING'
      AND j.waiting_for > 0
    ORDER BY j.id
    FOR UPDATE OF j
), released AS (
    UPDATE jobs j SET waiting_for = j.waiting_for - c.n, updated_at = now()
    FROM counts c
    WHERE j.id = ANY(ARRAY(SELECT id FROM locked)) AND j.id = c.child_id
    RETURNING j.queue, j.waiting_for
), woken AS (
    SELECT pg_notify('aqueue_jobs', queue)
    FROM (SELECT DISTINCT queue FROM released WHERE waiting_for = 0) q
)
SELECT count(*) FROM released WHERE (SELECT count(*) FROM woken) >= 0;

-- name: cancel_dependents --
-- Jobs waiting on these jobs ($1, which ended with statuses $2) are CANCELLED, naming
-- the job they waited for; jobs waiting on those are cancelled in turn. Returns the
-- cancelled jobs, and whether someone waits for each (to notify). Its snapshot misses a
-- job whose enqueue held a doomed job's lock when it began (the edge commits while
-- `locked` waits for that lock): settle runs it again from the jobs it cancelled.
WITH RECURSIVE ended AS (
    SELECT * FROM unnest($1::uuid[], $2::text[]) AS e(id, status)
), doomed(id, cause, cause_status) AS (
    SELECT d.child_id, d.parent_id, e.status
    FROM job_dependencies d JOIN ended e ON e.id = d.parent_id
    UNION
    SELECT d.child_id, d.parent_id, 'CANCELLED'
    FROM job_dependencies d JOIN doomed ON d.parent_id = doomed.id
), first_cause AS (
    SELECT DISTINCT ON (id) id, cause, cause_status FROM doomed ORDER BY id, cause
), locked AS (
    SELECT j.id FROM jobs j
    WHERE j.id IN (SELECT id FROM first_cause) AND j.status = 'PENDING'
    ORDER BY j.id
    FOR UPDATE OF j
), cancelled AS (
    UPDATE jobs j SET
        status = 'CANCELLED',
        last_error = format('cancelled: job %s, which it depends on, ended %s',
                            c.cause, c.cause_status),
        finished_at = now(),
        updated_at = now()
    FROM first_cause c
    WHERE j.id = ANY(ARRAY(SELECT id FROM locked)) AND j.id = c.id
    RETURNING j.id, j.attempts, j.queue, j.last_error, j.notify_finish
), logged AS (
    INSERT INTO job_events (job_id, status, attempt, worker, error, queue)
    SELECT id, 'CANCELLED', attempts, NULL, last_error, queue FROM cancelled
)
SELECT id, notify_finish FROM cancelled;

-- name: notify_finished --
SELECT pg_notify('aqueue_finished', id::text) FROM unnest($1::uuid[]) AS id;

-- name: mark_parents --
-- A new job will depend on these ($1): lock those still in jobs (id order) and flag them
-- as having dependents, so that their end goes through finish_with_consequences. (Finished
-- ones are in jobs_history: job_statuses, a later statement, finds those.)
WITH locked AS (
    SELECT id FROM jobs WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
)
UPDATE jobs j SET has_dependents = true
WHERE j.id = ANY(ARRAY(SELECT id FROM locked)) AND NOT j.has_dependents;

-- name: job_statuses --
SELECT id, status FROM all_jobs WHERE id = ANY($1::uuid[]);

-- name: insert_dependent_job --
-- insert_job for a job with dependencies: it waits for $10 of them ($11: all of them,
-- recorded as edges). Its key, if any ($9), is claimed in job_keys as insert_job_keyed
-- does; $12 its concurrency key. The NOTIFY goes out only if it can run now.
WITH keyed AS (
    INSERT INTO job_keys (idempotency_key, job_id)
    SELECT $9, $1 WHERE $9::text IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING job_id
), inserted AS (
    INSERT INTO jobs (id, type, payload, queue, priority, effective_priority, run_after,
                      max_attempts, timeout_seconds, idempotency_key, waiting_for,
                      concurrency_key)
    SELECT $1, $2, $3, $4, $5, $5, coalesce($6, now()), $7, $8, $9, $10, $12
    WHERE $9::text IS NULL OR EXISTS (SELECT 1 FROM keyed)
    RETURNING *
), edges AS (
    INSERT INTO job_dependencies (parent_id, child_id)
    SELECT p, inserted.id FROM inserted, unnest($11::uuid[]) AS p
), woken AS (
    SELECT pg_notify('aqueue_jobs', queue) FROM inserted WHERE waiting_for = 0
)
SELECT inserted.* FROM inserted WHERE (SELECT count(*) FROM woken) >= 0;

-- name: job_dependencies --
SELECT parent_id FROM job_dependencies WHERE child_id = $1 ORDER BY parent_id;

-- name: lock_job --
SELECT id, status, queue, attempts, started_at, locked_by, has_dependents, notify_finish
FROM jobs WHERE id = $1 FOR UPDATE;

-- name: cancel_job --
-- An operator's cancel of a job locked by lock_job: it never runs (again). A running
-- job's lease goes with it, so its worker's outcome is refused; the worker hears of it
-- on aqueue_cancel and stops the handler.
WITH cancelled AS (
    UPDATE jobs j SET
        status = 'CANCELLED',
        last_error = $2,
        finished_at = now(),
        locked_by = NULL,
        locked_at = NULL,
        lease_token = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    WHERE j.id = $1 AND j.status IN ('PENDING', 'RETRY', 'RUNNING')
    RETURNING j.*
), logged AS (
    INSERT INTO job_events (job_id, status, attempt, worker, error, started_at, queue)
    SELECT id, 'CANCELLED', attempts, $3, last_error,
           CASE WHEN $4 THEN started_at END, queue
    FROM cancelled
), told AS (
    SELECT pg_notify('aqueue_cancel', id::text) FROM cancelled WHERE $4
)
SELECT cancelled.* FROM cancelled WHERE (SELECT count(*) FROM told) >= 0;

-- name: watch_job --
-- Someone waits for this job to finish: have its end notified on aqueue_finished.
UPDATE jobs SET notify_finish = true
WHERE id = $1 AND NOT notify_finish AND status NOT IN ('COMPLETED', 'DEAD', 'CANCELLED');

-- name: set_queue_paused --
WITH changed AS (
    INSERT INTO queues (name, paused, changed_at) VALUES ($1, $2, now())
    ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, changed_at = now()
    RETURNING name, paused
)
SELECT name, paused, pg_notify('aqueue_queue', name)::text AS told FROM changed;

-- name: paused_queues --
SELECT name FROM queues WHERE paused ORDER BY name;

-- name: promote_starving --
-- Priorities that cannot starve: a runnable job that has been due for longer than $1
-- seconds, behind higher-priority work of its queue, gets the promoted effective priority
-- ($3), above any a producer can give, so it is next in its queue (oldest first among the
-- promoted) whatever keeps arriving. Jobs of a queue's highest runnable priority below
-- the promoted one are left alone: nothing is ahead of them but older jobs (or jobs
-- promoted for being older), so a backlog of one priority, the usual case, is never
-- rewritten. Walks the claimable index one (queue, priority) group at a
-- time (a loose index scan), reading in each lower group only the starving jobs at its
-- old end. At most $2 per statement.
WITH RECURSIVE groups AS (
    (SELECT queue, effective_priority AS priority, true AS top FROM jobs
     WHERE status IN ('PENDING', 'RETRY') AND waiting_for = 0
     ORDER BY queue, effective_priority DESC LIMIT 1)
    UNION ALL
    SELECT coalesce(lower_p.queue, next_q.queue), coalesce(lower_p.priority, next_q.priority),
           -- the first group of the next queue, or the group right below a promoted one
           lower_p.queue IS NULL OR (g.top AND g.priority >= $3)
    FROM groups g
    LEFT JOIN LATERAL (
        SELECT j.queue, j.effective_priority AS priority FROM jobs j
        WHERE j.status IN ('PENDING', 'RETRY') AND j.waiting_for = 0
          AND j.queue = g.queue AND j.effective_priority < g.priority
        ORDER BY j.effective_priority DESC LIMIT 1
    ) lower_p ON true
    LEFT JOIN LATERAL (
        SELECT j.queue, j.effective_priority AS priority FROM jobs j
        WHERE j.status IN ('PENDING', 'RETRY') AND j.waiting_for = 0 AND j.queue > g.queue
        ORDER BY j.queue, j.effective_priority DESC LIMIT 1
    ) next_q ON lower_p.queue IS NULL
    WHERE g.queue IS NOT NULL
), starving AS (
    SELECT s.id FROM groups g, LATERAL (
        SELECT j.id FROM jobs j
        WHERE j.status IN ('PENDING', 'RETRY') AND j.waiting_for = 0
          AND j.queue = g.queue AND j.effective_priority = g.priority
          AND j.run_after <= now() - make_interval(secs => $1)
        ORDER BY j.run_after LIMIT $2
    ) s
    WHERE g.queue IS NOT NULL AND NOT g.top AND g.priority < $3
    LIMIT $2
), locked AS (
    SELECT id FROM jobs WHERE id IN (SELECT id FROM starving) ORDER BY id
    FOR UPDATE SKIP LOCKED
), promoted AS (
    UPDATE jobs j SET effective_priority = $3
    WHERE j.id = ANY(ARRAY(SELECT id FROM locked))
      AND j.status IN ('PENDING', 'RETRY') AND j.effective_priority < $3
    RETURNING j.id
)
SELECT count(*) FROM promoted;

-- name: queue_overview --
-- Every queue anything knows of, with its jobs by status, paused flag, the age of its
-- oldest due job, attempts finished in the last $1 seconds, and the live workers serving
-- it ($2: seconds without a heartbeat after which a worker counts as lost).
WITH depth AS (
    SELECT queue,
           count(*) FILTER (WHERE status = 'PENDING' AND waiting_for = 0
                            AND run_after <= now()) AS pending,
           count(*) FILTER (WHERE status = 'PENDING' AND waiting_for = 0
                            AND run_after > now()) AS scheduled,
           count(*) FILTER (WHERE status = 'PENDING' AND waiting_for > 0) AS waiting,
           count(*) FILTER (WHERE status = 'RETRY') AS retry,
           count(*) FILTER (WHERE status = 'RUNNING') AS running,
           extract(epoch FROM now() - min(run_after) FILTER (
               WHERE status IN ('PENDING', 'RETRY') AND waiting_for = 0
                 AND run_after <= now()))::float8 AS oldest_pending_seconds
    FROM jobs WHERE status IN ('PENDING', 'RETRY', 'RUNNING')
    GROUP BY queue
), failed AS (
    SELECT queue, count(*) FILTER (WHERE status = 'DEAD') AS dead,
           count(*) FILTER (WHERE status = 'CANCELLED') AS cancelled
    FROM jobs_history WHERE status IN ('DEAD', 'CANCELLED')
    GROUP BY queue
), recent AS (
    SELECT queue,
           count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
           count(*) FILTER (WHERE status IN ('RETRY', 'DEAD')) AS failed
    FROM job_events WHERE at > now() - make_interval(secs => $1) AND queue IS NOT NULL
    GROUP BY queue
), serving AS (
    SELECT q.key AS queue, array_agg(w.id ORDER BY w.id) AS workers
    FROM workers w, jsonb_each(w.queues) q
    WHERE w.stopped_at IS NULL AND w.last_heartbeat > now() - make_interval(secs => $2)
    GROUP BY q.key
), names AS (
    SELECT queue FROM depth UNION SELECT queue FROM failed UNION SELECT queue FROM recent
    UNION SELECT queue FROM serving UNION SELECT name FROM queues
)
SELECT n.queue AS name,
       coalesce(q.paused, false) AS paused, q.rate_count, q.rate_period,
       q.key_concurrency, q.key_limits, q.fair_weights, coalesce(q.fair, false) AS fair,
       coalesce(d.pending, 0) AS pending, coalesce(d.scheduled, 0) AS scheduled,
       coalesce(d.waiting, 0) AS waiting, coalesce(d.retry, 0) AS retry,
       coalesce(d.running, 0) AS running, coalesce(f.dead, 0) AS dead,
       coalesce(f.cancelled, 0) AS cancelled, d.oldest_pending_seconds,
       coalesce(r.completed, 0) AS completed_recently,
       coalesce(r.failed, 0) AS failed_recently,
       coalesce(s.workers, '{}') AS workers
FROM names n
LEFT JOIN depth d ON d.queue = n.queue
LEFT JOIN failed f ON f.queue = n.queue
LEFT JOIN recent r ON r.queue = n.queue
LEFT JOIN serving s ON s.queue = n.queue
LEFT JOIN queues q ON q.name = n.queue
ORDER BY n.queue;

-- name: queue_due_depth --
-- What an autoscaler reads (GET /queues/depth): per queue, the jobs due now and waiting
-- for a worker (PENDING or RETRY, run_after passed, no dependency left: what a claim could
-- take, were the queue not paused) and the age of the oldest of them, 0 when none. The
-- count of the jobs_pending gauge, and of the query in k8s/optional/keda. One scan of the
-- claimable index's due entries (jobs_claimable_idx holds exactly these rows): it costs
-- the backlog of due jobs, never the history. The queues named in $1 come back even with
-- nothing due (an autoscaler asks for its queue and always gets a number); with none
-- named, every queue with due jobs or a row in `queues`.
WITH due AS (
    SELECT queue, count(*) AS pending, min(run_after) AS oldest
    FROM jobs
    WHERE status IN ('PENDING', 'RETRY') AND waiting_for = 0 AND run_after <= now()
      AND (cardinality($1::text[]) = 0 OR queue = ANY($1::text[]))
    GROUP BY queue
), names AS (
    SELECT queue FROM due
    UNION SELECT name FROM queues WHERE cardinality($1::text[]) = 0
    UNION SELECT unnest($1::text[])
)
SELECT n.queue AS name, coalesce(d.pending, 0) AS pending,
       coalesce(extract(epoch FROM now() - d.oldest)::float8, 0) AS oldest_pending_seconds,
       coalesce(q.paused, false) AS paused
FROM names n
LEFT JOIN due d ON d.queue = n.queue
LEFT JOIN queues q ON q.name = n.queue
ORDER BY n.queue;

-- name: attempt_stats --
-- Finished attempts per queue and minute over the last $1 minutes, the current one
-- included (GET /stats, the dashboard's throughput and failure charts): completed, and
-- failed (RETRY or DEAD, as in queue_overview; the reaper's expired leases count). The
-- first row carries the window's start even when no attempt finished in it (the LEFT
-- JOIN), on the database's clock. job_events is appended in time order, so the range on
-- `at` is a BRIN scan of the window's pages only.
WITH bounds AS (
    SELECT date_trunc('minute', now()) - make_interval(mins => $1 - 1) AS start, now() AS now
)
SELECT b.start, b.now, e.queue, e.minute, e.completed, e.failed
FROM bounds b
LEFT JOIN LATERAL (
    SELECT queue, date_trunc('minute', at) AS minute,
           count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
           count(*) FILTER (WHERE status IN ('RETRY', 'DEAD')) AS failed
    FROM job_events
    WHERE at >= b.start AND queue IS NOT NULL AND status IN ('COMPLETED', 'RETRY', 'DEAD')
    GROUP BY queue, minute
) e ON true
ORDER BY e.queue, e.minute;

-- name: worker_heartbeat --
-- A process says it is alive: one row per process, written once per heartbeat interval.
INSERT INTO workers (id, host, pid, version, roles, queues, running, started_at,
                     last_heartbeat)
VALUES ($1, $2, $3, $4, $5, $6, $7, now(), now())
ON CONFLICT (id) DO UPDATE SET running = excluded.running, last_heartbeat = now(),
                               stopped_at = NULL;

-- name: worker_stopped --
UPDATE workers SET stopped_at = now(), running = 0 WHERE id = $1;

-- name: list_workers --
-- Every process seen lately: alive, lost (no heartbeat for $1 seconds) or stopped; rows
-- older than $2 seconds are pruned by prune_workers.
SELECT id, host, pid, version, roles, queues, running, started_at, last_heartbeat,
       stopped_at,
       CASE WHEN stopped_at IS NOT NULL THEN 'stopped'
            WHEN last_heartbeat < now() - make_interval(secs => $1) THEN 'lost'
            ELSE 'alive' END AS state
FROM workers ORDER BY started_at DESC, id;

-- name: prune_workers --
DELETE FROM workers
WHERE coalesce(stopped_at, last_heartbeat) < now() - make_interval(secs => $1);

-- === schedules ===========================================================================

-- name: insert_schedule --
WITH inserted AS (
    INSERT INTO schedules (name, cron, timezone, type, payload, queue, priority,
                           max_attempts, enabled, catch_up, source, next_run_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
    RETURNING *
)
SELECT inserted.*, pg_notify('aqueue_schedules', inserted.id::text) AS told FROM inserted;

-- name: upsert_code_schedule --
-- A schedule declared in code (registry.schedule), synced at the scheduler's start:
-- created, or updated in place by name (its next run moves only if its timing changed).
WITH upserted AS (
    INSERT INTO schedules (name, cron, timezone, type, payload, queue, priority,
                           max_attempts, catch_up, source, next_run_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'code', $10)
    ON CONFLICT (name) DO UPDATE SET
        cron = excluded.cron, timezone = excluded.timezone, type = excluded.type,
        payload = excluded.payload, queue = excluded.queue, priority = excluded.priority,
        max_attempts = excluded.max_attempts, catch_up = excluded.catch_up,
        source = 'code',
        next_run_at = CASE WHEN schedules.cron = excluded.cron
                                AND schedules.timezone = excluded.timezone
                           THEN schedules.next_run_at ELSE excluded.next_run_at END,
        updated_at = now()
    RETURNING *
)
SELECT upserted.*, pg_notify('aqueue_schedules', upserted.id::text) AS told FROM upserted;

-- name: list_schedules --
SELECT * FROM schedules ORDER BY name;

-- name: get_schedule --
SELECT * FROM schedules WHERE id = $1;

-- name: update_schedule --
WITH updated AS (
    UPDATE schedules SET
        name = $2, cron = $3, timezone = $4, type = $5, payload = $6, queue = $7,
        priority = $8, max_attempts = $9, enabled = $10, catch_up = $11,
        next_run_at = $12, updated_at = now()
    WHERE id = $1
    RETURNING *
)
SELECT updated.*, pg_notify('aqueue_schedules', updated.id::text) AS told FROM updated;

-- name: delete_schedule --
DELETE FROM schedules WHERE id = $1 RETURNING id;

-- name: lock_due_schedules --
-- The scheduler: due schedules, each locked by one scheduler only (the others skip it
-- and find it moved on once this transaction commits).
SELECT * FROM schedules
WHERE enabled AND next_run_at <= now()
ORDER BY next_run_at
LIMIT $1
FOR UPDATE SKIP LOCKED;

-- name: advance_schedule --
UPDATE schedules SET next_run_at = $2, last_run_at = coalesce($3, last_run_at)
WHERE id = $1;

-- name: next_schedule_due --
SELECT extract(epoch FROM min(next_run_at) - now())::float8 FROM schedules WHERE enabled;

-- name: database_now --
SELECT now();

-- === the API's rate limit (GCRA) =========================================================

-- name: take_rate_tokens --
-- $4 requests of client $1 at once (an API process sends one statement for all the
-- requests of a client that arrive while the previous one runs): GCRA lets through as
-- many as keep the client's theoretical arrival time within $3 seconds (the burst: a
-- whole period) of now, each spending $2 seconds of it, and returns how many. One
-- statement, the row lock held only for it. Every SET expression reads the row as it
-- was, so `granted` and `tat` agree.
INSERT INTO api_rate_limits AS r (client, tat, granted)
VALUES ($1, now() + make_interval(secs => $2 * least($4, floor(($3 + 1e-9) / $2))),
        least($4, floor(($3 + 1e-9) / $2)))
ON CONFLICT (client) DO UPDATE SET
    tat = greatest(r.tat, now()) + make_interval(secs => $2 * least($4, greatest(0, floor(
              (extract(epoch FROM now() - greatest(r.tat, now())) + $3 + 1e-9) / $2)))),
    granted = least($4, greatest(0, floor(
              (extract(epoch FROM now() - greatest(r.tat, now())) + $3 + 1e-9) / $2)))
RETURNING granted;

-- name: rate_retry_after --
-- Seconds until client $1 may send again (same $2 and $3 as take_rate_token).
SELECT greatest(extract(epoch FROM tat + make_interval(secs => $2)
                                   - make_interval(secs => $3) - now()), 0)::float8
FROM api_rate_limits WHERE client = $1;

-- name: prune_rate_limits --
-- Clients whose budget is full again (their arrival time has passed) need no row.
DELETE FROM api_rate_limits WHERE tat < now() - interval '1 minute';


-- name: set_queue_limits --
-- A queue's limits: those flagged ($2 rate as $3 jobs per $4 seconds, $5 key_concurrency
-- $6, $7 key_limits $8, $9 fair_weights $10) are set (null: none), the others kept. The
-- queue's row stays locked to the end of the caller's transaction, which then fits the
-- slot rows to the new caps (fit_slots) and tells every worker.
INSERT INTO queues AS q (name, rate_count, rate_period, key_concurrency, key_limits,
                         fair_weights, changed_at)
VALUES ($1, $3, $4, $6, $8, $10, now())
ON CONFLICT (name) DO UPDATE SET
    rate_count = CASE WHEN $2 THEN excluded.rate_count ELSE q.rate_count END,
    rate_period = CASE WHEN $2 THEN excluded.rate_period ELSE q.rate_period END,
    key_concurrency = CASE WHEN $5 THEN excluded.key_concurrency ELSE q.key_concurrency END,
    key_limits = CASE WHEN $7 THEN excluded.key_limits ELSE q.key_limits END,
    fair_weights = CASE WHEN $9 THEN excluded.fair_weights ELSE q.fair_weights END,
    changed_at = now()
RETURNING pg_notify('aqueue_queue', name)::text;

-- name: fit_slots --
-- The slot rows of every key met so far (of queue $1; null: all queues) fitted to its
-- cap now, by count (slot numbers are only names): a key keeps `cap` rows that are not
-- retired. Over the cap, free rows are deleted first and held ones retired (each goes
-- away when its job ends: see aqueue_free_slot); under it, retired rows are kept again
-- first, then rows added. A key no longer capped loses its free rows and retires the
-- held ones. Run after a change of limits and by every reaper round, which also mends a
-- key whose rows a claim made from a cap just changed, or a free row a claim took
-- while a lower cap was being applied.
-- A slot held by a job that is not running (a defence: the trigger frees every slot its
-- job lets go of) is let go once it was taken long enough ago that no claim still in
-- flight can have taken it.
WITH keys AS MATERIALIZED (
    SELECT s.queue, s.key, coalesce((q.key_limits ->> s.key)::int, q.key_concurrency) AS cap,
           count(*) FILTER (WHERE NOT s.retired) AS live,
           count(*) FILTER (WHERE s.retired) AS retired, max(s.slot) AS top
    FROM concurrency_slots s LEFT JOIN queues q ON q.name = s.queue
    WHERE $1::text IS NULL OR s.queue = $1
    GROUP BY s.queue, s.key, q.key_limits, q.key_concurrency
), off AS MATERIALIZED (
    SELECT * FROM keys WHERE cap IS NULL OR live <> cap
), ranked AS MATERIALIZED (
    -- within a key, kept rows free ones first, retired rows by slot
    SELECT s.queue, s.key, s.slot, s.retired, o.cap, o.live,
           row_number() OVER (PARTITION BY s.queue, s.key, s.retired
                              ORDER BY s.job_id IS NULL DESC, s.slot) AS rn
    FROM concurrency_slots s JOIN off o ON o.queue = s.queue AND o.key = s.key
), dropped AS (
    DELETE FROM concurrency_slots s USING ranked r
    WHERE s.queue = r.queue AND s.key = r.key AND s.slot = r.slot AND s.job_id IS NULL
      AND NOT r.retired AND (r.cap IS NULL OR r.rn <= r.live - r.cap)
    RETURNING 1
), flipped AS (
    UPDATE concurrency_slots s SET retired = NOT r.retired
    FROM ranked r
    WHERE s.queue = r.queue AND s.key = r.key AND s.slot = r.slot AND s.job_id IS NOT NULL
      AND s.retired = r.retired
      AND CASE WHEN r.retired THEN r.cap IS NOT NULL AND r.rn <= r.cap - r.live
               ELSE r.cap IS NULL OR r.rn <= r.live - r.cap END
    RETURNING 1
), added AS (
    INSERT INTO concurrency_slots (queue, key, slot)
    SELECT o.queue, o.key, o.top + g
    FROM off o, generate_series(1, o.cap - o.live - o.retired) AS g
    WHERE o.cap IS NOT NULL
    ORDER BY o.queue, o.key, g
    ON CONFLICT DO NOTHING
    RETURNING 1
), orphans AS MATERIALIZED (
    SELECT s.queue, s.key, s.slot, s.retired FROM concurrency_slots s
    WHERE s.job_id IS NOT NULL AND s.taken_at < now() - interval '5 minutes'
      AND ($1::text IS NULL OR s.queue = $1)
      AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = s.job_id AND j.status = 'RUNNING')
), orphans_freed AS (
    UPDATE concurrency_slots s SET job_id = NULL, taken_at = NULL FROM orphans o
    WHERE (s.queue, s.key, s.slot) = (o.queue, o.key, o.slot) AND NOT o.retired
    RETURNING 1
), orphans_dropped AS (
    DELETE FROM concurrency_slots s USING orphans o
    WHERE (s.queue, s.key, s.slot) = (o.queue, o.key, o.slot) AND o.retired
    RETURNING 1
)
SELECT (SELECT count(*) FROM added) AS added, (SELECT count(*) FROM dropped) AS dropped,
       (SELECT count(*) FROM flipped) AS retired,
       (SELECT count(*) FROM orphans_freed) + (SELECT count(*) FROM orphans_dropped) AS freed;

-- name: queue_limits --
SELECT rate_count, rate_period, key_concurrency, key_limits, fair_weights
FROM queues WHERE name = $1;

-- name: queue_flow --
-- Whether queue $1 is claimed by claim_flow or claim_fair (capped: it has key caps; no
-- row: by the plain claim), with its rate limit and the seconds until its bucket allows
-- one more job (0: now).
SELECT rate_count, rate_period,
       key_concurrency IS NOT NULL OR key_limits IS NOT NULL AS capped,
       greatest(0, extract(epoch FROM coalesce(rate_tat, now()) - now())
                   - (rate_count - 1) * rate_period / rate_count)::float8 AS wait
FROM queues
WHERE name = $1 AND (rate_count IS NOT NULL OR fair OR key_concurrency IS NOT NULL
                     OR key_limits IS NOT NULL);


-- name: insert_token --
-- A new token ($1 name, $2 digest, $3 scopes, $4 seconds until it expires or null); null
-- when the name is taken (by a live or a revoked token: a name is never reused, so that
-- the log lines and rate-limit budgets of an old token never describe a new one).
INSERT INTO api_tokens (name, digest, scopes, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
ON CONFLICT (name) DO NOTHING
RETURNING name, scopes, created_at, expires_at, revoked_at, last_used_at;

-- name: list_tokens --
SELECT name, scopes, created_at, expires_at, revoked_at, last_used_at
FROM api_tokens ORDER BY created_at, name;

-- name: revoke_token --
-- Revoked at once: the next request with it is refused (every request looks it up).
UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE name = $1
RETURNING name, scopes, created_at, expires_at, revoked_at, last_used_at;

-- name: authenticate_token --
-- The token whose digest is $1, if it is neither revoked nor expired. Notes its use when
-- the last note is over a minute old: a write (and a WAL flush) a minute per token, not
-- one per request; a request that writes nothing commits without touching the WAL.
WITH found AS (
    SELECT name, scopes, expires_at FROM api_tokens
    WHERE digest = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
), noted AS (
    UPDATE api_tokens SET last_used_at = now()
    WHERE digest = $1 AND name IN (SELECT name FROM found)
      AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
)
SELECT name, scopes, expires_at FROM found;
