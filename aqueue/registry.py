"""The task registry (job type name -> async handler), the context a handler receives,
and the built-in demo tasks. `--app module:attr` names a user's Registry.

    registry = Registry()

    @registry.task("email.send")
    async def send_email(payload, ctx):
        conn = await ctx.transaction()   # commits together with the job's completion
        await conn.execute("INSERT INTO sent_emails (job_id) VALUES ($1)", ctx.job_id)
        return {"sent": True}
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from aqueue.control import LIMIT_FIELDS, check_limits
from aqueue.cron import ScheduleSpec, check_schedule
from aqueue.model import ValidationError, check_name, check_timeout
from aqueue.settings import MAX_PAYLOAD_LIMIT
from aqueue.store import UNCHANGED, ClaimedJob

Handler = Callable[[Any, "JobContext"], Awaitable[Any]]
# A plain `def` handler: run in the worker's thread pool (see Task.blocking).
BlockingHandler = Callable[[Any, "JobContext"], Any]
AnyHandler = Handler | BlockingHandler


@dataclass(frozen=True, slots=True)
class Task:
    """A registered job type: its handler, whether that blocks (a plain function, run in
    a thread), and its default per-attempt time limit (None: none)."""

    fn: AnyHandler
    blocking: bool
    timeout: float | None = None


class Registry:
    """Job type names mapped to handlers: `async def handler(payload, ctx) -> result`."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        # schedules declared in code, synced by the scheduler role at its start
        self.schedules: list[ScheduleSpec] = []
        # queue -> the limits declared in code (checked, in control.set_limits' terms),
        # set by the scheduler role at its start
        self.queue_limits: dict[str, dict[str, Any]] = {}

    def schedule(
        self,
        name: str,
        cron: str,
        type: str,
        payload: Any = None,
        *,
        timezone: str = "UTC",
        queue: str = "default",
        priority: int = 0,
        max_attempts: int = 5,
        catch_up: bool = True,
    ) -> ScheduleSpec:
        """Declare a cron schedule beside the tasks: `registry.schedule("nightly",
        "0 3 * * *", "report.build")`. The scheduler creates it at start, or updates the
        schedule of that name: never a duplicate. Checked here, so a typo fails at import."""
        spec = check_schedule(
            ScheduleSpec(
                name=name,
                cron=cron,
                type=type,
                payload={} if payload is None else payload,
                timezone=timezone,
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
                catch_up=catch_up,
            ),
            # the settings' --max-payload-bytes is not known here: the storable maximum
            max_payload_bytes=MAX_PAYLOAD_LIMIT,
        )
        self.schedules = [s for s in self.schedules if s.name != name] + [spec]
        return spec

    def limits(
        self,
        queue: str,
        *,
        rate_limit: str | None = UNCHANGED,
        key_concurrency: int | None = UNCHANGED,
        key_limits: Mapping[str, int] | None = UNCHANGED,
        fair_weights: Mapping[str, float] | None = UNCHANGED,
    ) -> dict[str, Any]:
        """Declare a queue's flow control beside the tasks: `registry.limits("email",
        rate_limit="50/s", key_concurrency=2)`. The scheduler role sets the fields given
        here at its start (control.set_limits: None removes one), and leaves the others as
        they are. Declaring a queue again adds to what was declared. Checked here, so a bad
        value fails at import with ValidationError. Returns the queue's declared limits."""
        check_name("queue", queue)
        given = check_limits(
            rate_limit=rate_limit,
            key_concurrency=key_concurrency,
            key_limits=key_limits,
            fair_weights=fair_weights,
        )
        if not given:
            raise ValidationError(
                f"registry.limits({queue!r}) names none of: {', '.join(LIMIT_FIELDS)}"
            )
        self.queue_limits[queue] = {**self.queue_limits.get(queue, {}), **given}
        return dict(self.queue_limits[queue])

    def task(
        self, name: str, *, timeout: float | None = None
    ) -> Callable[[AnyHandler], AnyHandler]:
        """Register the decorated function as the handler of job type `name`: an `async
        def` runs on the event loop; a plain `def` (blocking code: requests, an ORM) runs
        in the worker's thread pool. `timeout`: seconds an attempt may run, unless the job
        says otherwise (its timeout_seconds)."""

        def register(fn: AnyHandler) -> AnyHandler:
            self.register(name, fn, timeout=timeout)
            return fn

        return register

    def register(self, name: str, fn: AnyHandler, *, timeout: float | None = None) -> None:
        check_name("type", name)
        if not callable(fn):
            raise TypeError(f"the handler of {name!r} must be a function")
        if timeout is not None:
            try:
                timeout = check_timeout(timeout, "timeout")
            except ValidationError as exc:
                raise ValueError(f"task {name!r}: {exc}") from None
        task = Task(fn, blocking=not inspect.iscoroutinefunction(fn), timeout=timeout)
        existing = self._tasks.get(name)
        if existing is not None and existing != task:
            raise ValueError(f"job type {name!r} is already registered")
        self._tasks[name] = task

    def include(self, other: Registry) -> None:
        for name, task in other._tasks.items():
            self.register(name, task.fn, timeout=task.timeout)
        for spec in other.schedules:
            self.schedules = [s for s in self.schedules if s.name != spec.name] + [spec]
        for queue, fields in other.queue_limits.items():
            self.queue_limits[queue] = {**self.queue_limits.get(queue, {}), **fields}

    def get(self, name: str) -> Task | None:
        return self._tasks.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._tasks))


class JobContext:
    """What a running handler knows about its job (its id, type, queue, priority, which
    attempt this is out of how many, when it was created, when it was due and when this
    attempt started), and its way into the completion transaction."""

    __slots__ = (
        "_conn",
        "_job",
        "_pool",
        "_tx",
        "attempt",
        "job_id",
        "max_attempts",
        "priority",
        "queue",
        "type",
    )

    def __init__(self, pool: asyncpg.Pool, job: ClaimedJob) -> None:
        self._pool = pool
        self._job = job
        self.job_id: uuid.UUID = job.id
        self.type: str = job.type
        self.queue: str = job.queue
        self.priority: int = job.priority
        self.attempt: int = job.attempt
        self.max_attempts: int = job.max_attempts
        self._conn: Any = None
        self._tx: Any = None

    @property
    def created_at(self) -> datetime:
        """When the job was enqueued."""
        return self._job.created_at

    @property
    def run_after(self) -> datetime:
        """When the job was due (its delay, or its retry's backoff, ran out)."""
        return self._job.run_after

    @property
    def started_at(self) -> datetime:
        """When this attempt was claimed (the database's clock)."""
        return self._job.started_at

    async def transaction(self) -> asyncpg.Connection:
        """A connection inside the transaction that will also mark this job COMPLETED.
        Whatever the handler writes through it commits together with the completion, or
        not at all (the handler fails, or the worker lost its lease): exactly-once effects
        for work inside this database."""
        if self._conn is None:
            conn = await self._pool.acquire()
            try:
                tx = conn.transaction()
                await tx.start()
            except BaseException:
                await self._pool.release(conn)
                raise
            self._conn, self._tx = conn, tx
        return self._conn

    @property
    def pool(self) -> asyncpg.Pool:
        """The worker's pool, for work that must not wait for the job's outcome."""
        return self._pool

    @property
    def connection(self) -> asyncpg.Connection | None:
        """The open completion transaction's connection, if the handler asked for one."""
        return self._conn

    async def commit(self) -> None:
        tx, self._tx = self._tx, None
        await tx.commit()

    async def close(self) -> None:
        """Roll back the transaction unless it was committed; give the connection back."""
        if self._conn is None:
            return
        try:
            if self._tx is not None:
                await self._tx.rollback()
        finally:
            await self._pool.release(self._conn)
            self._conn = self._tx = None


# --- built-in tasks, always registered ----------------------------------------------------


async def demo_sleep(payload: Any, ctx: JobContext) -> Any:
    """Sleep `seconds` (default 1), then complete."""
    seconds = payload.get("seconds", 1) if isinstance(payload, dict) else 1
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ValueError(f"demo.sleep needs a non-negative number of seconds, got {seconds!r}")
    await asyncio.sleep(seconds)
    return {"slept": seconds}


async def demo_echo(payload: Any, ctx: JobContext) -> Any:
    """Complete with the payload as the result."""
    return payload


async def demo_fail(payload: Any, ctx: JobContext) -> Any:
    """Always raise: for retries, backoff and the dead-letter queue."""
    message = payload.get("message") if isinstance(payload, dict) else None
    raise RuntimeError(message or "demo.fail always fails")


def builtin_registry() -> Registry:
    registry = Registry()
    registry.register("demo.sleep", demo_sleep)
    registry.register("demo.echo", demo_echo)
    registry.register("demo.fail", demo_fail)
    return registry


class AppLoadError(ValueError):
    """--app names something that is not a Registry that can be imported."""


def load_registry(app: str | None) -> Registry:
    """The built-in tasks plus, when `app` is given ("module:attr"), the user's Registry."""
    registry = builtin_registry()
    if not app:
        return registry
    module_name, _, attr = app.partition(":")
    if not module_name or not attr:
        raise AppLoadError(f"--app must look like module:attribute, got {app!r}")
    # The `aqueue` console script's sys.path starts with its own bin/ directory, not the
    # working directory: without this, only installed packages could be named. uvicorn
    # and celery put the working directory first too.
    cwd = os.getcwd()
    if sys.path[:1] not in ([""], [cwd]):
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppLoadError(f"--app {app}: cannot import {module_name!r}: {exc}") from None
    user = getattr(module, attr, None)
    if not isinstance(user, Registry):
        raise AppLoadError(
            f"--app {app}: {module_name}.{attr} is {type(user).__name__}, not an aqueue.Registry"
        )
    registry.include(user)
    return registry
