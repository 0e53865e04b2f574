"""Errors as a real PostgreSQL raises them: a failover's read-only phase and a full
connection table are ridden out, a bad statement is not."""

from __future__ import annotations

import logging
import os
import uuid
from urllib.parse import urlsplit

import asyncpg
import pytest

from aqueue import JobStatus, db, enqueue, store
from aqueue.db import is_connection_error
from tests.helpers import as_role, running_worker, wait_for


@pytest.fixture
async def limited_role(pg_url):
    """A login role that may hold one connection at a time (roles are cluster-wide)."""
    name = f"aqueue_limited_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'limited' CONNECTION LIMIT 1")
        yield name
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", name
        )
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
    finally:
        await admin.close()


async def test_a_write_on_a_read_only_server_is_retried(db_url):
    # After a failover, a connection can land on the old primary, now a standby.
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("SET default_transaction_read_only = on")
        with pytest.raises(asyncpg.PostgresError) as raised:
            await conn.execute("INSERT INTO jobs (type) VALUES ('demo.echo')")
    finally:
        await conn.close()
    assert raised.value.sqlstate == "25006"
    assert is_connection_error(raised.value)


async def test_too_many_connections_is_retried(db_url, limited_role):
    url = as_role(db_url, limited_role, "limited")
    first = await asyncpg.connect(url)
    try:
        with pytest.raises(asyncpg.PostgresError) as raised:
            await asyncpg.connect(url)
    finally:
        await first.close()
    assert raised.value.sqlstate == "53300"
    assert is_connection_error(raised.value)


async def test_a_pool_whose_direct_connection_is_refused_works_without_it(db_url, limited_role):
    # The role may hold one connection: the pool's; the direct one beside it is refused
    # (53300), and statements on the pool take the pooled connection instead of failing.
    pool = await db.create_pool(as_role(db_url, limited_role, "limited"), min_size=1, max_size=1)
    try:
        for _ in range(3):
            assert await pool.fetchval("SELECT current_user") == limited_role
    finally:
        await pool.close()


async def test_a_bad_statement_is_not_retried(pool):
    with pytest.raises(asyncpg.PostgresError) as syntax:
        await pool.execute("SELEC 1")
    with pytest.raises(asyncpg.PostgresError) as missing:
        await pool.execute("SELECT * FROM no_such_table")
    assert not is_connection_error(syntax.value)
    assert not is_connection_error(missing.value)


async def test_the_worker_rides_out_a_read_only_phase(pool, db_url, pg_url, caplog):
    # The outage's later tries are logged at debug level (the first one is a warning).
    caplog.set_level(logging.DEBUG, logger="aqueue")
    database = urlsplit(db_url).path.lstrip("/")
    admin = await asyncpg.connect(pg_url)

    async def new_sessions_read_only(on: bool) -> None:
        # ALTER DATABASE applies to new sessions: end the old ones, the worker reconnects.
        setting = "SET default_transaction_read_only = on" if on else "RESET ALL"
        await admin.execute(f'ALTER DATABASE "{database}" {setting}')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )

    try:
        async with running_worker(pool, db_url) as w:
            await new_sessions_read_only(True)
            writer = await db.connect(db_url)
            try:
                await writer.execute("SET default_transaction_read_only = off")
                job = await enqueue(writer, "demo.echo", {"during": "failover"})
            finally:
                await writer.close()

            def refused_as_read_only() -> bool:
                return "read-only transaction" in caplog.text

            await wait_for(_async(refused_as_read_only), timeout=30)
            await new_sessions_read_only(False)

            async def completed() -> bool:
                try:
                    found = await store.get_job(pool, job.id)
                except Exception as exc:  # the pool's connections were terminated too
                    if is_connection_error(exc):
                        return False
                    raise
                return found is not None and found.status is JobStatus.COMPLETED

            await wait_for(completed, timeout=30)
            assert not w.tasks[1].done()
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" RESET ALL')
        await admin.close()


def _async(predicate):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return bool(predicate())

    return check
