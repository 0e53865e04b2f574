"""The reaper role: expired leases are reclaimed, to RETRY or DEAD, and recorded."""

from __future__ import annotations

import asyncio

from aqueue import JobStatus, enqueue, store
from aqueue.reaper import Reaper
from tests.helpers import fast_settings, wait_for


async def test_an_expired_lease_goes_back_to_retry_and_is_recorded(pool):
    job = await enqueue(pool, "demo.echo", {})
    await store.claim(pool, "default", 1, "dead-worker", 0.05)
    await asyncio.sleep(0.1)
    reaper = Reaper(pool, fast_settings(), "test")
    assert await reaper.reap() == 1
    reclaimed = await store.get_job(pool, job.id)
    assert reclaimed is not None
    assert reclaimed.status is JobStatus.RETRY
    assert "dead-worker" in (reclaimed.last_error or "")
    last = (await store.job_events(pool, job.id))[-1]
    assert last.status is JobStatus.RETRY and last.worker == reaper.id


async def test_an_expired_lease_with_no_attempts_left_goes_dead(pool):
    job = await enqueue(pool, "demo.echo", {}, max_attempts=1)
    await store.claim(pool, "default", 1, "dead-worker", 0.05)
    await asyncio.sleep(0.1)
    await Reaper(pool, fast_settings(), "test").reap()
    dead = await store.get_job(pool, job.id)
    assert dead is not None and dead.status is JobStatus.DEAD
    assert dead.finished_at is not None


async def test_a_live_lease_is_left_alone(pool):
    job = await enqueue(pool, "demo.echo", {})
    await store.claim(pool, "default", 1, "busy-worker", 30)
    assert await Reaper(pool, fast_settings(), "test").reap() == 0
    running = await store.get_job(pool, job.id)
    assert running is not None and running.status is JobStatus.RUNNING


async def test_the_reaper_reclaims_more_than_one_batch(pool):
    for _ in range(5):
        await enqueue(pool, "demo.echo", {})
    await store.claim(pool, "default", 5, "dead-worker", 0.05)
    await asyncio.sleep(0.1)
    assert await Reaper(pool, fast_settings(reaper_batch=2), "test").reap() == 5


async def test_reclaimed_jobs_wake_the_workers_of_their_queue(pool, db_url):
    import asyncpg

    listener = await asyncpg.connect(db_url)
    heard: list[str] = []
    await listener.add_listener("aqueue_jobs", lambda *args: heard.append(args[3]))
    try:
        await enqueue(pool, "demo.echo", {}, queue="email")
        await wait_for(lambda: heard == ["email"])  # the enqueue's own
        await store.claim(pool, "email", 1, "dead-worker", 0.05)
        await asyncio.sleep(0.1)  # the lease runs out
        heard.clear()
        assert await Reaper(pool, fast_settings(), "test").reap() == 1
        await wait_for(lambda: heard == ["email"])
        # one notification for the reclaim, not one more after it
        await asyncio.sleep(0.1)
        assert heard == ["email"]
    finally:
        await listener.close()
