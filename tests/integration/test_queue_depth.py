"""GET /queues/depth, the autoscalers' route, against a real PostgreSQL: it counts the
jobs due and waiting for a worker, and nothing else, with the age of the oldest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest

import aqueue
from aqueue import control, enqueue, store
from aqueue.api.app import create_app
from aqueue.settings import Settings
from tests.helpers import jobs_in_every_state


@asynccontextmanager
async def client_of(pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(pool, Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client


async def test_depth_counts_due_pending_and_retry_jobs_only(pool):
    due = await jobs_in_every_state(pool, "email")
    # a queue with only a running job has nothing due, and no stored state: not listed
    running = await enqueue(pool, "demo.echo", {}, queue="busy")
    assert [j.id for j in await store.claim(pool, "busy", 1, "w", 30)] == [running.id]

    async with client_of(pool) as client:
        r = await client.get("/queues/depth")
    assert r.status_code == 200, r.text
    queues = r.json()["queues"]
    assert set(queues) == {"email"}
    email = queues["email"]
    assert email["pending"] == due
    assert 90 <= email["oldest_pending_seconds"] < 120
    assert email["paused"] is False


async def test_a_named_queue_is_answered_even_with_nothing_due(pool):
    await enqueue(pool, "demo.echo", {}, queue="email")
    await enqueue(pool, "demo.echo", {}, queue="video")
    async with client_of(pool) as client:
        r = await client.get("/queues/depth?queue=email,idle&queue=video")
    assert r.status_code == 200, r.text
    queues = r.json()["queues"]
    assert set(queues) == {"email", "idle", "video"}
    assert queues["idle"] == {"pending": 0, "oldest_pending_seconds": 0, "paused": False}
    assert queues["email"]["pending"] == queues["video"]["pending"] == 1
    async with client_of(pool) as client:
        r = await client.get("/queues/depth?queue=video")
    assert list(r.json()["queues"]) == ["video"]


async def test_a_paused_queue_keeps_its_count_and_says_it_is_paused(pool):
    # the count an autoscaler reads is the jobs_pending gauge's: a paused queue's backlog
    # still counts, and `paused` tells a script that wants otherwise
    await enqueue(pool, "demo.echo", {}, queue="email")
    await aqueue.pause(pool, "email")
    await aqueue.pause(pool, "quiet")
    async with client_of(pool) as client:
        r = await client.get("/queues/depth")
    queues = r.json()["queues"]
    assert queues["email"]["pending"] == 1 and queues["email"]["paused"] is True
    assert queues["quiet"] == {"pending": 0, "oldest_pending_seconds": 0, "paused": True}


@pytest.mark.parametrize(
    ("query", "message"),
    [("queue=bad%20name", "queue"), ("queues=email", "unknown query parameter")],
)
async def test_bad_input_is_a_400_naming_it(pool, query, message):
    async with client_of(pool) as client:
        r = await client.get(f"/queues/depth?{query}")
    assert r.status_code == 400
    assert message in r.json()["error"]


async def test_depth_is_one_statement_through_the_claimable_index(pool):
    # enough rows that the planner prefers the index to a sequential scan of `jobs`
    await aqueue.enqueue_many(
        pool, [aqueue.JobSpec(type="demo.echo", queue=f"q{n % 5}") for n in range(5000)]
    )
    await pool.execute("ANALYZE jobs")
    plan = await pool.fetch("EXPLAIN " + store.Q["queue_due_depth"].rstrip(";"), ["q1"])
    text = "\n".join(r[0] for r in plan)
    assert "jobs_claimable_idx" in text and "Seq Scan on jobs" not in text, text
    [depth] = await control.depths(pool, ["q1"])
    assert depth.pending == 1000
