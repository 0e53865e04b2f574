"""Migrations give up on a lock instead of hanging behind a long transaction, and the
schema check that commands other than serve and migrate run instead of migrating."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from aqueue import db
from aqueue.db import Migration

NEEDED = db.load_migrations()[-1].version


async def test_the_expected_version_is_the_highest_migration_number():
    assert db.expected_schema_version() == NEEDED == max(m.version for m in db.load_migrations())


async def test_a_migration_blocked_by_a_long_transaction_gives_up_after_the_lock_timeout(db_url):
    blocker = await asyncpg.connect(db_url)
    migrator = await db.connect(db_url)
    reader = await asyncpg.connect(db_url)
    slow = Migration(NEEDED + 1, f"{NEEDED + 1:03d}_add_a_column", "ALTER TABLE jobs ADD x int")
    try:
        await blocker.execute("BEGIN; SELECT count(*) FROM jobs")  # holds ACCESS SHARE on jobs
        with pytest.raises(asyncpg.LockNotAvailableError) as raised:
            await asyncio.wait_for(db.migrate(migrator, 0.2, [slow]), 30)
        # the queued ACCESS EXCLUSIVE request is gone: readers no longer wait behind it
        assert await asyncio.wait_for(reader.fetchval("SELECT count(*) FROM jobs"), 30) == 0
        await blocker.execute("ROLLBACK")
        versions = await reader.fetch("SELECT version FROM aqueue_migrations")
        columns = await reader.fetch(
            "SELECT 1 FROM information_schema.columns WHERE table_name = 'jobs' "
            "AND column_name = 'x'"
        )
    finally:
        for conn in (blocker, migrator, reader):
            await conn.close()
    assert f"migration {slow.name} waited more than 0.2 s for a lock" in str(raised.value)
    assert NEEDED + 1 not in {r["version"] for r in versions}
    assert columns == []


async def test_the_lock_timeout_is_local_to_the_migration(db_url):
    conn = await db.connect(db_url)
    try:
        await db.migrate(conn, 0.2)
        assert await conn.fetchval("SHOW lock_timeout") == "0"
    finally:
        await conn.close()


async def test_a_migrated_database_passes_the_schema_check(db_url):
    conn = await db.connect(db_url)
    try:
        await db.check_schema(conn)
    finally:
        await conn.close()


async def test_a_database_behind_this_code_fails_the_schema_check_naming_both_versions(db_url):
    conn = await db.connect(db_url)
    try:
        await conn.execute("DELETE FROM aqueue_migrations WHERE version = $1", NEEDED)
        with pytest.raises(db.SchemaError) as raised:
            await db.check_schema(conn)
    finally:
        await conn.close()
    behind = max((m.version for m in db.load_migrations() if m.version < NEEDED), default=0)
    assert str(raised.value) == (
        f"the database schema is at version {behind} but this aqueue needs {NEEDED}: "
        "run `aqueue migrate`"
    )


async def test_a_never_migrated_database_fails_the_schema_check(empty_db_url):
    conn = await db.connect(empty_db_url)
    try:
        with pytest.raises(db.SchemaError) as raised:
            await db.check_schema(conn)
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    assert "has no aqueue schema" in str(raised.value)
    assert "run `aqueue migrate`" in str(raised.value)
    assert tables == 0
