"""A queue limited to 20 jobs/s with two worker processes runs at 20/s, together."""

from __future__ import annotations

import signal

import pytest

import aqueue.control
from aqueue import JobSpec, enqueue_many
from tests.helpers import ServeProcess, wait_for

pytestmark = pytest.mark.timeout(120)


async def test_two_workers_share_one_queue_rate(db_url, pool):
    await aqueue.control.set_rate_limit(pool, "email", "20/s")
    await enqueue_many(pool, [JobSpec("demo.echo", {"n": i}, queue="email") for i in range(320)])
    workers = [
        await ServeProcess(
            "--roles", "worker", "--database-url", db_url, "--queues", "email:50"
        ).start()
        for _ in range(2)
    ]  # fmt: skip
    try:
        await wait_for(
            lambda: pool.fetchval("SELECT count(*) = 320 FROM all_jobs WHERE status = 'COMPLETED'"),
            timeout=60,
        )
    finally:
        for worker in workers:
            worker.signal(signal.SIGTERM)
        for worker in workers:
            assert await worker.wait() == 0
    rows = await pool.fetch(
        "SELECT extract(epoch FROM started_at)::float8 AS t, "
        "(SELECT count(DISTINCT worker) FROM job_events) AS workers FROM all_jobs "
        "ORDER BY started_at"
    )
    starts = [r["t"] for r in rows]
    # After the burst of 20, 300 more at 20/s: 15 s. Never faster than the limit (the
    # bucket's guarantee, within 10%); not much slower either, with room for a loaded
    # machine, since that side is the workers' speed, not the limit's.
    span = starts[-1] - starts[0]
    assert 15 * 0.9 <= span <= 15 * 1.3, span
    for t in (1.0, 5.0):
        most = max(sum(1 for s in starts if a <= s < a + t) for a in starts)
        assert most <= 20 + 20 * t, (t, most)
    assert rows[0]["workers"] == 2  # both processes took part
