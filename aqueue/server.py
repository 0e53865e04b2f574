"""`aqueue serve`: the chosen roles as tasks on one asyncpg pool in one process, and
their ordered shutdown on SIGTERM/SIGINT: the api stops accepting, the worker stops
claiming and drains, the reaper stops, then the pool closes (and the embedded
PostgreSQL, if aqueue started one)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import asyncpg
import uvicorn

from aqueue import db
from aqueue.api.app import create_app
from aqueue.notifier import Notifier
from aqueue.reaper import Reaper
from aqueue.registry import Registry, load_registry
from aqueue.settings import Settings
from aqueue.worker import Worker

log = logging.getLogger("aqueue.server")

POOL_CLOSE_SECONDS = 2.0
ROLE_STOP_SECONDS = 2.0


class StartupError(RuntimeError):
    """Something aqueue needs at start is not there; the message says what."""


class _ApiServer(uvicorn.Server):
    """uvicorn in our loop, without its own signal handling: the process has one owner
    of SIGTERM/SIGINT, and it shuts the roles down in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP said out loud: asyncio sets TCP_NODELAY only on sockets that say it, and
    # without it every response waited ~40 ms for a delayed ACK (720 requests/s at most).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


async def serve(settings: Settings) -> None:
    registry = load_registry(settings.app)  # a bad --app fails before anything starts
    sock = bind_socket(settings.host, settings.port) if "api" in settings.roles else None
    # SIGTERM and SIGINT are handled from here on, not only once the roles run: during
    # startup (embedded server, migrations, pool) a signal had its default action and
    # killed the process (exit -15), leaving a just-started embedded PostgreSQL running.
    # Now startup stops at its next step and the process exits 0, as after any stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with db.database_url(settings.database_url, settings.data_dir) as url:
            if stop.is_set():
                return
            await _migrate(url, settings.migration_lock_timeout_seconds)
            pool = await db.create_pool(url, settings.pool_min_size, settings.pool_size)
            try:
                if not stop.is_set():
                    await run_roles(pool, url, settings, registry, stop, sock)
            finally:
                await _close_pool(pool)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if sock is not None:
            sock.close()


async def _close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully, but not for ever: a handler that ignored its cancellation can
    hold a connection, and a database that stopped answering never acknowledges."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
    except TimeoutError:
        log.warning("closing the database pool timed out; closing its connections anyway")
        pool.terminate()


async def _migrate(url: str, lock_timeout: float) -> None:
    try:
        applied = await db.migrate_url(url, lock_timeout)
    except asyncpg.ReadOnlySQLTransactionError as exc:
        # Transient for a running worker (a failover), but at start it means the URL
        # points at a standby: say that, not "cannot reach".
        raise StartupError(
            f"the database is read-only (a standby, or mid-failover?): {exc}"
        ) from None
    except Exception as exc:
        if db.is_connection_error(exc):
            raise StartupError(f"cannot reach the database: {exc}") from None
        if isinstance(exc, asyncpg.PostgresError):
            raise StartupError(f"migrating the database failed: {exc}") from None
        raise
    if applied:
        log.info("database migrated: %s", ", ".join(applied))


async def run_roles(
    pool: asyncpg.Pool,
    url: str,
    settings: Settings,
    registry: Registry,
    stop: asyncio.Event,
    sock: socket.socket | None = None,
) -> None:
    """Run the enabled roles until `stop` is set (serve() sets it on a signal) or a role
    fails, then stop them in order."""
    loop = asyncio.get_running_loop()

    api: _ApiServer | None = None
    worker: Worker | None = None
    tasks: dict[str, asyncio.Task[None]] = {}
    if "api" in settings.roles:
        config = uvicorn.Config(
            create_app(pool, settings),
            lifespan="off",
            log_level=settings.log_level.lower(),
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        api = _ApiServer(config)
        tasks["api"] = asyncio.create_task(api.serve(sockets=[sock] if sock else None))
        log.info("api listening on http://%s:%d", settings.host, settings.port)
    if "worker" in settings.roles:
        notifier = Notifier(url)
        worker = Worker(pool, url, notifier, registry, settings)
        tasks["notifier"] = asyncio.create_task(notifier.run())
        tasks["worker"] = asyncio.create_task(worker.run())
    # Every worker reaps too: recovering a killed worker's jobs must not depend on where
    # a process with the reaper role happens to run.
    if "reaper" in settings.roles or "worker" in settings.roles:
        reaper = Reaper(pool, settings, retention="reaper" in settings.roles)
        tasks["reaper"] = asyncio.create_task(reaper.run())

    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait(
            [stopper, *tasks.values()], return_when=asyncio.FIRST_COMPLETED
        )
        failed = [name for name, task in tasks.items() if task in done]
        for name in failed:
            exc = tasks[name].exception()
            log.error("role %s stopped unexpectedly: %r", name, exc)
        log.info("shutting down")
        # A second signal skips the grace period.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _hurry, api, worker)
        if api is not None:
            api.should_exit = True
            await asyncio.gather(tasks["api"], return_exceptions=True)
        if worker is not None:
            worker.stop()
            await asyncio.gather(tasks["worker"], return_exceptions=True)
        for name in ("notifier", "reaper"):
            if name in tasks:
                tasks[name].cancel()
        # A task cancelled in the middle of a statement to a database that stopped
        # answering may wait on it; closing the pool ends such waits.
        await asyncio.wait(tasks.values(), timeout=ROLE_STOP_SECONDS)
        if failed:
            raise StartupError(f"role {failed[0]} failed: {tasks[failed[0]].exception()}")
    finally:
        stopper.cancel()


def _hurry(api: _ApiServer | None, worker: Worker | None) -> None:
    log.warning("second signal: stopping now, running jobs are released")
    if api is not None:
        api.force_exit = True
    if worker is not None:
        worker.stop(now=True)
