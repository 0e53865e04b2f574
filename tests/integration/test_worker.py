"""The worker role against a real PostgreSQL: running, retrying, dead-lettering,
delayed jobs, the lease fence, the completion transaction, shutdown and LISTEN."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from aqueue import JobStatus, Registry, db, enqueue, store
from aqueue.model import JobSpec
from aqueue.registry import JobContext
from aqueue.store import Outcome
from tests.helpers import running_worker, wait_for


async def status_of(pool: asyncpg.Pool, job_id: Any) -> JobStatus:
    job = await store.get_job(pool, job_id)
    assert job is not None
    return job.status


async def wait_status(pool: asyncpg.Pool, job_id: Any, status: JobStatus, timeout: float = 10):
    async def reached() -> bool:
        return await status_of(pool, job_id) is status

    await wait_for(reached, timeout)
    job = await store.get_job(pool, job_id)
    assert job is not None
    return job


async def test_worker_completes_a_job_and_stores_its_result(pool, db_url):
    async with running_worker(pool, db_url):
        job = await enqueue(pool, "demo.echo", {"hello": "world"})
        done = await wait_status(pool, job.id, JobStatus.COMPLETED)
    assert done.result == {"hello": "world"}
    assert done.attempts == 1
    assert done.started_at is not None and done.finished_at is not None
    assert done.started_at <= done.finished_at


async def test_every_transition_is_recorded_in_the_job_history(pool, db_url):
    async with running_worker(pool, db_url):
        job = await enqueue(pool, "demo.echo", {})
        await wait_status(pool, job.id, JobStatus.COMPLETED)
    events = await store.job_events(pool, job.id)
    assert [e.status for e in events] == [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.COMPLETED]
    assert events[1].worker is not None and events[1].worker == events[2].worker


async def test_a_failing_job_retries_with_backoff_then_goes_dead(pool, db_url):
    async with running_worker(pool, db_url, backoff_base_seconds=0.05, backoff_cap_seconds=0.1):
        job = await enqueue(pool, "demo.fail", {"message": "boom"}, max_attempts=3)
        dead = await wait_status(pool, job.id, JobStatus.DEAD)
    assert dead.attempts == 3
    assert dead.last_error is not None
    assert "RuntimeError: boom" in dead.last_error
    assert "Traceback" in dead.last_error
    statuses = [e.status for e in await store.job_events(pool, job.id)]
    assert statuses == [
        JobStatus.PENDING,
        JobStatus.RUNNING,
        JobStatus.RETRY,
        JobStatus.RUNNING,
        JobStatus.RETRY,
        JobStatus.RUNNING,
        JobStatus.DEAD,
    ]


async def test_a_retry_waits_out_its_backoff(pool, db_url):
    async with running_worker(pool, db_url, backoff_base_seconds=0.5, backoff_cap_seconds=0.5):
        job = await enqueue(pool, "demo.fail", {}, max_attempts=2)
        await wait_status(pool, job.id, JobStatus.DEAD)
    events = await store.job_events(pool, job.id)
    failed_at = events[2].at
    second_start = events[3].at
    # full jitter within [cap/2, cap]: at least 0.25 s between failure and retry
    assert second_start - failed_at >= timedelta(seconds=0.24)


async def test_a_job_with_an_unknown_type_fails_with_a_message_naming_it(pool, db_url):
    async with running_worker(pool, db_url):
        job = await enqueue(pool, "nobody.handles.this", {}, max_attempts=1)
        dead = await wait_status(pool, job.id, JobStatus.DEAD)
    assert "no handler for job type 'nobody.handles.this'" in (dead.last_error or "")


async def test_a_result_that_is_not_json_fails_the_attempt(pool, db_url):
    registry = Registry()

    @registry.task("test.bad_result")
    async def bad_result(payload: Any, ctx: JobContext) -> Any:
        return {"when": object()}

    async with running_worker(pool, db_url, registry):
        job = await enqueue(pool, "test.bad_result", {}, max_attempts=1)
        dead = await wait_status(pool, job.id, JobStatus.DEAD)
    assert "not JSON serializable" in (dead.last_error or "")


async def test_a_delayed_job_starts_on_time_without_polling(pool, db_url):
    # The safety-net poll is far away: only the worker's timer can start the job on time.
    async with running_worker(pool, db_url, poll_seconds=60):
        await asyncio.sleep(0.1)  # the worker is idle, asleep until notified
        run_after = datetime.now(UTC) + timedelta(seconds=0.7)
        job = await enqueue(pool, "demo.echo", {}, run_after=run_after)
        done = await wait_status(pool, job.id, JobStatus.COMPLETED, timeout=5)
    assert done.started_at is not None
    assert done.started_at >= run_after
    # well before the 60 s poll (a loaded machine may be late by a good part of a second)
    assert done.started_at - run_after < timedelta(seconds=5)


async def test_higher_priority_jobs_are_claimed_first(pool, db_url):
    await store.insert_jobs(
        pool, [JobSpec(type="demo.echo", payload={"n": n}, priority=n) for n in (1, 5, 3)]
    )
    async with running_worker(pool, db_url, queues={"default": 1}):
        await wait_for(
            lambda: pool.fetchval("SELECT count(*) = 3 FROM all_jobs WHERE status = 'COMPLETED'")
        )
    order = await pool.fetch("SELECT priority FROM all_jobs ORDER BY started_at")
    assert [r["priority"] for r in order] == [5, 3, 1]


async def test_a_worker_serves_only_its_queues(pool, db_url):
    other = await enqueue(pool, "demo.echo", {}, queue="email")
    mine = await enqueue(pool, "demo.echo", {}, queue="video")
    async with running_worker(pool, db_url, queues={"video": 2}):
        await wait_status(pool, mine.id, JobStatus.COMPLETED)
        await asyncio.sleep(0.2)
        assert await status_of(pool, other.id) is JobStatus.PENDING


async def test_concurrency_bounds_the_jobs_running_at_once(pool, db_url):
    registry = Registry()
    running = 0
    peak = 0

    @registry.task("test.track")
    async def track(payload: Any, ctx: JobContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    await store.insert_jobs(pool, [JobSpec(type="test.track") for _ in range(30)])
    async with running_worker(pool, db_url, registry, queues={"default": 4}):
        await wait_for(
            lambda: pool.fetchval("SELECT count(*) = 30 FROM all_jobs WHERE status = 'COMPLETED'")
        )
    assert peak == 4


async def test_a_completion_transaction_the_handler_left_aborted_fails_the_attempt_at_once(
    pool, db_url
):
    # The handler caught a statement's error and went on: its transaction can take no
    # more statements, so the job's completion cannot join it. Nothing commits, and the
    # attempt fails now, not when its 30 s lease runs out.
    await pool.execute("CREATE TABLE effects (job_id uuid PRIMARY KEY)")
    registry = Registry()

    @registry.task("test.swallowed")
    async def swallowed(payload: Any, ctx: JobContext) -> str:
        conn = await ctx.transaction()
        await conn.execute("INSERT INTO effects VALUES ($1)", ctx.job_id)
        try:
            await conn.execute("SELECT 1 / 0")
        except asyncpg.DivisionByZeroError:
            pass
        return "done"

    async with running_worker(pool, db_url, registry, lease_seconds=30) as running:
        job = await enqueue(pool, "test.swallowed", {}, max_attempts=1)
        dead = await wait_status(pool, job.id, JobStatus.DEAD, timeout=5)
        await wait_for(lambda: not running.worker._held)
    assert "completing the job in the handler's transaction failed" in (dead.last_error or "")
    assert "InFailedSQLTransactionError" in (dead.last_error or "")
    assert await pool.fetchval("SELECT count(*) FROM effects") == 0


async def test_a_stale_workers_late_completion_is_rejected_by_the_lease(pool):
    job = await enqueue(pool, "demo.echo", {})
    [first] = await store.claim(pool, "default", 1, "worker-a", 0.1)
    await asyncio.sleep(0.2)  # worker-a falls silent; its lease runs out
    reclaimed = await store.reclaim_expired(pool, 10, "reaper", 0.0, 0.0)
    assert [r.job_id for r in reclaimed] == [job.id]
    [second] = await store.claim(pool, "default", 1, "worker-b", 30)
    assert second.lease_token != first.lease_token

    stale = Outcome(first, JobStatus.COMPLETED, result={"by": "a"})
    assert await store.record_outcomes(pool, [stale], "worker-a") == set()
    fresh = Outcome(second, JobStatus.COMPLETED, result={"by": "b"})
    assert await store.record_outcomes(pool, [fresh], "worker-b") == {second.lease_token}
    done = await store.get_job(pool, job.id)
    assert done is not None and done.result == {"by": "b"} and done.attempts == 2


async def test_handler_writes_commit_together_with_the_completion(pool, db_url):
    await pool.execute("CREATE TABLE effects (job_id uuid PRIMARY KEY)")
    registry = Registry()

    @registry.task("test.effect")
    async def effect(payload: Any, ctx: JobContext) -> str:
        conn = await ctx.transaction()
        await conn.execute("INSERT INTO effects VALUES ($1)", ctx.job_id)
        if payload.get("fail"):
            raise RuntimeError("after writing")
        return "ok"

    async with running_worker(pool, db_url, registry):
        good = await enqueue(pool, "test.effect", {})
        bad = await enqueue(pool, "test.effect", {"fail": True}, max_attempts=1)
        await wait_status(pool, good.id, JobStatus.COMPLETED)
        await wait_status(pool, bad.id, JobStatus.DEAD)
    rows = {r["job_id"] for r in await pool.fetch("SELECT job_id FROM effects")}
    assert rows == {good.id}  # the failed attempt's write was rolled back


async def test_handler_writes_roll_back_when_the_lease_was_lost(pool, db_url):
    await pool.execute("CREATE TABLE effects (job_id uuid PRIMARY KEY)")
    registry = Registry()
    reclaimed = asyncio.Event()

    @registry.task("test.slow_effect")
    async def slow_effect(payload: Any, ctx: JobContext) -> str:
        conn = await ctx.transaction()
        await conn.execute("INSERT INTO effects VALUES ($1)", ctx.job_id)
        await reclaimed.wait()
        return "too late"

    async with running_worker(pool, db_url, registry, lease_seconds=30):
        job = await enqueue(pool, "test.slow_effect", {})
        await wait_status(pool, job.id, JobStatus.RUNNING)
        # Another party takes the job away (as the reaper would after an expiry).
        await pool.execute("UPDATE jobs SET lease_token = gen_random_uuid() WHERE id = $1", job.id)
        reclaimed.set()
        await asyncio.sleep(0.3)
    assert await pool.fetchval("SELECT count(*) FROM effects") == 0
    assert await status_of(pool, job.id) is JobStatus.RUNNING  # the new owner's to finish


async def test_heartbeats_keep_a_long_job_leased(pool, db_url):
    async with running_worker(pool, db_url, lease_seconds=2.0):
        job = await enqueue(pool, "demo.sleep", {"seconds": 5})
        await wait_status(pool, job.id, JobStatus.RUNNING)
        # Two and a half leases long; a reaper running meanwhile finds nothing to reclaim.
        for _ in range(6):
            await asyncio.sleep(0.75)
            assert await store.reclaim_expired(pool, 10, "reaper", 0.0, 0.0) == []
        done = await wait_status(pool, job.id, JobStatus.COMPLETED)
    assert done.attempts == 1


async def test_shutdown_lets_running_jobs_finish_within_the_grace_period(pool, db_url):
    async with running_worker(pool, db_url, shutdown_grace_seconds=5) as w:
        job = await enqueue(pool, "demo.sleep", {"seconds": 0.3})
        await wait_status(pool, job.id, JobStatus.RUNNING)
        await w.stop()
    assert await status_of(pool, job.id) is JobStatus.COMPLETED


async def test_shutdown_releases_jobs_that_outlive_the_grace_period(pool, db_url):
    async with running_worker(pool, db_url, shutdown_grace_seconds=0.2) as w:
        job = await enqueue(pool, "demo.sleep", {"seconds": 30})
        await wait_status(pool, job.id, JobStatus.RUNNING)
        started = time.monotonic()
        await w.stop()
        assert time.monotonic() - started < 5
    released = await store.get_job(pool, job.id)
    assert released is not None
    assert released.status is JobStatus.RETRY
    assert released.attempts == 0  # the interrupted attempt does not count
    assert released.run_after <= datetime.now(UTC)


async def test_shutdown_leaves_a_job_whose_thread_still_runs_to_its_lease(pool, db_url):
    # A thread cannot be stopped: released at shutdown, its job would be claimed by another
    # worker while this one still runs it.
    registry = Registry()
    go_on = threading.Event()
    ran_on: list[bool] = []

    @registry.task("test.in_thread")
    def in_thread(payload: Any, ctx: JobContext) -> None:
        ran_on.append(go_on.wait(10))

    try:
        async with running_worker(pool, db_url, registry, shutdown_grace_seconds=0.2) as w:
            job = await enqueue(pool, "test.in_thread", {})
            await wait_status(pool, job.id, JobStatus.RUNNING)
            token = await _lease_token(pool, job.id)
            await w.stop()
            assert not ran_on  # the thread still runs
            assert await status_of(pool, job.id) is JobStatus.RUNNING
            assert await _lease_token(pool, job.id) == token  # not released, not reclaimed
    finally:
        go_on.set()
    await wait_for(lambda: bool(ran_on))


async def test_shutdown_leaves_a_job_whose_handler_ignores_its_cancel_to_its_lease(pool, db_url):
    registry = Registry()
    go_on = asyncio.Event()

    @registry.task("test.stubborn")
    async def stubborn(payload: Any, ctx: JobContext) -> None:
        try:
            await go_on.wait()
        except asyncio.CancelledError:
            await go_on.wait()  # and on it goes

    try:
        async with running_worker(pool, db_url, registry, shutdown_grace_seconds=0.2) as w:
            job = await enqueue(pool, "test.stubborn", {})
            await wait_status(pool, job.id, JobStatus.RUNNING)
            token = await _lease_token(pool, job.id)
            await w.stop(now=True)
            assert await status_of(pool, job.id) is JobStatus.RUNNING
            assert await _lease_token(pool, job.id) == token  # not released, not reclaimed
    finally:
        go_on.set()


async def _lease_token(pool: asyncpg.Pool, job_id: Any) -> Any:
    return await pool.fetchval("SELECT lease_token FROM jobs WHERE id = $1", job_id)


async def test_a_stopped_worker_claims_nothing_more(pool, db_url):
    async with running_worker(pool, db_url) as w:
        await w.stop()
        job = await enqueue(pool, "demo.echo", {})
        await asyncio.sleep(0.2)
    assert await status_of(pool, job.id) is JobStatus.PENDING


async def test_new_jobs_are_picked_up_after_the_listen_connection_is_killed(pool, db_url):
    # Poll far away: only a re-established LISTEN can explain a fast pickup.
    async with running_worker(pool, db_url, poll_seconds=60) as w:
        old_pid = w.notifier.backend_pid
        await pool.execute("SELECT pg_terminate_backend($1)", old_pid)

        async def listening_again() -> bool:
            return w.notifier.connected.is_set() and w.notifier.backend_pid != old_pid

        await wait_for(listening_again, timeout=5)
        await asyncio.sleep(0.05)  # the worker is idle again
        job = await enqueue(pool, "demo.echo", {})
        done = await wait_status(pool, job.id, JobStatus.COMPLETED, timeout=5)
    assert done.started_at is not None
    assert done.started_at - done.created_at < timedelta(seconds=1)


async def test_jobs_enqueued_while_listen_was_down_are_claimed_on_reconnect(pool, db_url):
    async with running_worker(pool, db_url, poll_seconds=60) as w:
        await asyncio.sleep(0.05)
        # Close the LISTEN connection from our side and enqueue before it comes back.
        w.notifier.connected.clear()
        await pool.execute("SELECT pg_terminate_backend($1)", w.notifier.backend_pid)
        job = await enqueue(pool, "demo.echo", {})
        done = await wait_status(pool, job.id, JobStatus.COMPLETED, timeout=5)
    assert done.started_at is not None
    assert done.started_at - done.created_at < timedelta(seconds=2)


async def test_the_worker_survives_every_connection_being_killed(pool, db_url):
    # As after a PostgreSQL restart: the pool's connections and the LISTEN connection die.
    async with running_worker(pool, db_url, poll_seconds=60) as w:
        first = await enqueue(pool, "demo.echo", {})
        await wait_status(pool, first.id, JobStatus.COMPLETED)
        old_pid = w.notifier.backend_pid
        killer = await asyncpg.connect(db_url)
        try:
            await killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await killer.close()

        async def listening_again() -> bool:
            return w.notifier.connected.is_set() and w.notifier.backend_pid != old_pid

        await wait_for(listening_again, timeout=5)
        second = await wait_for(lambda: _enqueue_when_possible(pool), timeout=5)
        done = await wait_status(pool, second.id, JobStatus.COMPLETED, timeout=5)
    assert done.attempts == 1


async def _enqueue_when_possible(pool: asyncpg.Pool) -> Any:
    try:
        return await enqueue(pool, "demo.echo", {})
    except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError):
        return None


async def test_the_next_due_job_is_found_across_priorities(pool):
    now = datetime.now(UTC)
    await store.insert_jobs(
        pool,
        [
            JobSpec(type="demo.echo", priority=5, run_after=now + timedelta(hours=1)),
            JobSpec(type="demo.echo", priority=-3, run_after=now + timedelta(minutes=10)),
            JobSpec(type="demo.echo", priority=0, run_after=now + timedelta(minutes=30)),
            JobSpec(type="demo.echo", queue="other", run_after=now + timedelta(minutes=1)),
        ],
    )
    due_in = await store.seconds_until_next_job(pool, "default")
    assert due_in is not None and 590 < due_in <= 600
    assert await store.seconds_until_next_job(pool, "empty") is None


async def test_pool_connections_plan_every_claim_with_its_own_values(pool):
    # A generic plan cached while the table was small turned claims into full scans.
    assert await pool.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
    assert await pool.fetchval("SHOW jit") == "off"


# The claim loop's statements, with literal arguments for EXPLAIN EXECUTE.
CLAIM_LOOP = {
    "claim": "('plain', 50, 'w', 30, '00000000-0000-0000-0000-000000000000')",
    "seconds_until_next_job": "('plain')",
    "claim_flow": "('capped', 50, 'w', 30, '00000000-0000-0000-0000-000000000000')",
    "claim_fair": "('fair', 50, 'w', 30, '00000000-0000-0000-0000-000000000000')",
    "queue_flow": "('capped')",
}


async def test_the_claim_loops_cached_plans_made_on_an_empty_table_walk_the_index(pool, db_url):
    conn = await db.connect(db_url, server_settings=db.CLAIM_SERVER_SETTINGS)
    try:
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        for name in CLAIM_LOOP:  # planned now, on empty tables, and kept
            await conn.execute(f"PREPARE {name} AS {store.Q[name]}")
        await store.set_queue_limits(pool, "capped", key_concurrency=2)
        for queue, key in (("plain", None), ("capped", "concurrency_key"), ("fair", "fair_key")):
            specs = [
                JobSpec(type="demo.echo", queue=queue, **({key: f"k{i % 10}"} if key else {}))
                for i in range(3000)
            ]
            await store.insert_jobs(pool, specs)
        for name, args in CLAIM_LOOP.items():
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE {name}{args}"))
            assert "Seq Scan on jobs" not in plan and "Bitmap" not in plan, (name, plan)
            if name in ("claim", "claim_flow"):
                assert "jobs_claimable_idx" in plan, (name, plan)
            if name == "claim_fair":
                assert "jobs_fair_idx" in plan, (name, plan)
    finally:
        await conn.close()


async def test_a_result_the_database_cannot_store_fails_the_attempt_saying_why(pool, db_url):
    # JSON allows "\u0000" in a string and Python's json allows NaN; jsonb takes neither.
    registry = Registry()

    @registry.task("test.unstorable")
    async def unstorable(payload: Any, ctx: JobContext) -> Any:
        return {"text": "a\x00b"} if payload["nul"] else {"x": float("nan")}

    async with running_worker(pool, db_url, registry):
        nul = await enqueue(pool, "test.unstorable", {"nul": True}, max_attempts=1)
        nan = await enqueue(pool, "test.unstorable", {"nul": False}, max_attempts=1)
        nul_dead = await wait_status(pool, nul.id, JobStatus.DEAD)
        nan_dead = await wait_status(pool, nan.id, JobStatus.DEAD)
    assert "the result contains a NUL character" in (nul_dead.last_error or "")
    assert "the result contains NaN or Infinity" in (nan_dead.last_error or "")


async def test_an_outcome_the_database_refuses_is_recorded_as_a_failure(pool, db_url, caplog):
    # A constraint the result breaks: the database refuses the COMPLETED outcome. The job
    # must not wait for its lease to expire and then rerun without a backoff: the attempt
    # fails at once, with the database's reason. (A COMPLETED job is written to
    # jobs_history: the constraint sits there.)
    await pool.execute(
        "ALTER TABLE jobs_history ADD CONSTRAINT no_refusals"
        " CHECK (NOT coalesce(result ? 'refuse', false))"
    )
    registry = Registry()

    @registry.task("test.refused")
    async def refused(payload: Any, ctx: JobContext) -> Any:
        return {"refuse": True}

    async with running_worker(pool, db_url, registry, lease_seconds=30):
        job = await enqueue(pool, "test.refused", {}, max_attempts=2)
        dead = await wait_status(pool, job.id, JobStatus.DEAD, timeout=5)
    assert dead.attempts == 2
    assert "could not store this attempt's outcome (COMPLETED)" in (dead.last_error or "")
    assert "no_refusals" in (dead.last_error or "")
    assert "cannot record the outcome COMPLETED of job" in caplog.text


async def test_claims_resume_after_an_outage_ends_in_a_refused_outcome(pool, db_url, monkeypatch):
    # The outcome's write fails for want of a connection (claims pause), then the database
    # refuses it (a statement error: the failure is written instead). The database
    # answered, so claiming must resume, with no other outcome left to write.
    record = store.record_outcomes
    errors: list[Exception] = [
        ConnectionResetError("connection lost"),
        asyncpg.exceptions.LockNotAvailableError("could not obtain lock on row"),
    ]

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if errors:
            raise errors.pop(0)
        return await record(*args, **kwargs)

    monkeypatch.setattr(store, "record_outcomes", flaky)
    async with running_worker(pool, db_url, queues={"default": 1}) as running:
        first = await enqueue(pool, "demo.echo", {}, max_attempts=1)
        assert (await wait_status(pool, first.id, JobStatus.DEAD)).attempts == 1
        assert not errors
        second = await enqueue(pool, "demo.echo", {})
        await wait_status(pool, second.id, JobStatus.COMPLETED, timeout=5)
        assert not running.worker.completer.failing


class _Abort(BaseException):
    pass


@pytest.mark.parametrize("blocking", [False, True])
async def test_a_handler_raising_a_base_exception_fails_its_attempt(pool, db_url, blocking):
    registry = Registry()

    if blocking:

        @registry.task("test.abort")
        def abort_in_thread(payload: Any, ctx: JobContext) -> None:
            raise _Abort("stop everything")

    else:

        @registry.task("test.abort")
        async def abort(payload: Any, ctx: JobContext) -> None:
            raise _Abort("stop everything")

    async with running_worker(pool, db_url, registry) as running:
        job = await enqueue(pool, "test.abort", {}, max_attempts=1)
        dead = await wait_status(pool, job.id, JobStatus.DEAD)
        # the worker goes on: its slot is free and it takes the next job
        nxt = await enqueue(pool, "demo.echo", {})
        await wait_status(pool, nxt.id, JobStatus.COMPLETED)
        assert not running.worker._held
    assert "_Abort: stop everything" in (dead.last_error or "")


async def test_a_handler_that_cancels_its_own_task_fails_its_attempt(pool, db_url):
    registry = Registry()

    @registry.task("test.self_cancel")
    async def self_cancel(payload: Any, ctx: JobContext) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(1)

    async with running_worker(pool, db_url, registry) as running:
        job = await enqueue(pool, "test.self_cancel", {}, max_attempts=1)
        dead = await wait_status(pool, job.id, JobStatus.DEAD)
        await wait_for(lambda: not running.worker._held)
    assert "the handler cancelled its own task" in (dead.last_error or "")


async def test_error_text_the_database_cannot_store_is_escaped(pool, db_url):
    registry = Registry()

    @registry.task("test.nul_error")
    async def nul_error(payload: Any, ctx: JobContext) -> Any:
        raise RuntimeError("bad \x00 byte and a lone \ud800 surrogate")

    async with running_worker(pool, db_url, registry):
        job = await enqueue(pool, "test.nul_error", {}, max_attempts=1)
        dead = await wait_status(pool, job.id, JobStatus.DEAD)
    assert "bad \\x00 byte and a lone \\ud800 surrogate" in (dead.last_error or "")
