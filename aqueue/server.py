"""`aqueue serve`: the chosen roles as tasks on one asyncpg pool in one process, and
their ordered shutdown on SIGTERM/SIGINT: the api stops accepting, the worker stops
claiming and drains, the reaper stops, then the pool closes (and the embedded
PostgreSQL, if aqueue started one)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import signal
import socket
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import uvicorn

from aqueue import db, protocol
from aqueue.api.app import create_app
from aqueue.metrics import Metrics
from aqueue.metrics_server import create_metrics_app
from aqueue.notifier import Notifier
from aqueue.reaper import Reaper
from aqueue.registry import Registry, load_registry
from aqueue.scheduler import Scheduler
from aqueue.settings import Settings, is_loopback
from aqueue.worker import Worker

log = logging.getLogger("aqueue.server")

POOL_CLOSE_SECONDS = 2.0
ROLE_STOP_SECONDS = 2.0
HURRIED_ROLE_SECONDS = 0.5


class StartupError(RuntimeError):
    """Something aqueue needs at start is not there; the message says what."""


class _ApiServer(uvicorn.Server):
    """uvicorn in our loop, without its own signal handling: the process has one owner
    of SIGTERM/SIGINT, and it shuts the roles down in order. `listening` is logged once
    the socket accepts connections: a client that waits for that line is never refused
    (the socket is bound before startup, but listens only once uvicorn has started)."""

    def __init__(self, config: uvicorn.Config, listening: str | None = None) -> None:
        super().__init__(config)
        self._listening = listening

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._listening is not None:
            log.info("%s", self._listening)


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


_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----")
_PEM_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def check_tls(certfile: Path, keyfile: Path) -> None:
    """StartupError, naming the file and what is wrong with it, unless uvicorn can serve
    HTTPS with these files: checked before anything starts, where uvicorn would find out
    only once the roles run, with a traceback. Never says what the files hold."""
    for flag, path, pem, kind in (
        ("--ssl-certfile", certfile, _PEM_CERTIFICATE, "PEM certificate"),
        ("--ssl-keyfile", keyfile, _PEM_KEY, "PEM private key"),
    ):
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise StartupError(f"cannot read {flag} {path}: {exc.strerror}") from None
        if pem.search(text) is None:
            raise StartupError(f"{flag} {path} holds no {kind}")

    def no_passphrase() -> str:
        # Without a callback OpenSSL would ask on the terminal, and a server would hang
        raise _EncryptedKey

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile, password=no_passphrase)
    except _EncryptedKey:
        raise StartupError(
            f"--ssl-keyfile {keyfile} is encrypted: aqueue takes an unencrypted key "
            "(keep it readable by aqueue's user only)"
        ) from None
    except ssl.SSLError as exc:
        reason = re.sub(r"^\[[^]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", str(exc))
        raise StartupError(
            f"cannot serve HTTPS with --ssl-certfile {certfile} and --ssl-keyfile "
            f"{keyfile}: {reason}"
        ) from None


class _EncryptedKey(Exception):
    pass


async def serve(settings: Settings) -> None:
    registry = load_registry(settings.app)  # a bad --app fails before anything starts
    if settings.ssl_certfile is not None and settings.ssl_keyfile is not None:
        check_tls(settings.ssl_certfile, settings.ssl_keyfile)
    sock = bind_socket(settings.host, settings.port) if "api" in settings.roles else None
    metrics_port = settings.metrics_port
    try:
        metrics_sock = None if metrics_port is None else bind_socket(settings.host, metrics_port)
    except StartupError:
        if sock is not None:
            sock.close()
        raise
    # SIGTERM and SIGINT are handled from here on, not only once the roles run: during
    # startup (embedded server, migrations, pool) a signal had its default action and
    # killed the process (exit -15), leaving a just-started embedded PostgreSQL running.
    # Now startup stops at its next step and the process exits 0, as after any stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.debug("event loop: %s", type(loop).__module__.partition(".")[0])
    try:
        async with db.database_url(settings.database_url, settings.data_dir) as url:
            if stop.is_set():
                return
            await _migrate(url, settings.migration_lock_timeout_seconds)
            pool = await db.create_pool(
                url, settings.pool_min_size, settings.pool_size, plan_every_execution=True
            )
            try:
                if not stop.is_set():
                    await run_roles(pool, url, settings, registry, stop, sock, metrics_sock)
            finally:
                await _close_pool(pool)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        for bound in (sock, metrics_sock):
            if bound is not None:
                bound.close()


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


class Role(Protocol):
    """A part of the server: run() works until stop() (or cancellation), then returns.
    stop(now=True) is the second signal: cut the grace period short."""

    @property
    def name(self) -> str: ...

    @property
    def stop_seconds(self) -> float:
        """How long run() may take to return after stop(), before it is cancelled."""
        ...

    async def run(self) -> None: ...

    def stop(self, now: bool = False) -> None: ...


class HttpRole:
    """A uvicorn server as a role: the api, or the metrics port. `stop_seconds`: the
    server's graceful shutdown and a margin; `sock`: bound before startup (or None:
    uvicorn binds its config's host and port)."""

    def __init__(
        self, name: str, stop_seconds: float, server: _ApiServer, sock: socket.socket | None
    ) -> None:
        self.name = name
        self.stop_seconds = stop_seconds
        self.server = server
        self.sock = sock

    async def run(self) -> None:
        await self.server.serve(sockets=[self.sock] if self.sock else None)

    def stop(self, now: bool = False) -> None:
        self.server.should_exit = True
        if now:
            self.server.force_exit = True


def _address(settings: Settings, port: int) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"{'https' if settings.tls else 'http'}://{host}:{port}"


def _http_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config's arguments both HTTP servers (the api, the metrics port) share."""
    options = protocol.config_options(settings.max_url_bytes, settings.max_header_bytes)
    if settings.ssl_certfile is not None and settings.ssl_keyfile is not None:
        options.update(
            ssl_certfile=str(settings.ssl_certfile), ssl_keyfile=str(settings.ssl_keyfile)
        )
    return options


def new_process_id() -> str:
    """The name this process goes by in the database (locked_by, the workers table)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def build_roles(
    pool: asyncpg.Pool,
    url: str,
    settings: Settings,
    registry: Registry,
    sock: socket.socket | None = None,
    process_id: str | None = None,
    *,
    metrics: Metrics | None = None,
    metrics_sock: socket.socket | None = None,
) -> list[Role]:
    """The roles this process runs, in the order they stop: the api stops taking
    requests first, the worker drains next, the scheduler and the maintenance loops after
    it, the metrics port (still answering while the others stop), and the notifier, which
    the others listen through, last. `metrics`: what the roles count and /metrics serves
    (None: nothing is counted, unless --metrics-port asks for it)."""
    process_id = process_id or new_process_id()
    if metrics is None and settings.metrics_port is not None:
        metrics = Metrics.for_settings(settings)
    roles: list[Role] = []
    notifier = (
        Notifier(url, metrics) if {"api", "worker", "scheduler"} & set(settings.roles) else None
    )
    if "api" in settings.roles:
        config = uvicorn.Config(
            create_app(pool, settings, notifier, metrics),
            lifespan="off",
            log_level=settings.log_level.lower(),
            access_log=False,
            # no handlers of uvicorn's own: its records reach the root logger's, with
            # aqueue's format and its masking of secrets (aqueue/redact.py)
            log_config=None,
            timeout_graceful_shutdown=5,
            **_http_options(settings),
        )
        listening = f"api listening on {_address(settings, settings.port)} (the dashboard is at /)"
        roles.append(HttpRole("api", 10.0, _ApiServer(config, listening), sock))  # 5 s graceful
    if "worker" in settings.roles:
        assert notifier is not None
        roles.append(
            Worker(pool, url, notifier, registry, settings, worker_id=process_id, metrics=metrics)
        )
    if "scheduler" in settings.roles:
        assert notifier is not None
        roles.append(Scheduler(pool, settings, registry, notifier, metrics))
    # Every worker reaps too: recovering a killed worker's jobs must not depend on where
    # a process with the reaper role happens to run.
    if "reaper" in settings.roles or "worker" in settings.roles:
        # retention (deleting old history) only where the reaper role is asked for
        roles.append(
            Reaper(
                pool, settings, process_id, retention="reaper" in settings.roles, metrics=metrics
            )
        )
    if settings.metrics_port is not None:
        assert metrics is not None
        config = uvicorn.Config(
            create_metrics_app(pool, metrics, settings),
            host=settings.host,
            port=settings.metrics_port,
            lifespan="off",
            log_level=settings.log_level.lower(),
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=1,
            **_http_options(settings),
        )
        listening = f"metrics on {_address(settings, settings.metrics_port)}/metrics"
        roles.append(HttpRole("metrics", 3.0, _ApiServer(config, listening), metrics_sock))  # 1 s
    if notifier is not None:
        roles.append(notifier)
    return roles


async def run_roles(
    pool: asyncpg.Pool,
    url: str,
    settings: Settings,
    registry: Registry,
    stop: asyncio.Event,
    sock: socket.socket | None = None,
    metrics_sock: socket.socket | None = None,
    metrics: Metrics | None = None,
) -> None:
    """Run the enabled roles until `stop` is set (serve() sets it on a signal) or a role
    fails, then stop them in order. The process's one Metrics object is made here (unless
    given) when something serves it: the api role, or --metrics-port (see build_roles). A
    process with neither counts nothing, since nothing could read it."""
    if metrics is None and "api" in settings.roles:
        metrics = Metrics.for_settings(settings)
    roles = build_roles(
        pool, url, settings, registry, sock, metrics=metrics, metrics_sock=metrics_sock
    )
    api = any(role.name == "api" for role in roles)
    if api and not settings.auth_enabled and not is_loopback(settings.host):
        log.warning(
            "the API listens on %s with authentication off: anyone who reaches it can "
            "read every job and enqueue, cancel or retry jobs; turn it on with --auth on "
            "and tokens from `aqueue tokens create`, or --api-token",
            settings.host,
        )
    await RoleGroup(roles).run_until(stop)


class RoleGroup:
    """Roles run side by side as tasks owned here, and stopped one after the other."""

    def __init__(self, roles: Sequence[Role], *, signals: bool = True) -> None:
        self.roles = list(roles)
        # whether a second SIGTERM/SIGINT during shutdown hurries it (not when embedded in
        # an application that owns its signals)
        self._signals = signals
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._hurried = False

    async def run_until(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        for role in self.roles:
            self.tasks[role.name] = asyncio.create_task(role.run(), name=f"aqueue-{role.name}")
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait(
                [stopper, *self.tasks.values()], return_when=asyncio.FIRST_COMPLETED
            )
            failed = [name for name, task in self.tasks.items() if task in done]
            for name in failed:
                log.error("role %s stopped unexpectedly: %r", name, self.tasks[name].exception())
            log.info("shutting down")
            if self._signals:
                # A second signal skips the grace period.
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, self.hurry)
            await self.stop()
            if failed:
                exc = self.tasks[failed[0]].exception()
                raise StartupError(f"role {failed[0]} failed: {exc}")
        finally:
            stopper.cancel()
            for task in self.tasks.values():
                task.cancel()
            # Bounded: a task cancelled in a statement to a database that stopped
            # answering may wait on it; closing the pool (serve's next step) ends it.
            await asyncio.wait([stopper, *self.tasks.values()], timeout=ROLE_STOP_SECONDS)

    async def stop(self) -> None:
        for role in self.roles:
            task = self.tasks[role.name]
            # After a second signal, the roles not yet stopping get a moment each, not
            # their whole allowance: the one stopping when it came (the worker, say) was
            # told to hurry and bounds what it has left by itself.
            hurried = self._hurried
            allowed = HURRIED_ROLE_SECONDS if hurried else role.stop_seconds
            role.stop(now=hurried)
            await asyncio.wait([task], timeout=allowed)
            if not task.done():
                log.warning("role %s did not stop in %.1fs; cancelling it", role.name, allowed)
                task.cancel()
                # A task cancelled in the middle of a statement to a database that stopped
                # answering may wait on it; closing the pool ends such waits.
                await asyncio.wait(
                    [task], timeout=HURRIED_ROLE_SECONDS if hurried else ROLE_STOP_SECONDS
                )

    def hurry(self) -> None:
        log.warning("second signal: stopping now, running jobs are released")
        self._hurried = True
        for role in self.roles:
            if not self.tasks[role.name].done():
                role.stop(now=True)
