"""Only `serve` and `migrate` change the schema: `enqueue` and `status` check it and say
what to run when it is behind, so a newer CLI never migrates production by itself and a
read-only user needs no DDL rights. `migrate` gives up on a lock after --lock-timeout."""

from __future__ import annotations

import json
import os
import uuid

import asyncpg
import pytest

from aqueue import db
from tests.acceptance.test_cli import one_line_error, run_cli
from tests.helpers import as_role

pytestmark = pytest.mark.timeout(120)

NEEDED = db.load_migrations()[-1].version
BEHIND = max((m.version for m in db.load_migrations() if m.version < NEEDED), default=0)


async def fetchval(url: str, query: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


@pytest.fixture
async def reader_url(pg_url, db_url):
    """A role that may read aqueue's tables and nothing more (roles are cluster-wide)."""
    name = f"aqueue_reader_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(pg_url)
    database = await asyncpg.connect(db_url)
    try:
        await admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'reader'")
        # PostgreSQL 14 and older let everyone create in public: take that away here too
        await database.execute(
            f"REVOKE CREATE ON SCHEMA public FROM PUBLIC; "
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {name}"
        )
        yield as_role(db_url, name, "reader")
        await database.execute(f"DROP OWNED BY {name}")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", name
        )
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
    finally:
        await database.close()
        await admin.close()


async def test_enqueue_on_a_schema_behind_this_aqueue_is_refused_and_migrates_nothing(db_url):
    await fetchval(db_url, f"DELETE FROM aqueue_migrations WHERE version = {NEEDED}")
    result = run_cli("enqueue", "demo.echo", "--database-url", db_url)
    assert result.returncode == 1
    assert one_line_error(result) == (
        f"aqueue: error: the database schema is at version {BEHIND} but this aqueue needs "
        f"{NEEDED}: run `aqueue migrate`"
    )
    assert (
        await fetchval(db_url, f"SELECT count(*) FROM aqueue_migrations WHERE version = {NEEDED}")
        == 0
    )
    assert await fetchval(db_url, "SELECT count(*) FROM jobs") == 0


async def test_status_on_a_never_migrated_database_says_to_run_migrate(empty_db_url):
    result = run_cli("status", str(uuid.uuid4()), "--database-url", empty_db_url)
    assert result.returncode == 1
    assert "has no aqueue schema" in one_line_error(result)
    assert "run `aqueue migrate`" in result.stderr
    tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
    assert await fetchval(empty_db_url, tables) == 0


def test_migrate_then_enqueue_works_on_a_new_database(empty_db_url):
    migrated = run_cli("migrate", "--database-url", empty_db_url)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith("applied: 001_init")
    created = run_cli("enqueue", "demo.echo", "--database-url", empty_db_url)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["status"] == "PENDING"


async def test_status_works_for_a_role_that_may_only_read(db_url, reader_url):
    job_id = await fetchval(db_url, "INSERT INTO jobs (type) VALUES ('demo.echo') RETURNING id")
    result = run_cli("status", str(job_id), "--database-url", reader_url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == str(job_id)


async def test_migrate_gives_up_on_a_lock_after_the_lock_timeout(db_url):
    blocker = await asyncpg.connect(db_url)
    try:
        await blocker.execute("BEGIN; LOCK TABLE aqueue_migrations IN ACCESS EXCLUSIVE MODE")
        result = run_cli("migrate", "--database-url", db_url, "--lock-timeout", "0.5")
    finally:
        await blocker.close()
    assert result.returncode == 1
    assert "waited more than 0.5 s for a lock" in one_line_error(result)


def test_a_lock_timeout_that_is_not_a_number_is_one_line_and_exit_2():
    result = run_cli("migrate", "--lock-timeout", "soon")
    assert result.returncode == 2
    assert "--lock-timeout must be a number" in one_line_error(result)
