"""`aqueue serve` from outside, as subprocesses: kill -9 mid-job, many workers at once,
signals, and the seed's HTTP flow."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import httpx
import pytest

from aqueue import JobSpec, store
from tests.helpers import ServeProcess, free_port, wait_for

pytestmark = pytest.mark.timeout(180)

COUNTING_TABLES = """
CREATE TABLE executions (job_id uuid NOT NULL);
CREATE TABLE processed (job_id uuid PRIMARY KEY);
"""


def worker_args(db_url: str, *extra: str) -> list[str]:
    return [
        "--roles",
        "worker",
        "--database-url",
        db_url,
        "--app",
        "tests.apps:registry",
        "--log-level",
        "INFO",
        *extra,
    ]


async def completed(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM all_jobs WHERE status = 'COMPLETED'"))


async def test_every_job_completes_after_a_worker_is_killed_mid_job(pool, db_url):
    await pool.execute(COUNTING_TABLES)
    ids = await store.insert_jobs(
        pool, [JobSpec(type="test.record", payload={"sleep": 0.5}) for _ in range(40)]
    )
    victim = await ServeProcess(
        *worker_args(db_url, "--concurrency", "10", "--lease-seconds", "1")
    ).start()
    try:
        # Killed once ten handlers have really started (they count themselves first),
        # not merely once ten claims are visible: those could still be on their way.
        await wait_for(lambda: pool.fetchval("SELECT count(*) >= 10 FROM executions"))
        victim.signal(signal.SIGKILL)
        assert await victim.wait() == -signal.SIGKILL
        assert await pool.fetchval("SELECT count(*) FROM all_jobs WHERE status = 'RUNNING'") > 0
    finally:
        await victim.kill()
    rescuer = await ServeProcess(
        "--roles",
        "worker,reaper",
        *worker_args(
            db_url, "--concurrency", "20", "--lease-seconds", "1", "--reaper-interval", "0.2"
        )[2:],
    ).start()
    try:
        await wait_for(
            lambda: pool.fetchval("SELECT count(*) = 40 FROM all_jobs WHERE status = 'COMPLETED'"),
            timeout=60,
        )
    finally:
        rescuer.signal(signal.SIGTERM)
        await rescuer.wait()
    # at-least-once execution: the killed attempts ran again ...
    assert await pool.fetchval("SELECT count(*) FROM executions") > 40
    # ... exactly-once effects: each job's own write committed once, none missing
    processed = {r["job_id"] for r in await pool.fetch("SELECT job_id FROM processed")}
    assert processed == set(ids)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM job_events WHERE status = 'RETRY' AND error LIKE 'lease expired%'"
        )
        >= 10
    )


async def test_four_workers_drain_5000_jobs_with_no_duplicate_and_none_missing(pool, db_url):
    await pool.execute(COUNTING_TABLES)
    ids: list = []
    for _ in range(5):
        ids += await store.insert_jobs(pool, [JobSpec(type="test.record") for _ in range(1000)])
    workers = [
        ServeProcess(*worker_args(db_url, "--concurrency", "20", "--log-level", "INFO"))
        for _ in range(4)
    ]
    await asyncio.gather(*(w.start() for w in workers))
    try:
        await wait_for(
            lambda: pool.fetchval(
                "SELECT count(*) = 5000 FROM all_jobs WHERE status = 'COMPLETED'"
            ),
            timeout=120,
        )
    finally:
        for w in workers:
            w.signal(signal.SIGTERM)
        codes = [await w.wait() for w in workers]
    assert codes == [0, 0, 0, 0]
    assert await pool.fetchval("SELECT count(*) FROM executions") == 5000
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM (SELECT job_id FROM executions GROUP BY job_id "
            "HAVING count(*) > 1) d"
        )
        == 0
    )
    processed = {r["job_id"] for r in await pool.fetch("SELECT job_id FROM processed")}
    assert processed == set(ids)
    assert await pool.fetchval("SELECT max(attempts) FROM all_jobs") == 1
    workers_used = await pool.fetchval(
        "SELECT count(DISTINCT worker) FROM job_events WHERE status = 'COMPLETED'"
    )
    assert workers_used == 4


async def test_sigterm_lets_the_running_job_finish_and_exits_cleanly(pool, db_url):
    worker = await ServeProcess(*worker_args(db_url)).start()
    try:
        job_id = (
            await store.insert_jobs(pool, [JobSpec(type="demo.sleep", payload={"seconds": 0.5})])
        )[0]
        await wait_for(
            lambda: pool.fetchval("SELECT status = 'RUNNING' FROM all_jobs WHERE id = $1", job_id)
        )
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    finally:
        await worker.kill()
    assert await pool.fetchval("SELECT status FROM all_jobs WHERE id = $1", job_id) == "COMPLETED"


@pytest.mark.parametrize(("loop", "expected"), [(None, "uvloop"), ("asyncio", "asyncio")])
async def test_a_worker_runs_on_uvloop_unless_asked_for_asyncio(pool, db_url, loop, expected):
    extra = ("--log-level", "DEBUG") if loop is None else ("--log-level", "DEBUG", "--loop", loop)
    worker = await ServeProcess(*worker_args(db_url, *extra)).start()
    try:
        assert f"event loop: {expected}" in await worker.wait_for_line("event loop:")
        job_id = (await store.insert_jobs(pool, [JobSpec(type="demo.echo", payload={"n": 1})]))[0]
        await wait_for(
            lambda: pool.fetchval("SELECT status = 'COMPLETED' FROM all_jobs WHERE id = $1", job_id)
        )
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    finally:
        await worker.kill()


async def test_the_seed_http_flow_reaches_completed(db_url):
    port = free_port()
    server = await ServeProcess("--database-url", db_url, "--port", str(port)).start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            created = await http.post(
                "/jobs", json={"type": "demo.sleep", "payload": {"seconds": 0.2}}
            )
            assert created.status_code == 201
            job_id = created.json()["id"]

            async def is_completed() -> bool:
                listing = (await http.get("/jobs")).json()["jobs"]
                return any(j["id"] == job_id and j["status"] == "COMPLETED" for j in listing)

            await wait_for(is_completed, timeout=10)
            compat = await http.post("/submit-job", json={"task": "demo.echo"})
            status = await http.get(f"/job-status/{compat.json()['job_id']}")
            assert status.json()["task"] == "demo.echo"
            assert (await http.get("/readyz")).status_code == 200
    finally:
        server.signal(signal.SIGTERM)
        assert await server.wait() == 0
