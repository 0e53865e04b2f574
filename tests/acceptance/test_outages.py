"""`aqueue serve` when PostgreSQL goes away: a stopped or silent database at shutdown, an
outage's log, a poison job that crashes the server, and a fleet of worker-only processes
recovering a killed worker's jobs."""

from __future__ import annotations

import asyncio
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from aqueue import JobStatus, enqueue, store
from aqueue.db import EmbeddedPostgres, create_pool, migrate_url
from aqueue.model import JobSpec
from tests.helpers import ServeProcess, wait_for
from tests.proxy import DatabaseProxy

pytestmark = pytest.mark.timeout(180)


def worker_args(url: str, *extra: str) -> list[str]:
    return ["--roles", "worker", "--database-url", url, "--app", "tests.apps:registry", *extra]


@pytest.fixture
async def proxy(db_url: str) -> AsyncIterator[DatabaseProxy]:
    proxy = await DatabaseProxy(db_url).start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def statuses(pool: asyncpg.Pool, *ids: object) -> list[str]:
    rows = await pool.fetch("SELECT id, status FROM all_jobs WHERE id = ANY($1::uuid[])", list(ids))
    by_id = {r["id"]: r["status"] for r in rows}
    return [by_id[i] for i in ids]


@pytest.mark.parametrize("outage", ["refuse", "blackhole"])
async def test_two_signals_end_the_process_whatever_the_database_does(pool, proxy, outage):
    # "refuse": the database is down; "blackhole": it stops answering and every statement
    # hangs. Either way a second SIGTERM must end the process within seconds, leaving what
    # it could not write to the leases (nothing is lost) and saying how much that was.
    worker = await ServeProcess(*worker_args(proxy.url, "--lease-seconds", "30")).start()
    try:
        hanging = await enqueue(pool, "demo.sleep", {"seconds": 120})
        short = await enqueue(pool, "test.nap", {"seconds": 1})
        await wait_for(
            lambda: pool.fetchval("SELECT count(*) = 2 FROM all_jobs WHERE status = 'RUNNING'")
        )
        getattr(proxy, outage)()
        await worker.wait_for_line(f"napped {short.id}")  # its outcome cannot be written
        worker.signal(signal.SIGTERM)
        await worker.wait_for_line("shutting down")
        worker.signal(signal.SIGTERM)
        await worker.wait(timeout=10)
    finally:
        await worker.kill()
    assert worker.count("left 1 outcomes unwritten") == 1, "\n".join(worker.lines)
    assert worker.count("could not release 1 unfinished jobs") == 1, "\n".join(worker.lines)
    # both still hold a lease: the reaper hands them out again once it expires
    assert await statuses(pool, hanging.id, short.id) == ["RUNNING", "RUNNING"]


async def test_an_outage_is_reported_once_when_it_starts_and_once_when_it_ends(pool, proxy):
    worker = await ServeProcess(*worker_args(proxy.url, "--pool-size", "4")).start()
    try:
        first = await enqueue(pool, "demo.echo", {})
        await wait_for(lambda: _status_is(pool, first.id, "COMPLETED"))
        proxy.refuse()
        await worker.wait_for_line("claiming from 'default' failed")
        await asyncio.sleep(3)  # the outage lasts: asyncpg retries its pool floor meanwhile
        await proxy.restore()
        await worker.wait_for_line("claiming from 'default' again")
        second = await enqueue(pool, "demo.echo", {})
        await wait_for(lambda: _status_is(pool, second.id, "COMPLETED"), timeout=15)
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nthe worker's log:\n" + "\n".join(worker.lines)) from None
    finally:
        await worker.kill()
    assert worker.count("Failed to restore the pool connection floor") == 0
    assert worker.count("Traceback") == 0, "\n".join(worker.lines)
    assert worker.count("claiming from 'default' failed") == 1
    assert worker.count("claiming from 'default' again") == 1


async def _status_is(pool: asyncpg.Pool, job_id: object, status: str) -> bool:
    return bool(
        await pool.fetchval("SELECT status = $2 FROM all_jobs WHERE id = $1", job_id, status)
    )


@pytest.fixture
async def private_pg() -> AsyncIterator[str]:
    """A PostgreSQL server of this test's own, which it may crash, set up to keep
    asynchronous commits unflushed as long as a busy server can: its WAL writer sleeps
    10 s between rounds (an idle one is woken by each asynchronous commit), and no full
    page image (the first change to a page after the checkpoint that ends crash recovery
    writes one, and a full page of WAL wakes the writer) makes the claim's WAL reach a
    page boundary."""
    with tempfile.TemporaryDirectory(prefix="aqueue-crash-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        url = await server.start()
        try:
            await migrate_url(url)
            conn = await asyncpg.connect(url)
            try:
                await conn.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
                await conn.execute("ALTER SYSTEM SET full_page_writes = off")
                await conn.execute("SELECT pg_reload_conf()")
            finally:
                await conn.close()
            yield url
        finally:
            await server.stop()


async def test_a_job_that_crashes_the_database_reaches_dead(private_pg):
    # The handler SIGKILLs its PostgreSQL backend right after its claim: the server runs
    # crash recovery and forgets the claim, whose commit had not reached the disk. The
    # attempt must count all the same, so the job ends DEAD after max_attempts instead of
    # crash-looping the database for ever.
    worker = await ServeProcess(
        *worker_args(private_pg, "--backoff-base", "0.05", "--backoff-cap", "0.1")
    ).start()
    pool: asyncpg.Pool | None = None
    try:
        pool = await create_pool(private_pg, min_size=1, max_size=2)
        [job_id] = await store.insert_jobs(
            pool, [JobSpec(type="test.crash_database", max_attempts=3)]
        )

        async def dead() -> bool:
            try:
                assert pool is not None
                return bool(
                    await pool.fetchval(
                        "SELECT status = 'DEAD' FROM all_jobs WHERE id = $1", job_id
                    )
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return False  # the server is recovering from the crash

        await wait_for(dead, timeout=90, interval=0.2)
        job = await store.get_job(pool, job_id)
        worker.signal(signal.SIGTERM)
        await worker.wait()
    finally:
        await worker.kill()
        if pool is not None:
            pool.terminate()
    assert job is not None and job.status is JobStatus.DEAD and job.attempts == 3
    # one crash per attempt: no attempt was forgotten for good and run again uncounted
    assert worker.count("crashing the database") == 3, "\n".join(worker.lines)


async def test_a_fleet_of_worker_only_processes_recovers_a_killed_workers_jobs(pool, db_url):
    await pool.execute("CREATE TABLE executions (job_id uuid NOT NULL)")
    await pool.execute("CREATE TABLE processed (job_id uuid PRIMARY KEY)")
    ids = await store.insert_jobs(
        pool, [JobSpec(type="test.record", payload={"sleep": 0.5}) for _ in range(20)]
    )
    fleet_args = ("--lease-seconds", "1", "--reaper-interval", "0.2", "--concurrency", "10")
    victim, survivor = (ServeProcess(*worker_args(db_url, *fleet_args)) for _ in range(2))
    await victim.start()
    try:
        await wait_for(lambda: pool.fetchval("SELECT count(*) >= 5 FROM executions"))
        victim.signal(signal.SIGKILL)
        await victim.wait()
        await survivor.start()
        await wait_for(
            lambda: pool.fetchval("SELECT count(*) = 20 FROM all_jobs WHERE status = 'COMPLETED'"),
            timeout=60,
        )
        survivor.signal(signal.SIGTERM)
        assert await survivor.wait() == 0
    finally:
        await victim.kill()
        await survivor.kill()
    processed = {r["job_id"] for r in await pool.fetch("SELECT job_id FROM processed")}
    assert processed == set(ids)
    reclaimed = await pool.fetchval(
        "SELECT count(*) FROM job_events WHERE error LIKE 'lease expired%'"
    )
    assert reclaimed >= 5
