"""The migrations runner on empty databases: each migration once, also under concurrent
starts."""

from __future__ import annotations

import asyncio

import asyncpg

from aqueue import db
from tests.conftest import with_database


async def fetch(url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()


ALL_MIGRATIONS = [m.name for m in db.load_migrations()]


def test_the_first_migration_is_001_init():
    assert ALL_MIGRATIONS[0] == "001_init"
    assert db.load_migrations()[0].version == 1


async def test_migrate_on_an_empty_database_applies_every_migration_in_order(empty_db_url):
    assert await db.migrate_url(empty_db_url) == ALL_MIGRATIONS


async def test_migrate_records_001_init_once(empty_db_url):
    await db.migrate_url(empty_db_url)
    rows = await fetch(empty_db_url, "SELECT version, name FROM aqueue_migrations ORDER BY 1")
    assert [tuple(r) for r in rows if r["name"] == "001_init"] == [(1, "001_init")]
    assert [r["name"] for r in rows] == ALL_MIGRATIONS


async def test_migrate_creates_the_jobs_schema(empty_db_url):
    await db.migrate_url(empty_db_url)
    rows = await fetch(
        empty_db_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    )
    assert {"jobs", "job_events", "aqueue_migrations"} <= {r["table_name"] for r in rows}


async def test_migrate_again_applies_nothing(empty_db_url):
    await db.migrate_url(empty_db_url)
    assert await db.migrate_url(empty_db_url) == []
    rows = await fetch(empty_db_url, "SELECT name FROM aqueue_migrations")
    assert sorted(r["name"] for r in rows) == sorted(ALL_MIGRATIONS)


async def test_concurrent_migrations_on_an_empty_database_apply_each_once(
    empty_db_url, pg_url, template_db
):
    results = await asyncio.gather(*(db.migrate_url(empty_db_url) for _ in range(2)))
    assert sorted(results, key=len) == [[], ALL_MIGRATIONS]
    rows = await fetch(empty_db_url, "SELECT name FROM aqueue_migrations")
    assert sorted(r["name"] for r in rows) == sorted(ALL_MIGRATIONS)
    query = "SELECT indexname FROM pg_indexes WHERE tablename = 'jobs' ORDER BY 1"
    indexes = [r["indexname"] for r in await fetch(empty_db_url, query)]
    # the same indexes as the template, migrated once
    assert indexes == [
        r["indexname"] for r in await fetch(with_database(pg_url, template_db), query)
    ]


async def test_migrated_database_accepts_a_job(empty_db_url):
    await db.migrate_url(empty_db_url)
    conn = await db.connect(empty_db_url)
    try:
        status = await conn.fetchval("INSERT INTO jobs (type) VALUES ('a') RETURNING status")
    finally:
        await conn.close()
    assert status == "PENDING"


async def test_migrate_releases_its_advisory_lock(empty_db_url):
    await db.migrate_url(empty_db_url)
    rows = await fetch(
        empty_db_url,
        "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    assert rows == []
