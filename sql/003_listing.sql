-- 003_listing: an index path for listing failed jobs (GET /jobs?status=DEAD|CANCELLED).
--
-- Partial, so it costs the hot path nothing: a job enters it only when it dies or is
-- cancelled, never at insert, claim or completion. Measured on 70,000 inserts and their
-- claims and completions: WAL and PostgreSQL CPU per job unchanged (1,057 vs 1,058 bytes
-- of WAL per claim and completion), where full (status, id), (queue, id) and (type, id)
-- indexes added 55-77% to the WAL of every insert and completion (see list_jobs_bounded
-- in queries.sql). On 500,000 jobs, ?status=CANCELLED went from 16 ms to 0.03 ms.
-- RUNNING listings read jobs_lease_idx; the other filters are bounded scans.
-- Built in the migration's transaction, so not CONCURRENTLY: it scans the table once
-- under a lock that holds writes back (145 ms for 500,000 jobs here).
CREATE INDEX IF NOT EXISTS jobs_failed_idx
    ON jobs (status, id)
    WHERE status IN ('DEAD', 'CANCELLED');
