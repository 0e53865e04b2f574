"""aqueue's pool (aqueue.db.create_pool): statements called on the pool itself run on a
connection of its own while no other such statement holds it, and otherwise behave as on
asyncpg's pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from aqueue import db
from aqueue.pool import Pool
from aqueue.producer import enqueue
from tests.helpers import wait_for

PID = "SELECT pg_backend_pid()"


@pytest.fixture
async def small_pool(db_url: str) -> AsyncIterator[Pool]:
    pool = await db.create_pool(db_url, min_size=1, max_size=1)
    try:
        yield pool
    finally:
        pool.terminate()


@pytest.fixture
async def admin(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection beside the pool: to watch, lock and end its sessions."""
    conn = await asyncpg.connect(db_url)
    try:
        yield conn
    finally:
        await conn.close()


async def running(admin: asyncpg.Connection, query: str) -> bool:
    return bool(
        await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'", query
        )
    )


async def test_an_enqueue_on_the_pool_needs_none_of_its_connections(small_pool):
    # the direct connection is one beyond max_size: a caller holding every pooled
    # connection can still enqueue through the pool (asyncpg's pool would wait forever)
    async with small_pool.acquire():
        job = await asyncio.wait_for(enqueue(small_pool, "demo.echo", {}), 10)
        assert await small_pool.fetchval("SELECT count(*) FROM jobs WHERE id = $1", job.id) == 1


async def test_a_statement_on_the_pool_does_not_wait_behind_another(small_pool, admin):
    await admin.execute("SELECT pg_advisory_lock(42)")
    blocked_query = "SELECT pg_advisory_lock(42)"
    blocked = asyncio.create_task(small_pool.execute(blocked_query))
    await wait_for(lambda: running(admin, blocked_query))
    # the first holds the direct connection: the second takes the pooled one
    assert await asyncio.wait_for(small_pool.fetchval("SELECT 7"), 10) == 7
    await admin.execute("SELECT pg_advisory_unlock(42)")
    await blocked


async def test_sequential_statements_on_the_pool_share_one_connection_beside_the_pooled_ones(
    small_pool,
):
    pids = {await small_pool.fetchval(PID) for _ in range(5)}
    async with small_pool.acquire() as conn:
        pooled = await conn.fetchval(PID)
    assert len(pids) == 1 and pooled not in pids


async def test_a_transaction_left_open_on_the_pool_does_not_swallow_the_next_enqueue(
    small_pool, admin
):
    await small_pool.execute("BEGIN")
    job = await enqueue(small_pool, "demo.echo", {})
    assert await admin.fetchval("SELECT count(*) FROM jobs WHERE id = $1", job.id) == 1


async def test_a_cancelled_statement_is_cancelled_and_its_connection_kept(small_pool, admin):
    pid = await small_pool.fetchval(PID)
    sleeping = "SELECT pg_sleep(30)"
    task = asyncio.create_task(small_pool.execute(sleeping))
    await wait_for(lambda: running(admin, sleeping))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await small_pool.fetchval(PID) == pid
    assert not await running(admin, sleeping)


async def test_the_direct_connection_is_replaced_after_the_server_ends_it(small_pool, admin):
    pid = await small_pool.fetchval(PID)
    await admin.execute("SELECT pg_terminate_backend($1)", pid)

    async def new_pid() -> int | None:
        try:
            found: int = await small_pool.fetchval(PID)
        except (asyncpg.InternalClientError, asyncpg.InterfaceError, asyncpg.PostgresError):
            return None  # the statement that finds the connection gone fails, as pooled
        return found if found != pid else None

    assert await wait_for(new_pid)


async def test_a_payload_that_will_not_encode_fails_alone(small_pool):
    with pytest.raises(asyncpg.DataError):
        await enqueue(small_pool, "demo.echo", {"not json": {1, 2}})
    job = await enqueue(small_pool, "demo.echo", {"n": 1})
    assert await small_pool.fetchval("SELECT count(*) FROM jobs") == 1
    assert (await small_pool.fetchrow("SELECT payload FROM jobs"))["payload"] == job.payload


async def test_expired_connections_include_the_direct_one(small_pool):
    pid = await small_pool.fetchval(PID)
    await small_pool.expire_connections()
    assert await small_pool.fetchval(PID) != pid


async def test_closing_the_pool_lets_the_statement_in_flight_finish(db_url):
    pool = await db.create_pool(db_url, min_size=1, max_size=1)
    task = asyncio.create_task(pool.fetchval("SELECT 5 FROM pg_sleep(0.2)"))
    await asyncio.sleep(0)  # the task has sent its statement on the direct connection
    await pool.close()
    assert await task == 5
    with pytest.raises(asyncpg.InterfaceError):
        await pool.fetchval("SELECT 1")
