"""A queue's rate limit, enforced inside the claim across every worker."""

from __future__ import annotations

import asyncio

import aqueue
import aqueue.control
from aqueue import JobSpec, store
from aqueue.settings import Settings
from tests.helpers import running_worker, wait_for
from tests.integration.test_api import api_client


async def _starts(pool) -> list[float]:
    rows = await pool.fetch(
        "SELECT extract(epoch FROM started_at)::float8 AS t FROM all_jobs "
        "WHERE queue = 'rl' AND started_at IS NOT NULL ORDER BY started_at"
    )
    return [r["t"] for r in rows]


async def test_a_rate_limited_queue_starts_at_most_its_burst_plus_its_rate(pool, db_url):
    await aqueue.control.set_rate_limit(pool, "rl", "10/s")
    await aqueue.enqueue_many(pool, [JobSpec("demo.echo", {"n": i}, queue="rl") for i in range(35)])
    async with running_worker(pool, db_url, queues={"rl": 50}):
        await wait_for(
            lambda: pool.fetchval(
                "SELECT count(*) = 35 FROM all_jobs WHERE queue = 'rl' AND status = 'COMPLETED'"
            ),
            timeout=30,
        )
    starts = await _starts(pool)
    # GCRA: at most burst + rate * t starts in any window of t seconds (database times)
    for t in (0.5, 1.0, 2.0):
        most = max(sum(1 for s in starts if a <= s < a + t) for a in starts)
        assert most <= 10 + 10 * t, (t, most)
    # and the backlog did not wait for nothing: 35 jobs, 10 at once, then 10 a second
    assert 2.0 <= starts[-1] - starts[0] <= 4.0


async def test_the_plain_claim_takes_nothing_from_a_rate_limited_queue(pool):
    # a worker that has not heard of the limit yet claims nothing rather than past it
    await aqueue.enqueue(pool, "demo.echo", {}, queue="rl")
    await aqueue.control.set_rate_limit(pool, "rl", "1/h")
    assert await store.claim(pool, "rl", 10, "w", 30.0) == []
    assert len(await store.claim_flow(pool, "rl", 10, "w", 30.0)) == 1
    assert await store.claim_flow(pool, "rl", 10, "w", 30.0) == []


async def test_a_worker_sleeps_until_the_bucket_refills_rather_than_spins(
    pool, db_url, monkeypatch
):
    claims = 0
    real = store.claim_flow

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal claims
        claims += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, "claim_flow", counted)
    await aqueue.control.set_rate_limit(pool, "rl", "2/s")
    for i in range(6):
        await aqueue.enqueue(pool, "demo.echo", {"n": i}, queue="rl")
    async with running_worker(pool, db_url, queues={"rl": 10}):
        await wait_for(
            lambda: pool.fetchval(
                "SELECT count(*) = 6 FROM all_jobs WHERE queue = 'rl' AND status = 'COMPLETED'"
            ),
            timeout=10,
        )
    starts = await _starts(pool)
    assert starts[-1] - starts[0] >= 1.9  # 2 at once, then one every half second
    # about two claims per refill; a loop retrying every few milliseconds makes hundreds
    assert claims <= 20, claims


async def test_limits_over_http_and_in_the_queue_overview(pool):
    async with api_client(pool, Settings()) as client:
        ok = await client.put("/queues/email/limits", json={"rate_limit": "50/s"})
        assert ok.status_code == 200
        listed = {q["name"]: q for q in (await client.get("/queues")).json()["queues"]}
        assert listed["email"]["limits"]["rate_limit"] == "50/s"
        bad = await client.put("/queues/email/limits", json={"rate_limit": "fast"})
        assert bad.status_code == 422 and "must be a rate" in bad.json()["error"]
        cleared = await client.put("/queues/email/limits", json={"rate_limit": None})
        assert cleared.status_code == 200
        listed = {q["name"]: q for q in (await client.get("/queues")).json()["queues"]}
        assert listed["email"]["limits"]["rate_limit"] is None


async def test_removing_the_limit_lets_the_queue_run_freely_again(pool, db_url):
    await aqueue.control.set_rate_limit(pool, "rl", "1/h")
    async with running_worker(pool, db_url, queues={"rl": 10}):
        first = await aqueue.enqueue(pool, "demo.echo", {}, queue="rl")
        second = await aqueue.enqueue(pool, "demo.echo", {}, queue="rl")
        await wait_for(lambda: _status_is(pool, first.id, "COMPLETED"))
        await asyncio.sleep(0.3)
        assert await _status_is(pool, second.id, "PENDING")  # 1/h: spent
        await aqueue.control.set_rate_limit(pool, "rl", None)
        await wait_for(lambda: _status_is(pool, second.id, "COMPLETED"), timeout=5)


async def _status_is(pool, job_id, status: str) -> bool:
    return bool(
        await pool.fetchval("SELECT status = $2 FROM all_jobs WHERE id = $1", job_id, status)
    )
