"""The real PostgreSQL every test talks to.

Where the server comes from: AQUEUE_TEST_DATABASE_URL or DATABASE_URL when set; else a
testcontainers PostgreSQL 16 when a Docker engine answers; else the embedded PostgreSQL.
Each test gets a fresh database cloned from a migrated template (CREATE DATABASE ...
TEMPLATE is fast), so tests never see each other's jobs."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from aqueue import db


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL server URL whose user may create databases."""
    url = os.environ.get("AQUEUE_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    with tempfile.TemporaryDirectory(prefix="aqueue-test-pg-") as tmp:
        server = db.EmbeddedPostgres(Path(tmp))
        try:
            yield server.start_blocking()
        finally:
            server.stop_blocking()


_counter = itertools.count()


async def _admin(pg_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(pg_url)


@pytest.fixture(scope="session")
async def template_db(pg_url: str) -> AsyncIterator[str]:
    name = f"aqueue_tpl_{os.getpid()}"
    admin = await _admin(pg_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
        await db.migrate_url(with_database(pg_url, name))
        yield name
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await admin.close()


@asynccontextmanager
async def _fresh_database(pg_url: str, name: str, template: str | None) -> AsyncIterator[str]:
    admin = await _admin(pg_url)
    try:
        from_template = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{from_template}')
        yield with_database(pg_url, name)
        # Subprocess workers may still hold connections after a failed test.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await admin.close()


@pytest.fixture
async def db_url(pg_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test alone."""
    name = f"aqueue_t_{os.getpid()}_{next(_counter)}"
    async with _fresh_database(pg_url, name, template_db) as url:
        yield url


@pytest.fixture(scope="module")
async def module_db_url(pg_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database that one module's tests share (with a server they all
    talk to, started once)."""
    name = f"aqueue_m_{os.getpid()}_{next(_counter)}"
    async with _fresh_database(pg_url, name, template_db) as url:
        yield url


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    # as aqueue serve's pool, which runs most of what the tests call
    pool = await db.create_pool(db_url, min_size=1, max_size=10, plan_every_execution=True)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def empty_db_url(pg_url: str) -> AsyncIterator[str]:
    """A brand-new database with nothing in it (not cloned from the migrated template)."""
    name = f"aqueue_empty_{os.getpid()}_{next(_counter)}"
    async with _fresh_database(pg_url, name, None) as url:
        yield url
