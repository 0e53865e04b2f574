"""A cap of 2 per key under four worker processes never has 3 of a key running at once,
as the handlers' own records show, and the cap is reached."""

from __future__ import annotations

import random
import signal

import pytest

from aqueue import JobSpec, control, enqueue_many
from tests.helpers import ServeProcess, wait_for

pytestmark = pytest.mark.timeout(180)

JOBS = 400


async def test_a_key_cap_holds_across_four_worker_processes(db_url, pool):
    await pool.execute(
        "CREATE TABLE spans (job_id uuid NOT NULL, key text NOT NULL, "
        "started timestamptz NOT NULL, ended timestamptz)"
    )
    await pool.execute("CREATE TABLE span_caps (key text PRIMARY KEY, reached boolean)")
    await control.set_limits(pool, "capped", key_concurrency=2, key_limits={"vip": 4})
    rng = random.Random(11)
    keys = ["a", "b", "c", "vip"]
    specs = [
        JobSpec(
            "test.span",
            {"key": keys[i % 4], "cap": 4 if i % 4 == 3 else 2, "seconds": rng.uniform(0, 0.03)},
            queue="capped",
            concurrency_key=keys[i % 4],
        )
        for i in range(JOBS)
    ]
    # every worker is listening before the first job arrives: each takes part
    workers = [
        await ServeProcess(
            "--roles", "worker", "--database-url", db_url, "--queues", "capped:16",
            "--app", "tests.apps:registry",
        ).start()
        for _ in range(4)
    ]  # fmt: skip
    try:
        await enqueue_many(pool, specs)
        await wait_for(
            lambda: pool.fetchval(
                f"SELECT count(*) = {JOBS} FROM jobs_history WHERE status = 'COMPLETED'"
            ),
            timeout=120,
        )
    finally:
        for worker in workers:
            worker.signal(signal.SIGTERM)
        for worker in workers:
            assert await worker.wait() == 0
    # Each span lies inside its job's slot holding (recorded after the claim, before the
    # completion), so overlapping spans are a lower bound of what ran at once.
    peaks = {
        r["key"]: r["peak"]
        for r in await pool.fetch(
            """SELECT a.key, max(n) AS peak FROM (
                   SELECT s.key, (SELECT count(*) FROM spans o WHERE o.key = s.key
                                  AND o.started <= s.started AND o.ended > s.started) AS n
                   FROM spans s) a GROUP BY a.key"""
        )
    }
    assert peaks == {"a": 2, "b": 2, "c": 2, "vip": 4}, peaks
    assert await pool.fetchval("SELECT count(*) FROM spans") == JOBS
    # every worker took part, and every slot is free again
    assert await pool.fetchval("SELECT count(DISTINCT worker) FROM job_events") == 4
    assert (
        await pool.fetchval("SELECT count(*) FROM concurrency_slots WHERE job_id IS NOT NULL") == 0
    )
