-- Cron schedules: the scheduler role enqueues one job per tick of each enabled schedule.
CREATE TABLE IF NOT EXISTS schedules (
    id           uuid PRIMARY KEY DEFAULT aqueue_uuid7(),
    name         text        NOT NULL UNIQUE,
    cron         text        NOT NULL,
    timezone     text        NOT NULL DEFAULT 'UTC',
    type         text        NOT NULL,
    payload      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    queue        text        NOT NULL DEFAULT 'default',
    priority     integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL DEFAULT 5,
    enabled      boolean     NOT NULL DEFAULT true,
    -- after downtime: one run for the missed ticks (true) or none (false)
    catch_up     boolean     NOT NULL DEFAULT true,
    -- where it was declared: 'api' (HTTP, CLI, Python) or 'code' (registry.schedule)
    source       text        NOT NULL DEFAULT 'api',
    next_run_at  timestamptz NOT NULL,
    last_run_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedules_source_valid CHECK (source IN ('api', 'code'))
);
CREATE INDEX IF NOT EXISTS schedules_due_idx ON schedules (next_run_at) WHERE enabled;
