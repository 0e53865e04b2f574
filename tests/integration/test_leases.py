"""Lease bookkeeping against a real PostgreSQL: claims PostgreSQL forgets, handlers that
cancel themselves, releases at shutdown, heartbeats under pressure, and the order in which
statements lock rows."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

import aqueue.control
from aqueue import JobSpec, JobStatus, Registry, enqueue, enqueue_many, store
from aqueue.db import CLAIM_SERVER_SETTINGS, connect, create_pool
from aqueue.model import backoff_seconds
from aqueue.reaper import Reaper
from aqueue.registry import JobContext
from tests.helpers import fast_settings, running_worker, wait_for


async def job_row(pool: asyncpg.Pool, job_id: uuid.UUID) -> Any:
    job = await store.get_job(pool, job_id)
    assert job is not None
    return job


async def wait_status(pool: asyncpg.Pool, job_id: uuid.UUID, status: JobStatus, timeout=10.0):
    async def reached() -> bool:
        return (await job_row(pool, job_id)).status is status

    await wait_for(reached, timeout)
    return await job_row(pool, job_id)


async def forget_claim(pool: asyncpg.Pool, job_id: uuid.UUID) -> None:
    """Put a RUNNING job's row back as PostgreSQL's crash recovery leaves it when the
    claim's asynchronous commit never reached the disk: as it was before the claim."""
    await pool.execute(
        """UPDATE jobs SET status = CASE WHEN attempts > 1 THEN 'RETRY' ELSE 'PENDING' END,
               attempts = attempts - 1, locked_by = NULL, locked_at = NULL,
               lease_token = NULL, lease_expires_at = NULL, started_at = NULL,
               updated_at = created_at
           WHERE id = $1 AND status = 'RUNNING'""",
        job_id,
    )


# --- claims PostgreSQL forgot -------------------------------------------------------------


async def test_each_job_of_a_claim_gets_its_own_token_and_a_forgotten_claim_a_new_one(pool):
    jobs = await enqueue_many(pool, [JobSpec(type="demo.echo") for _ in range(300)])
    first = await store.claim(pool, "default", 300, "w", 30.0)
    assert len(first) == 300
    tokens = {job.lease_token for job in first}
    assert len(tokens) == 300
    for job_id in jobs:
        await forget_claim(pool, job_id)
    # the same jobs, the same attempt numbers, the same worker: other tokens
    again = await store.claim(pool, "default", 300, "w", 30.0)
    assert [job.attempt for job in again] == [job.attempt for job in first]
    assert len({job.lease_token for job in again}) == 300
    assert not tokens & {job.lease_token for job in again}


async def test_a_job_claimed_again_by_the_same_worker_stops_the_forgotten_run(pool, db_url):
    # The forgotten claim's run must be stopped (its outcome would be refused), must not
    # disturb the new attempt's lease, and must give its slot back.
    registry = Registry()
    first_run = asyncio.Event()
    cancelled = asyncio.Event()
    runs = 0

    @registry.task("test.twice")
    async def twice(payload: Any, ctx: JobContext) -> int:
        nonlocal runs
        runs += 1
        if runs == 1:
            first_run.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return runs

    async with running_worker(pool, db_url, registry, queues={"default": 2}) as w:
        job = await enqueue(pool, "test.twice", {})
        await asyncio.wait_for(first_run.wait(), 10)
        await forget_claim(pool, job.id)
        await pool.execute("SELECT pg_notify('aqueue_jobs', 'default')")
        done = await wait_status(pool, job.id, JobStatus.COMPLETED)
        await asyncio.wait_for(cancelled.wait(), 5)
        await wait_for(lambda: _zero(w.worker.in_flight["default"]))
        # the slot came back: the worker still runs two jobs at once
        later = [await enqueue(pool, "demo.sleep", {"seconds": 0.2}) for _ in range(2)]
        for other in later:
            await wait_status(pool, other.id, JobStatus.COMPLETED)
    assert done.result == 2 and done.attempts == 1
    assert runs == 2  # the live attempt was not reclaimed and run a third time
    assert w.worker.in_flight == {"default": 0}


async def _zero(value: int) -> bool:
    return value == 0


async def test_a_failed_attempt_whose_claim_was_forgotten_still_counts(pool, db_url):
    # A handler that crashes PostgreSQL loses its claim to crash recovery; its worker
    # writes the attempt back when its outcome is refused, so the job progresses to DEAD
    # instead of crash-looping the database with its attempts never counted.
    registry = Registry()
    forgotten = asyncio.Event()

    @registry.task("test.poison")
    async def poison(payload: Any, ctx: JobContext) -> None:
        await forgotten.wait()
        raise RuntimeError("took the database down")

    async with running_worker(pool, db_url, registry, poll_seconds=60):
        job = await enqueue(pool, "test.poison", {}, max_attempts=1)
        await wait_status(pool, job.id, JobStatus.RUNNING)
        await forget_claim(pool, job.id)
        forgotten.set()
        dead = await wait_status(pool, job.id, JobStatus.DEAD)
    assert dead.attempts == 1
    assert "took the database down" in (dead.last_error or "")
    statuses = [e.status for e in await store.job_events(pool, job.id)]
    assert statuses == [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.DEAD]


async def test_a_running_handler_whose_claim_was_forgotten_gets_it_back(pool, db_url):
    # No second claim comes (the poll is far away): the heartbeat finds the lease gone,
    # sees the row as crash recovery left it, and writes the claim back; the handler goes
    # on and its outcome is accepted. It ran once.
    registry = Registry()
    release = asyncio.Event()
    runs = 0

    @registry.task("test.long")
    async def long(payload: Any, ctx: JobContext) -> str:
        nonlocal runs
        runs += 1
        await release.wait()
        return "done"

    async with running_worker(pool, db_url, registry, poll_seconds=60, lease_seconds=2.0):
        job = await enqueue(pool, "test.long", {})
        running = await wait_status(pool, job.id, JobStatus.RUNNING)
        # Once the claim loop has asked when the next job is due it sleeps: forgetting the
        # claim before that would let it claim the job again at once (another test).
        await wait_for(lambda: _claim_loop_asleep(pool))
        await forget_claim(pool, job.id)
        restored = await wait_status(pool, job.id, JobStatus.RUNNING, timeout=5)
        assert restored.locked_by == running.locked_by and restored.attempts == 1
        release.set()
        done = await wait_status(pool, job.id, JobStatus.COMPLETED)
    assert done.attempts == 1 and done.result == "done" and runs == 1


async def _claim_loop_asleep(pool: asyncpg.Pool) -> bool:
    return bool(
        await pool.fetchval(
            """SELECT count(*) > 0 FROM pg_stat_activity
               WHERE datname = current_database() AND state = 'idle'
                 AND query LIKE '%How long a worker of queue%'"""
        )
    )


async def test_a_first_claim_commits_asynchronously_and_a_retry_claim_durably(pool, db_url):
    first = await enqueue(pool, "demo.echo", {}, queue="first")
    again = await enqueue(pool, "demo.echo", {}, queue="again")
    await pool.execute("UPDATE jobs SET attempts = 1, status = 'RETRY' WHERE id = $1", again.id)
    conn = await connect(db_url, server_settings=CLAIM_SERVER_SETTINGS)  # the claim loop's
    try:
        for queue, expected in (("first", "off"), ("again", "on")):
            async with conn.transaction():
                [claimed] = await store.claim(conn, queue, 1, "worker-a", 30)
                assert await conn.fetchval("SHOW synchronous_commit") == expected, queue
    finally:
        await conn.close()
    assert claimed.id == again.id and first.id != again.id


async def test_a_retry_claims_durability_ends_with_its_statement(pool, db_url):
    again = await enqueue(pool, "demo.echo", {}, queue="again")
    await pool.execute("UPDATE jobs SET attempts = 1, status = 'RETRY' WHERE id = $1", again.id)
    conn = await connect(db_url, server_settings=CLAIM_SERVER_SETTINGS)
    try:
        [claimed] = await store.claim(conn, "again", 1, "worker-a", 30)
        # the next claim, a first attempt's, skips the flush again
        assert await conn.fetchval("SHOW synchronous_commit") == "off"
    finally:
        await conn.close()
    assert claimed.id == again.id and claimed.attempt == 2


async def test_a_claim_on_any_other_connection_commits_durably(pool):
    await enqueue(pool, "demo.echo", {})
    async with pool.acquire() as conn, conn.transaction():
        assert len(await store.claim(conn, "default", 1, "worker-a", 30)) == 1
        assert await conn.fetchval("SHOW synchronous_commit") == "on"


# --- handlers and cancellation ------------------------------------------------------------


async def test_a_handler_raising_cancelled_error_itself_fails_its_attempt(pool, db_url):
    registry = Registry()

    @registry.task("test.awaits_cancelled")
    async def awaits_cancelled(payload: Any, ctx: JobContext) -> None:
        other = asyncio.create_task(asyncio.sleep(60))
        other.cancel()
        await other  # raises CancelledError into the handler: not aqueue's cancellation

    async with running_worker(pool, db_url, registry):
        job = await enqueue(pool, "test.awaits_cancelled", {}, max_attempts=2)
        dead = await wait_status(pool, job.id, JobStatus.DEAD)
    assert dead.attempts == 2
    assert "CancelledError" in (dead.last_error or "")
    assert "Traceback" in (dead.last_error or "")


async def test_the_handler_context_describes_the_job(pool, db_url):
    registry = Registry()
    seen: dict[str, Any] = {}

    @registry.task("test.describe")
    async def describe(payload: Any, ctx: JobContext) -> None:
        seen.update(
            job_id=ctx.job_id,
            type=ctx.type,
            queue=ctx.queue,
            priority=ctx.priority,
            attempt=ctx.attempt,
            max_attempts=ctx.max_attempts,
            created_at=ctx.created_at,
            run_after=ctx.run_after,
            started_at=ctx.started_at,
        )

    async with running_worker(pool, db_url, registry, queues={"mail": 1}):
        job = await enqueue(pool, "test.describe", {}, queue="mail", priority=7, max_attempts=4)
        done = await wait_status(pool, job.id, JobStatus.COMPLETED)
    assert seen["job_id"] == job.id and seen["type"] == "test.describe"
    assert (seen["queue"], seen["priority"], seen["attempt"], seen["max_attempts"]) == (
        "mail",
        7,
        1,
        4,
    )
    assert seen["created_at"] == job.created_at and seen["run_after"] == job.run_after
    assert seen["started_at"] == done.started_at


# --- releases at shutdown -----------------------------------------------------------------


async def test_releases_refund_the_attempt_only_a_bounded_number_of_times(pool, db_url):
    # A handler that hangs until every shutdown: refunded free_releases times, then each
    # release spends the attempt, so the job ends DEAD instead of being refunded for ever.
    registry = Registry()

    @registry.task("test.hangs")
    async def hangs(payload: Any, ctx: JobContext) -> None:
        await asyncio.sleep(60)

    job = await enqueue(pool, "test.hangs", {}, max_attempts=1)
    statuses = []
    for _ in range(2):
        async with running_worker(
            pool, db_url, registry, shutdown_grace_seconds=0.1, free_releases=1
        ) as w:
            await wait_status(pool, job.id, JobStatus.RUNNING)
            await w.stop()
        after = await job_row(pool, job.id)
        statuses.append((after.status, after.attempts))
        await pool.execute("UPDATE jobs SET run_after = now() WHERE id = $1", job.id)
    assert statuses == [(JobStatus.RETRY, 0), (JobStatus.DEAD, 1)]
    dead = await job_row(pool, job.id)
    assert "released 2 times: this attempt counts" in (dead.last_error or "")


# --- retries and reclaims on time ---------------------------------------------------------


async def test_a_retry_on_an_idle_worker_starts_on_time_without_polling(pool, db_url):
    # The safety-net poll is a minute away: only the RETRY outcome's notification can
    # start the second attempt on time.
    async with running_worker(
        pool, db_url, poll_seconds=60, backoff_base_seconds=0.1, backoff_cap_seconds=0.1
    ):
        job = await enqueue(pool, "demo.fail", {}, max_attempts=2)
        await wait_status(pool, job.id, JobStatus.DEAD, timeout=5)
    events = await store.job_events(pool, job.id)
    failed_at, second_start = events[2].at, events[3].at
    assert events[2].status is JobStatus.RETRY and events[3].status is JobStatus.RUNNING
    assert second_start - failed_at < timedelta(seconds=1)


async def test_a_reclaimed_job_waits_out_the_retry_backoff(pool):
    job = await enqueue(pool, "demo.echo", {})
    await store.claim(pool, "default", 1, "dead-worker", 0.05)
    await asyncio.sleep(0.1)
    settings = fast_settings(backoff_base_seconds=10, backoff_cap_seconds=10)
    assert await Reaper(pool, settings, "test").reap() == 1
    reclaimed = await job_row(pool, job.id)
    due_in = await pool.fetchval(
        "SELECT extract(epoch FROM run_after - now()) FROM all_jobs WHERE id = $1", job.id
    )
    assert reclaimed.status is JobStatus.RETRY
    assert 4.9 <= due_in <= 10  # the first retry's delay, jittered down to half


# --- heartbeats under pressure ------------------------------------------------------------


async def test_leases_hold_while_handlers_hold_every_pooled_connection(pool, db_url):
    # 20 handlers at once on a pool of 10, each keeping its completion transaction (a
    # pooled connection) for several leases: the heartbeat must not wait behind them.
    # A reaper in another process's place (its own pool) takes any lease that lapses.
    await pool.execute("CREATE TABLE effects (job_id uuid PRIMARY KEY)")
    registry = Registry()
    runs: Counter[uuid.UUID] = Counter()

    @registry.task("test.hold")
    async def hold(payload: Any, ctx: JobContext) -> None:
        runs[ctx.job_id] += 1
        conn = await ctx.transaction()
        await conn.execute("INSERT INTO effects VALUES ($1)", ctx.job_id)
        await asyncio.sleep(5.0)

    reaper_pool = await create_pool(db_url, min_size=1, max_size=2, plan_every_execution=True)
    reaper = Reaper(reaper_pool, fast_settings(reaper_interval_seconds=0.1), "test")
    reaping = asyncio.create_task(reaper.run())
    try:
        async with running_worker(
            pool, db_url, registry, queues={"default": 20}, lease_seconds=2.0
        ):
            ids = [(await enqueue(pool, "test.hold", {})).id for _ in range(20)]
            await wait_for(
                lambda: pool.fetchval(
                    "SELECT count(*) = 20 FROM all_jobs WHERE status = 'COMPLETED'"
                ),
                timeout=30,
            )
    finally:
        reaping.cancel()
        await asyncio.gather(reaping, return_exceptions=True)
        await reaper_pool.close()
    assert reaper.reclaimed == 0
    assert all(runs[i] == 1 for i in ids), runs
    assert await pool.fetchval("SELECT count(*) FROM effects") == 20
    assert await pool.fetchval("SELECT max(attempts) FROM all_jobs") == 1


async def test_a_worker_that_cannot_renew_for_a_whole_lease_stops_its_handler(pool, db_url):
    # Another transaction holds the job's row: the heartbeat skips it (it never waits for
    # a row lock) and cannot renew it. After a whole lease the worker must assume the job
    # was handed to someone else and stop its handler, so it never runs twice at once.
    registry = Registry()
    spans: list[list[float]] = []
    loop = asyncio.get_running_loop()
    stopped_at: list[float] = []

    @registry.task("test.span")
    async def span(payload: Any, ctx: JobContext) -> None:
        spans.append([loop.time(), float("inf")])
        try:
            await asyncio.sleep(10 if len(spans) == 1 else 0)
        finally:
            spans[-1][1] = loop.time()
            stopped_at.append(time.time())

    # the database's clock against this process's (one machine in CI, but not always)
    offset = (
        float(await pool.fetchval("SELECT extract(epoch FROM clock_timestamp())")) - time.time()
    )
    async with running_worker(pool, db_url, registry, lease_seconds=3.0):
        job = await enqueue(pool, "test.span", {})
        await wait_status(pool, job.id, JobStatus.RUNNING)
        async with pool.acquire() as locker, locker.transaction():
            await locker.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job.id)
            await wait_for(lambda: _ended(spans), timeout=10)
            # stopped before the database's lease ran out (with 0.3 s to spare), not at
            # the next heartbeat round after it: from then on a reaper may hand the job
            # to another worker
            expires = await pool.fetchval("SELECT lease_expires_at FROM jobs WHERE id = $1", job.id)
            assert stopped_at[0] + offset < expires.timestamp()
        # the lease ran out meanwhile: a reaper hands the job out again
        await wait_for(lambda: Reaper(pool, fast_settings(), "test").reap(), timeout=10)
        done = await wait_status(pool, job.id, JobStatus.COMPLETED)
    assert done.attempts == 2
    first, second = spans
    assert first[1] < 8 + first[0]  # stopped, not left to finish its 10 s
    assert first[1] <= second[0]  # the two runs never overlapped


async def _ended(spans: list[list[float]]) -> bool:
    return bool(spans) and spans[0][1] != float("inf")


async def test_the_heartbeat_renews_other_leases_while_one_row_is_locked(pool, db_url):
    registry = Registry()
    release = asyncio.Event()

    @registry.task("test.wait")
    async def wait(payload: Any, ctx: JobContext) -> None:
        await release.wait()

    async with running_worker(pool, db_url, registry, lease_seconds=3.0):
        locked = await enqueue(pool, "test.wait", {})
        free = await enqueue(pool, "test.wait", {})
        await wait_for(
            lambda: pool.fetchval("SELECT count(*) = 2 FROM all_jobs WHERE status = 'RUNNING'")
        )
        expiry = "SELECT lease_expires_at FROM all_jobs WHERE id = $1"
        before = {i: await pool.fetchval(expiry, i) for i in (locked.id, free.id)}
        async with pool.acquire() as locker, locker.transaction():
            await locker.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", locked.id)
            await wait_for(
                lambda: pool.fetchval(
                    "SELECT lease_expires_at > $2 FROM all_jobs WHERE id = $1",
                    free.id,
                    before[free.id],
                ),
                timeout=5,
            )
            assert await pool.fetchval(expiry, locked.id) == before[locked.id]
        release.set()
        for job in (locked, free):
            await wait_status(pool, job.id, JobStatus.COMPLETED)


# --- lock order ---------------------------------------------------------------------------


async def test_outcomes_lock_rows_in_id_order_and_a_deadlock_retries_the_batch(pool, db_url):
    # The test's transaction locks the second job's row, waits until the completer holds
    # the first and waits for the second, then asks for the first: a real deadlock. The
    # completer's statement is the one PostgreSQL aborts (its deadlock_timeout runs out
    # first); it must retry the batch as a whole, one statement, not row by row.
    registry = Registry()
    finish = asyncio.Event()

    @registry.task("test.together")
    async def together(payload: Any, ctx: JobContext) -> None:
        await finish.wait()

    async with running_worker(pool, db_url, registry):
        first = await enqueue(pool, "test.together", {})
        second = await enqueue(pool, "test.together", {})
        assert first.id < second.id
        await wait_for(
            lambda: pool.fetchval("SELECT count(*) = 2 FROM all_jobs WHERE status = 'RUNNING'")
        )
        async with pool.acquire() as other, other.transaction():
            await other.execute("SET LOCAL deadlock_timeout = '30s'")
            await other.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", second.id)
            finish.set()
            await wait_for(lambda: _waiting_for_a_lock(pool), timeout=5)
            await other.execute("UPDATE jobs SET priority = priority WHERE id = $1", first.id)
        for job in (first, second):
            await wait_status(pool, job.id, JobStatus.COMPLETED)
    finished = await pool.fetch(
        "SELECT finished_at FROM all_jobs WHERE id = ANY($1::uuid[])", [first.id, second.id]
    )
    assert len({r["finished_at"] for r in finished}) == 1  # one statement wrote both


async def _waiting_for_a_lock(pool: asyncpg.Pool) -> bool:
    # Matched on the statement's first comment line: pg_stat_activity keeps only its
    # first 1024 bytes (track_activity_query_size).
    return bool(
        await pool.fetchval(
            """SELECT count(*) > 0 FROM pg_stat_activity
               WHERE datname = current_database() AND wait_event_type = 'Lock'
                 AND query LIKE '%A batch of outcomes%'"""
        )
    )


async def test_the_databases_backoff_follows_the_same_rule_as_the_workers(pool):
    # aqueue_backoff (reclaims, spent releases) and model.backoff_seconds (failed
    # attempts) are one rule in two languages: min(cap, base * 2^(n-1)), jittered down to
    # half of that.
    for attempt, base, cap in ((1, 1.0, 300.0), (4, 1.0, 300.0), (12, 1.0, 300.0), (3, 0.5, 1.0)):
        ceiling = min(cap, base * 2 ** (attempt - 1))
        delays = [
            await pool.fetchval(
                "SELECT extract(epoch FROM aqueue_backoff($1, $2, $3))::float8", attempt, base, cap
            )
            for _ in range(50)
        ]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, delays)
        assert len(set(delays)) > 1  # jittered
        python = [backoff_seconds(attempt, base, cap) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in python)


async def test_a_claim_the_worker_gave_up_on_does_not_go_on_in_the_database(pool, db_url):
    # A flow-controlled claim waits for its queue's row, which another transaction holds
    # for longer than the claim's timeout (the lease). The worker cuts the connection and
    # claims again; the claim it gave up on must not go on waiting in PostgreSQL, to take
    # the job once the row is free, with nobody holding it (the job would then wait for
    # its lease to run out and run as a second attempt).
    await aqueue.control.set_rate_limit(pool, "rl", "100/s")
    registry = Registry()
    runs: list[uuid.UUID] = []

    @registry.task("test.once")
    async def once(payload: Any, ctx: JobContext) -> None:
        runs.append(ctx.job_id)

    async with running_worker(pool, db_url, registry, queues={"rl": 1}, lease_seconds=1.0):
        due = datetime.now(UTC) + timedelta(seconds=0.3)
        job = await enqueue(pool, "test.once", {}, queue="rl", run_after=due)
        async with pool.acquire() as locker, locker.transaction():
            await locker.execute("SELECT 1 FROM queues WHERE name = 'rl' FOR UPDATE")
            await asyncio.sleep(2.5)  # the worker's claims time out meanwhile
        done = await wait_status(pool, job.id, JobStatus.COMPLETED, timeout=10)
    assert done.attempts == 1 and runs == [job.id]
