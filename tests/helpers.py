"""Helpers for tests: fast settings, workers in-process and as subprocesses, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from aqueue import store
from aqueue.metrics import Metrics
from aqueue.model import Job, JobStatus
from aqueue.notifier import Notifier
from aqueue.registry import Registry, builtin_registry
from aqueue.server import new_process_id
from aqueue.settings import Settings
from aqueue.worker import Worker

ROOT = Path(__file__).resolve().parent.parent


def fast_settings(**changes: object) -> Settings:
    """Fast settings for tests: short leases, backoffs and polls."""
    base = dict(
        lease_seconds=5.0,
        backoff_base_seconds=0.05,
        backoff_cap_seconds=0.2,
        poll_seconds=1.0,
        shutdown_grace_seconds=5.0,
        reaper_interval_seconds=0.2,
    )
    base.update(changes)
    return Settings().with_overrides(**base)


class RunningWorker:
    """An in-process worker (with its own LISTEN connection) on the test's pool."""

    def __init__(self, worker: Worker, notifier: Notifier, tasks: list[asyncio.Task[None]]):
        self.worker = worker
        self.notifier = notifier
        self.tasks = tasks

    async def stop(self, now: bool = False) -> None:
        self.worker.stop(now=now)
        await self.tasks[1]
        self.tasks[0].cancel()
        await asyncio.gather(self.tasks[0], return_exceptions=True)


@contextlib.asynccontextmanager
async def running_worker(
    pool: asyncpg.Pool,
    url: str,
    registry: Registry | None = None,
    metrics: Metrics | None = None,
    **settings: object,
) -> AsyncIterator[RunningWorker]:
    reg = builtin_registry()
    if registry is not None:
        reg.include(registry)
    notifier = Notifier(url, metrics)
    worker = Worker(
        pool,
        url,
        notifier,
        reg,
        fast_settings(**settings),
        worker_id=new_process_id(),
        metrics=metrics,
    )
    tasks = [asyncio.create_task(notifier.run()), asyncio.create_task(worker.run())]
    await asyncio.wait_for(notifier.connected.wait(), 10)
    running = RunningWorker(worker, notifier, tasks)
    try:
        yield running
    finally:
        if not tasks[1].done():
            await running.stop()


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll a predicate (plain, or returning an awaitable) until it gives something
    truthy; return that."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


def aqueue_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "aqueue.cli", *args]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("DATABASE_URL", None)
    env.update(extra)
    return env


def free_port() -> int:
    """A port that is free now, for a server a test starts a moment later. Not one the
    kernel hands out itself (port 0): those come from the range it also gives outgoing
    connections (a pool's, PostgreSQL's), which could take the port before the server
    binds it. Below that range, only another server could."""
    import random
    import socket

    low = 20_000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            high = min(int(ranges.read().split()[0]), 32_768)
    except (OSError, ValueError, IndexError):
        high = 32_768
    if high - low < 1_000:  # the kernel's range starts low: take one of its ports after all
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for _ in range(100):
        port = random.randrange(low, high)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {low} and {high}")


class ServeProcess:
    """`aqueue serve` as a subprocess; started() returns once it logged `marker`.
    `stdout=True`: what it prints on stdout is kept too, in `out_lines`."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, stdout: bool = False) -> None:
        self.args = args
        self.env = env or subprocess_env()
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.out_lines: list[str] = []
        self._stdout = stdout
        self._reader: asyncio.Task[None] | None = None
        self._out_reader: asyncio.Task[None] | None = None

    async def start(self, marker: str = "serving", timeout: float = 30) -> ServeProcess:
        self.proc = await asyncio.create_subprocess_exec(
            *aqueue_command("serve", *self.args),
            env=self.env,
            cwd=str(ROOT),
            stdout=asyncio.subprocess.PIPE if self._stdout else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        if self._stdout:

            async def read_stdout() -> None:
                assert self.proc is not None and self.proc.stdout is not None
                async for raw in self.proc.stdout:
                    self.out_lines.append(raw.decode(errors="replace").rstrip())

            self._out_reader = asyncio.create_task(read_stdout())
        seen = asyncio.Event()

        async def read() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            async for raw in self.proc.stderr:
                line = raw.decode(errors="replace").rstrip()
                self.lines.append(line)
                if marker in line:
                    seen.set()

        self._reader = asyncio.create_task(read())
        waiter = asyncio.create_task(seen.wait())
        exited = asyncio.create_task(self.proc.wait())
        await asyncio.wait([waiter, exited], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        exited.cancel()
        if not seen.is_set():
            await self.kill()
            raise AssertionError("aqueue serve did not start:\n" + "\n".join(self.lines[-30:]))
        return self

    async def wait_for_line(self, text: str, timeout: float = 30) -> str:
        """The first line of the process's log containing `text`, once it is there."""

        async def found() -> str | None:
            return next((line for line in self.lines if text in line), None)

        try:
            line: str = await wait_for(found, timeout)
        except AssertionError:
            raise AssertionError(
                f"no line with {text!r} within {timeout}s; the log:\n" + "\n".join(self.lines)
            ) from None
        return line

    def count(self, text: str) -> int:
        """How many lines of the log so far contain `text`."""
        return sum(text in line for line in self.lines)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        for reader in (self._reader, self._out_reader):
            if reader is not None:
                await asyncio.wait_for(reader, 5)
        return code

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for reader in (self._reader, self._out_reader):
            if reader is not None:
                reader.cancel()


@dataclass(frozen=True)
class ApiServer:
    url: str
    process: ServeProcess


@contextlib.asynccontextmanager
async def api_server(
    db_url: str, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[ApiServer]:
    """`aqueue serve --roles api` on a free port for the length of the block (`args`: more
    flags). Leaving the block stops it with SIGTERM, which it must answer with exit 0."""
    port = free_port()
    process = await ServeProcess(
        "--roles", "api", "--database-url", db_url, "--port", str(port), *args, env=env
    ).start(marker="api listening")  # fmt: skip
    try:
        yield ApiServer(f"http://127.0.0.1:{port}", process)
    finally:
        process.signal(signal.SIGTERM)
        assert await process.wait() == 0, "\n".join(process.lines[-30:])


def as_role(url: str, role: str, password: str) -> str:
    """`url` with another user and password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))


async def wait_status(
    pool: asyncpg.Pool, job_id: Any, status: JobStatus, timeout: float = 10.0
) -> Job:
    """Wait until the job has `status`; return it."""

    async def reached() -> Job | None:
        job = await store.get_job(pool, job_id)
        return job if job is not None and job.status is status else None

    return await wait_for(reached, timeout)


async def jobs_in_every_state(pool: asyncpg.Pool, queue: str) -> int:
    """Jobs of `queue` in each state a queue-depth count must tell apart: due PENDING (one
    of them due for 90 s) and due RETRY, which count; delayed PENDING and RETRY, one
    waiting on a dependency, a cancelled one, a running one, which do not. Returns how many
    count: the jobs due and waiting for a worker."""
    from datetime import UTC, datetime, timedelta

    from aqueue import cancel, enqueue

    later = datetime.now(UTC) + timedelta(hours=1)
    due = await enqueue(pool, "demo.echo", {}, queue=queue)
    await pool.execute(
        "UPDATE jobs SET run_after = now() - interval '90 seconds' WHERE id = $1", due.id
    )
    await enqueue(pool, "demo.echo", {}, queue=queue)
    retrying = await enqueue(pool, "demo.echo", {}, queue=queue)
    retry_later = await enqueue(pool, "demo.echo", {}, queue=queue, run_after=later)
    await pool.execute(
        "UPDATE jobs SET status = 'RETRY' WHERE id = ANY($1)", [retrying.id, retry_later.id]
    )
    await enqueue(pool, "demo.echo", {}, queue=queue, run_after=later)
    await enqueue(pool, "demo.echo", {}, queue=queue, depends_on=[due.id])
    await cancel(pool, (await enqueue(pool, "demo.echo", {}, queue=queue)).id)
    running = await enqueue(pool, "demo.echo", {}, queue=queue, priority=1000)
    claimed = await store.claim(pool, queue, 1, "a-worker", 30)
    assert [job.id for job in claimed] == [running.id]
    return 3


OPENSSL = "/usr/bin/openssl"


def self_signed_certificate(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its unencrypted key, made by the
    openssl command: (cert.pem, key.pem) in `directory`."""
    import subprocess

    cert, key = directory / f"{name}.cert.pem", directory / f"{name}.key.pem"
    subprocess.run(
        [
            OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key
