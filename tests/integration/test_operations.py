"""Operating the queue from Python against a real PostgreSQL: cancel, retry, pause and
resume, priorities that cannot starve, per-job timeouts, waiting for a result,
dependencies, the queue overview and the worker registry."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import asyncpg
import pytest

import aqueue
from aqueue import JobContext, JobStatus, Registry, enqueue, store
from aqueue.notifier import Notifier
from aqueue.reaper import Reaper
from tests.helpers import fast_settings, running_worker, wait_for, wait_status


async def _status(pool: asyncpg.Pool, job_id: uuid.UUID) -> JobStatus:
    return JobStatus(await pool.fetchval("SELECT status FROM all_jobs WHERE id = $1", job_id))


async def _events(pool: asyncpg.Pool, job_id: uuid.UUID) -> list[tuple[str, str | None]]:
    rows = await pool.fetch(
        "SELECT status, error FROM job_events WHERE job_id = $1 ORDER BY at", job_id
    )
    return [(r["status"], r["error"]) for r in rows]


def _marking() -> tuple[Registry, list[uuid.UUID]]:
    """A registry whose task `test.mark` notes the id of each job it runs, in that list."""
    ran: list[uuid.UUID] = []
    registry = Registry()

    @registry.task("test.mark")
    async def mark(payload: Any, ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    return registry, ran


# --- cancel --------------------------------------------------------------------------------


async def test_a_pending_job_cancelled_never_runs_and_its_history_says_so(pool, db_url):
    registry, ran = _marking()
    job = await enqueue(pool, "test.mark", {}, run_after=None, queue="later")
    cancelled = await aqueue.cancel(pool, job.id)
    assert cancelled.status is JobStatus.CANCELLED
    async with running_worker(pool, db_url, registry, queues={"later": 1}):
        other = await enqueue(pool, "test.mark", {}, queue="later")
        await wait_status(pool, other.id, JobStatus.COMPLETED)
    assert ran == [other.id]
    assert await _events(pool, job.id) == [("CANCELLED", "cancelled by an operator")]


async def test_a_running_job_cancelled_stops_at_once_and_frees_its_slot(pool, db_url, caplog):
    caplog.set_level(logging.INFO, logger="aqueue.worker")
    registry = Registry()
    started = asyncio.Event()
    stopped = asyncio.Event()

    @registry.task("test.forever")
    async def forever(payload: Any, ctx: JobContext) -> str:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return "never"

    async with running_worker(pool, db_url, registry, queues={"default": 1}) as running:
        job = await enqueue(pool, "test.forever", {})
        await asyncio.wait_for(started.wait(), 10)
        await aqueue.cancel(pool, job.id)
        await asyncio.wait_for(stopped.wait(), 10)
        # stopped by the notification, not found out later by a heartbeat
        assert "cancelled; stopping its handler" in caplog.text
        await wait_for(lambda: running.worker.in_flight["default"] == 0, timeout=1)
        # the freed slot takes the next job
        nxt = await enqueue(pool, "demo.echo", {"n": 1})
        await wait_status(pool, nxt.id, JobStatus.COMPLETED)
    assert await _status(pool, job.id) is JobStatus.CANCELLED
    assert [s for s, _ in await _events(pool, job.id)] == ["CANCELLED"]


async def test_jobs_cancelled_before_their_handlers_started_free_their_slots(pool, db_url):
    # The cancel notification can be handled between the claim and the first step of the
    # handler's task (both answers arrive in one read of the sockets): the task is then
    # cancelled before it runs at all, and its slot must still come back: here both jobs of
    # one claim.
    registry, ran = _marking()
    async with running_worker(pool, db_url, registry, queues={"default": 2}) as running:
        worker = running.worker
        start = worker._start
        cancelled: list[uuid.UUID] = []

        def start_then_cancel(job: store.ClaimedJob, *args: Any) -> None:
            start(job, *args)
            if len(cancelled) < 2:
                cancelled.append(job.id)
                worker._cancel_notified(str(job.id))

        worker._start = start_then_cancel  # type: ignore[method-assign]
        first = await aqueue.enqueue_many(
            pool, [aqueue.JobSpec(type="test.mark", payload={"n": n}) for n in range(2)]
        )
        await wait_for(lambda: len(cancelled) == 2)
        await wait_for(lambda: worker.in_flight["default"] == 0, timeout=2)
        # both slots take the next jobs at once
        nxt = await aqueue.enqueue_many(
            pool, [aqueue.JobSpec(type="test.mark", payload={"n": n}) for n in range(2)]
        )
        for job_id in nxt:
            await wait_status(pool, job_id, JobStatus.COMPLETED)
    assert sorted(ran) == sorted(nxt)
    assert sorted(cancelled) == sorted(first)


async def test_a_late_outcome_of_a_cancelled_run_is_refused_by_the_lease(pool, db_url):
    job = await enqueue(pool, "demo.echo", {})
    claimed = await store.claim(pool, "default", 1, "w1", 30.0)
    await aqueue.cancel(pool, job.id)
    accepted = await store.record_outcomes(
        pool, [store.Outcome(claimed[0], JobStatus.COMPLETED, result={"late": True})], "w1"
    )
    assert accepted == set()
    assert await _status(pool, job.id) is JobStatus.CANCELLED


async def test_cancelling_a_finished_job_says_why_and_an_unknown_one_is_not_found(pool):
    job = await enqueue(pool, "demo.echo", {})
    claimed = await store.claim(pool, "default", 1, "w1", 30.0)
    await store.record_outcomes(pool, [store.Outcome(claimed[0], JobStatus.COMPLETED)], "w1")
    with pytest.raises(aqueue.JobStateError, match="already finished: it is COMPLETED"):
        await aqueue.cancel(pool, job.id)
    with pytest.raises(aqueue.JobNotFound):
        await aqueue.cancel(pool, uuid.uuid4())


# --- retry ---------------------------------------------------------------------------------


async def test_a_dead_job_retried_runs_again_with_a_fresh_budget(pool, db_url):
    registry = Registry()
    calls: list[int] = []

    @registry.task("test.fail_first")
    async def fail_first(payload: Any, ctx: JobContext) -> str:
        calls.append(ctx.attempt)
        if len(calls) == 1:
            raise RuntimeError("first time fails")
        return "ok"

    async with running_worker(pool, db_url, registry):
        job = await enqueue(pool, "test.fail_first", {}, max_attempts=1)
        await wait_status(pool, job.id, JobStatus.DEAD)
        retried = await aqueue.retry(pool, job.id)
        assert retried.status is JobStatus.PENDING and retried.attempts == 0
        await wait_status(pool, job.id, JobStatus.COMPLETED)
    assert calls == [1, 1]
    statuses = [s for s, _ in await _events(pool, job.id)]
    assert statuses == ["DEAD", "PENDING", "COMPLETED"]  # the earlier attempt stays


async def test_only_dead_or_cancelled_jobs_can_be_retried(pool):
    job = await enqueue(pool, "demo.echo", {})
    with pytest.raises(aqueue.JobStateError, match="only DEAD or CANCELLED"):
        await aqueue.retry(pool, job.id)
    with pytest.raises(aqueue.JobNotFound):
        await aqueue.retry(pool, uuid.uuid4())


async def test_retry_dead_retries_a_queues_dead_jobs_of_one_type(pool):
    ids = {}
    for type_ in ("demo.fail", "demo.fail", "demo.echo"):
        job = await enqueue(pool, type_, {}, queue="q", max_attempts=1)
        ids.setdefault(type_, []).append(job.id)
    await pool.execute("UPDATE jobs SET status = 'DEAD', finished_at = now()")
    assert await aqueue.retry_dead(pool, "q", "demo.fail") == 2
    for job_id in ids["demo.fail"]:
        assert await _status(pool, job_id) is JobStatus.PENDING
    assert await _status(pool, ids["demo.echo"][0]) is JobStatus.DEAD
    assert await aqueue.retry_dead(pool, "q") == 1


# --- pause and resume ------------------------------------------------------------------------


async def test_a_paused_queue_starts_nothing_until_resumed_also_after_a_restart(pool, db_url):
    await aqueue.pause(pool, "default")
    async with running_worker(pool, db_url):  # started after the pause: it respects it
        jobs = [await enqueue(pool, "demo.echo", {"n": i}) for i in range(5)]
        await asyncio.sleep(1.0)
        assert {await _status(pool, j.id) for j in jobs} == {JobStatus.PENDING}
        await aqueue.resume(pool, "default")
        for job in jobs:
            await wait_status(pool, job.id, JobStatus.COMPLETED, timeout=5)


async def test_pausing_a_queue_stops_claims_at_once_and_lets_running_jobs_finish(pool, db_url):
    registry = Registry()
    release = asyncio.Event()

    @registry.task("test.wait")
    async def wait_(payload: Any, ctx: JobContext) -> None:
        await release.wait()

    async with running_worker(pool, db_url, registry):
        running = await enqueue(pool, "test.wait", {})
        await wait_status(pool, running.id, JobStatus.RUNNING)
        await aqueue.pause(pool, "default")
        later = await enqueue(pool, "demo.echo", {})
        release.set()
        await wait_status(pool, running.id, JobStatus.COMPLETED)
        await asyncio.sleep(0.5)
        assert await _status(pool, later.id) is JobStatus.PENDING
        await aqueue.resume(pool, "default")
        await wait_status(pool, later.id, JobStatus.COMPLETED, timeout=5)


# --- priorities ------------------------------------------------------------------------------


async def test_a_one_slot_worker_runs_higher_priorities_first(pool, db_url):
    order: list[int] = []
    registry = Registry()

    @registry.task("test.order")
    async def record_order(payload: Any, ctx: JobContext) -> None:
        order.append(payload["p"])

    await aqueue.pause(pool, "default")
    jobs = [await enqueue(pool, "test.order", {"p": p}, priority=p) for p in (0, 5, -3, 10, 5)]
    async with running_worker(pool, db_url, registry, queues={"default": 1}):
        await aqueue.resume(pool, "default")
        for job in jobs:
            await wait_status(pool, job.id, JobStatus.COMPLETED)
    assert order == [10, 5, 5, 0, -3]


async def test_a_low_priority_job_under_a_stream_of_high_priority_work_starts_in_bounded_time(
    pool, db_url
):
    # One slot, and always more high-priority work than it can run: without aging the
    # low-priority job would wait for ever. With --promote-after 1 s and a reaper round
    # every 0.2 s it starts within about 1.2 s (plus one job's run).
    registry = Registry()
    started: dict[str, float] = {}
    loop = asyncio.get_running_loop()

    @registry.task("test.busy")
    async def busy(payload: Any, ctx: JobContext) -> None:
        started.setdefault(payload["name"], loop.time())
        await asyncio.sleep(0.02)

    settings = fast_settings(promote_after_seconds=1.0, reaper_interval_seconds=0.2)
    stop = asyncio.Event()

    async def stream() -> None:
        while not stop.is_set():
            await aqueue.enqueue_many(
                pool,
                [aqueue.JobSpec("test.busy", {"name": "high"}, priority=10) for _ in range(20)],
            )
            await asyncio.sleep(0.1)

    async with running_worker(pool, db_url, registry, queues={"default": 1}):
        reaper = Reaper(pool, settings, "test")
        reaping = asyncio.create_task(reaper.run())
        streaming = asyncio.create_task(stream())
        await asyncio.sleep(0.3)
        low = await enqueue(pool, "test.busy", {"name": "low"}, priority=-10)
        enqueued = loop.time()
        try:
            await wait_status(pool, low.id, JobStatus.COMPLETED, timeout=15)
        finally:
            stop.set()
            reaper.stop()
            await asyncio.gather(streaming, reaping)
        backlog = await pool.fetchval(
            "SELECT count(*) FROM jobs WHERE status = 'PENDING' AND priority = 10"
        )
    assert backlog > 0  # the high-priority stream never ran dry: without aging, no start
    # promoted after 1 s, at a reaper round every 0.2 s: about 1.2 s, on a loaded machine more
    assert started["low"] - enqueued < 10.0


# --- timeouts --------------------------------------------------------------------------------


async def test_an_attempt_past_its_timeout_fails_with_a_timeout_error(pool, db_url):
    async with running_worker(pool, db_url):
        job = await enqueue(
            pool, "demo.sleep", {"seconds": 30}, timeout_seconds=0.2, max_attempts=1
        )
        dead = await wait_status(pool, job.id, JobStatus.DEAD)
    assert dead.last_error is not None
    assert "JobTimeout" in dead.last_error and "0.2s" in dead.last_error


async def test_a_tasks_default_timeout_applies_unless_the_job_sets_its_own(pool, db_url):
    registry = Registry()

    @registry.task("test.slow", timeout=0.2)
    async def slow(payload: Any, ctx: JobContext) -> str:
        await asyncio.sleep(payload["seconds"])
        return "done"

    async with running_worker(pool, db_url, registry):
        limited = await enqueue(pool, "test.slow", {"seconds": 5}, max_attempts=1)
        allowed = await enqueue(pool, "test.slow", {"seconds": 0.4}, timeout_seconds=5)
        assert "JobTimeout" in (await wait_status(pool, limited.id, JobStatus.DEAD)).last_error
        assert (await wait_status(pool, allowed.id, JobStatus.COMPLETED)).result == "done"


async def test_a_timeout_the_handler_raises_itself_is_an_ordinary_failure(pool, db_url):
    registry = Registry()

    @registry.task("test.own_timeout")
    async def own_timeout(payload: Any, ctx: JobContext) -> None:
        raise TimeoutError("the remote API timed out")

    async with running_worker(pool, db_url, registry):
        job = await enqueue(pool, "test.own_timeout", {}, timeout_seconds=10, max_attempts=1)
        dead = await wait_status(pool, job.id, JobStatus.DEAD)
    assert "the remote API timed out" in dead.last_error
    assert "JobTimeout" not in dead.last_error


# --- waiting for a result ----------------------------------------------------------------------


async def test_wait_returns_the_job_as_it_completes(pool, db_url):
    async with running_worker(pool, db_url):
        job = await enqueue(pool, "demo.sleep", {"seconds": 0.3})
        done = await aqueue.wait(pool, job.id, timeout=10)
    assert done.status is JobStatus.COMPLETED and done.result == {"slept": 0.3}


async def test_wait_times_out_on_a_job_that_does_not_finish(pool):
    job = await enqueue(pool, "demo.echo", {}, queue="nobody-serves-this")
    with pytest.raises(TimeoutError):
        await aqueue.wait(pool, job.id, timeout=0.3)
    with pytest.raises(aqueue.JobNotFound):
        await aqueue.wait(pool, uuid.uuid4(), timeout=1)


async def test_a_thousand_waiters_share_one_listen_connection(pool, db_url):
    notifier = Notifier(db_url)
    listening = asyncio.create_task(notifier.run())
    try:
        await asyncio.wait_for(notifier.connected.wait(), 10)
        jobs = [await enqueue(pool, "demo.echo", {"n": i}) for i in range(10)]
        before = await _backends(pool)
        waiters = [
            asyncio.create_task(aqueue.wait(pool, jobs[i % 10].id, timeout=30, notifier=notifier))
            for i in range(1000)
        ]
        await asyncio.sleep(1.0)
        assert not any(w.done() for w in waiters)
        during = await _backends(pool)
        async with running_worker(pool, db_url):
            done = await asyncio.gather(*waiters)
        assert {j.status for j in done} == {JobStatus.COMPLETED}
        assert during <= before + pool.get_max_size()  # the pool, never a connection per waiter
    finally:
        notifier.stop()
        await listening


async def _backends(pool: asyncpg.Pool) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        )
    )


# --- dependencies ------------------------------------------------------------------------------


async def test_a_chain_runs_in_order(pool, db_url):
    order: list[str] = []
    registry = Registry()

    @registry.task("test.step")
    async def step(payload: Any, ctx: JobContext) -> None:
        order.append(payload["name"])
        await asyncio.sleep(0.05)

    a = await enqueue(pool, "test.step", {"name": "a"}, priority=-5)
    b = await enqueue(pool, "test.step", {"name": "b"}, depends_on=[a.id], priority=5)
    c = await enqueue(pool, "test.step", {"name": "c"}, depends_on=[b.id], priority=10)
    assert b.waiting_for == 1
    async with running_worker(pool, db_url, registry):
        await wait_status(pool, c.id, JobStatus.COMPLETED)
    assert order == ["a", "b", "c"]


async def test_a_diamond_joins_after_both_branches(pool, db_url):
    order: list[str] = []
    registry = Registry()

    @registry.task("test.step")
    async def step(payload: Any, ctx: JobContext) -> None:
        await asyncio.sleep(payload.get("sleep", 0))
        order.append(payload["name"])

    top = await enqueue(pool, "test.step", {"name": "top"})
    left = await enqueue(pool, "test.step", {"name": "left", "sleep": 0.3}, depends_on=[top.id])
    right = await enqueue(pool, "test.step", {"name": "right"}, depends_on=[top.id])
    join = await enqueue(pool, "test.step", {"name": "join"}, depends_on=[left.id, right.id])
    async with running_worker(pool, db_url, registry):
        await wait_status(pool, join.id, JobStatus.COMPLETED)
    assert order[0] == "top" and order[-1] == "join" and set(order[1:3]) == {"left", "right"}


async def test_a_failed_parent_cancels_its_dependents_naming_it(pool, db_url):
    async with running_worker(pool, db_url):
        parent = await enqueue(pool, "demo.fail", {}, max_attempts=1)
        child = await enqueue(pool, "demo.echo", {}, depends_on=[parent.id])
        grandchild = await enqueue(pool, "demo.echo", {}, depends_on=[child.id])
        cancelled = await wait_status(pool, grandchild.id, JobStatus.CANCELLED)
    child_job = await store.get_job(pool, child.id)
    assert child_job is not None and child_job.status is JobStatus.CANCELLED
    assert f"job {parent.id}, which it depends on, ended DEAD" in child_job.last_error
    assert f"job {child.id}, which it depends on, ended CANCELLED" in cancelled.last_error


async def test_a_job_that_begins_to_depend_on_a_doomed_one_meanwhile_is_cancelled_too(pool):
    # The cancellation of a parent's dependents waits for a dependent's lock, held by the
    # enqueue of a job that depends on that dependent: an edge its statement did not see.
    parent = await enqueue(pool, "demo.echo", {})  # no worker runs here: it stays PENDING
    child = await enqueue(pool, "demo.echo", {}, depends_on=[parent.id])
    async with pool.acquire() as conn:
        enqueuing = conn.transaction()
        await enqueuing.start()
        grandchild = await enqueue(conn, "demo.echo", {}, depends_on=[child.id])
        cancelling = asyncio.create_task(store.cancel_job(pool, parent.id))
        await wait_for(
            lambda: pool.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        await enqueuing.commit()
        await cancelling
    cancelled = await store.get_job(pool, grandchild.id)
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    assert f"job {child.id}, which it depends on, ended CANCELLED" in (cancelled.last_error or "")


async def test_depending_on_finished_jobs_is_decided_at_enqueue(pool, db_url):
    async with running_worker(pool, db_url):
        done = await enqueue(pool, "demo.echo", {})
        dead = await enqueue(pool, "demo.fail", {}, max_attempts=1)
        await wait_status(pool, done.id, JobStatus.COMPLETED)
        await wait_status(pool, dead.id, JobStatus.DEAD)
        runs_now = await enqueue(pool, "demo.echo", {}, depends_on=[done.id])
        assert runs_now.waiting_for == 0
        await wait_status(pool, runs_now.id, JobStatus.COMPLETED)
    never = await enqueue(pool, "demo.echo", {}, depends_on=[done.id, dead.id])
    assert never.status is JobStatus.CANCELLED and str(dead.id) in never.last_error


async def test_an_unknown_dependency_is_refused(pool):
    with pytest.raises(store.UnknownDependency, match="unknown job"):
        await enqueue(pool, "demo.echo", {}, depends_on=[uuid.uuid4()])
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_a_parent_completed_in_the_completion_transaction_releases_its_dependents(
    pool, db_url
):
    registry = Registry()

    @registry.task("test.tx")
    async def tx(payload: Any, ctx: JobContext) -> None:
        conn = await ctx.transaction()
        await conn.execute("SELECT 1")

    async with running_worker(pool, db_url, registry):
        parent = await enqueue(pool, "test.tx", {}, run_after=None)
        child = await enqueue(pool, "demo.echo", {}, depends_on=[parent.id])
        await wait_status(pool, child.id, JobStatus.COMPLETED)


async def test_cancelling_a_parent_cancels_its_dependents(pool):
    parent = await enqueue(pool, "demo.echo", {}, queue="idle")
    child = await enqueue(pool, "demo.echo", {}, depends_on=[parent.id], queue="idle")
    await aqueue.cancel(pool, parent.id)
    assert await _status(pool, child.id) is JobStatus.CANCELLED


async def test_a_batch_enqueue_with_dependencies(pool, db_url):
    parent = await enqueue(pool, "demo.echo", {"n": 0})
    ids = await aqueue.enqueue_many(
        pool,
        [aqueue.JobSpec("demo.echo", {"n": i}, depends_on=(parent.id,)) for i in range(3)],
    )
    async with running_worker(pool, db_url):
        for job_id in ids:
            await wait_status(pool, job_id, JobStatus.COMPLETED)


# --- blocking handlers ---------------------------------------------------------------------------


async def test_a_blocking_handler_runs_in_a_thread_without_blocking_the_loop(pool, db_url):
    import threading
    import time

    registry = Registry()
    threads: list[str] = []
    go_on = threading.Event()

    @registry.task("test.blocking")
    def blocking(payload: Any, ctx: JobContext) -> str:
        threads.append(threading.current_thread().name)
        go_on.wait(30)  # blocks its thread until the test lets it go
        time.sleep(0.01)
        return "slept"

    async with running_worker(pool, db_url, registry):
        slow = await enqueue(pool, "test.blocking", {})
        await wait_status(pool, slow.id, JobStatus.RUNNING)
        quick = await enqueue(pool, "demo.echo", {})
        # the event loop is free while the thread blocks: the async job completes
        await wait_status(pool, quick.id, JobStatus.COMPLETED)
        go_on.set()
        done = await wait_status(pool, slow.id, JobStatus.COMPLETED)
    assert done.result == "slept"
    assert threads and threads[0].startswith("aqueue-handler")


async def test_a_blocking_handler_past_its_timeout_fails_and_its_result_is_discarded(pool, db_url):
    import time

    registry = Registry()

    @registry.task("test.blocking_slow", timeout=0.2)
    def blocking_slow(payload: Any, ctx: JobContext) -> str:
        time.sleep(0.6)
        return "too late"

    async with running_worker(pool, db_url, registry):
        job = await enqueue(pool, "test.blocking_slow", {}, max_attempts=1)
        dead = await wait_status(pool, job.id, JobStatus.DEAD)
        await asyncio.sleep(0.6)  # the thread ends; nothing it returns is written
    assert "JobTimeout" in dead.last_error and "thread" in dead.last_error
    assert (await store.get_job(pool, job.id)).status is JobStatus.DEAD


# --- queues and workers --------------------------------------------------------------------------


async def test_the_queue_overview_shows_depths_pause_recent_counts_and_workers(pool, db_url):
    await aqueue.pause(pool, "email")
    for _ in range(3):
        await enqueue(pool, "demo.echo", {}, queue="email")
    async with running_worker(pool, db_url, queues={"default": 2}) as running:
        done = await enqueue(pool, "demo.echo", {})
        failed = await enqueue(pool, "demo.fail", {}, max_attempts=1)
        await wait_status(pool, done.id, JobStatus.COMPLETED)
        await wait_status(pool, failed.id, JobStatus.DEAD)

        async def overview() -> dict[str, store.QueueInfo] | None:
            infos = {q.name: q for q in await aqueue.queues(pool)}
            # the worker's registry row is written by its heartbeat task, asynchronously
            return infos if infos["default"].workers == [running.worker.id] else None

        infos = await wait_for(overview)
    email = infos["email"]
    assert email.paused and email.depth["pending"] == 3
    assert email.oldest_pending_seconds is not None and email.oldest_pending_seconds >= 0
    default = infos["default"]
    assert not default.paused and default.depth["dead"] == 1
    assert default.completed_recently == 1 and default.failed_recently == 1


async def test_each_worker_keeps_a_registry_row_and_marks_it_stopped(pool, db_url):
    async with running_worker(pool, db_url, queues={"default": 3, "email": 1}) as running:

        async def registered() -> store.WorkerInfo | None:
            # written by the heartbeat task as it starts, not before run() returns
            rows = await aqueue.workers(pool)
            return next((w for w in rows if w.id == running.worker.id), None)

        mine = await wait_for(registered)
        assert mine.state == "alive" and mine.queues == {"default": 3, "email": 1}
    rows = await aqueue.workers(pool)
    assert next(w for w in rows if w.id == running.worker.id).state == "stopped"


async def test_only_jobs_behind_higher_priorities_are_promoted(pool):
    # Nothing is ahead of a queue's top priority but older jobs: a backlog of one
    # priority is never rewritten, however old.
    reaper = Reaper(pool, fast_settings(promote_after_seconds=0.01), "test")
    for _ in range(5):
        await enqueue(pool, "demo.echo", {}, queue="backlog", priority=3)
    await asyncio.sleep(0.05)
    assert await reaper.promote() == 0
    low = await enqueue(pool, "demo.echo", {}, queue="backlog", priority=-1)
    await asyncio.sleep(0.05)
    assert await reaper.promote() == 1
    assert await pool.fetchval("SELECT effective_priority FROM jobs WHERE id = $1", low.id) == (
        aqueue.model.PROMOTED_PRIORITY
    )
    assert await reaper.promote() == 0  # promoted jobs are the top group now
