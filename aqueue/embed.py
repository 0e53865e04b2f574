"""Running aqueue inside your own asyncio application: a worker (with its reaper and
notifier) on your event loop, started and drained with your app, as `aqueue serve`
would run it.

    from contextlib import asynccontextmanager
    from fastapi import FastAPI
    import aqueue.embed

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with aqueue.embed.worker(DATABASE_URL, registry, queues={"default": 10}) as w:
            app.state.aqueue = w          # w.pool to enqueue, w.notifier to wait
            yield                         # on shutdown: stop claiming, drain, release

With `metrics=aqueue.metrics.Metrics()` the worker counts into it (see README, Metrics);
serve it from your app as `Response(await m.exposition(w.pool), media_type=
aqueue.metrics.CONTENT_TYPE_LATEST)`.

The database must already be migrated (`aqueue migrate`, or `aqueue serve` once): an
application that embeds a worker does not change the schema on its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from aqueue import db
from aqueue.metrics import Metrics
from aqueue.notifier import Notifier
from aqueue.registry import Registry, builtin_registry
from aqueue.server import RoleGroup, build_roles
from aqueue.settings import Settings
from aqueue.worker import Worker


@dataclass(frozen=True)
class Embedded:
    pool: asyncpg.Pool
    notifier: Notifier
    worker: Worker
    metrics: Metrics | None = None


@contextlib.asynccontextmanager
async def worker(
    database_url: str,
    registry: Registry,
    *,
    queues: Mapping[str, int] | None = None,
    pool: asyncpg.Pool | None = None,
    settings: Settings | None = None,
    metrics: Metrics | None = None,
    **options: Any,
) -> AsyncIterator[Embedded]:
    """Run a worker for `registry` until the block ends, then shut it down gracefully
    (stop claiming, let running jobs finish within the grace period, release the rest).
    `pool`: your own asyncpg pool, made with aqueue.db.create_pool (its connections need
    aqueue's JSON codecs; plan_every_execution=True, as the worker's reaper scans the jobs
    table on it); else one is made and closed here. `options` are Settings
    fields (for example concurrency=20, lease_seconds=60). `metrics`: what the worker
    counts into (None: nothing is counted)."""
    settings = (settings or Settings()).with_overrides(roles=("worker",), **options)
    if queues is not None:
        settings = settings.with_overrides(queues=dict(queues))
    tasks = builtin_registry()
    tasks.include(registry)
    conn = await db.connect(database_url)
    try:
        await db.check_schema(conn)
    finally:
        await conn.close()
    own_pool = pool is None
    if pool is None:
        pool = await db.create_pool(
            database_url, settings.pool_min_size, settings.pool_size, plan_every_execution=True
        )
    try:
        roles = build_roles(pool, database_url, settings, tasks, metrics=metrics)
        group = RoleGroup(roles, signals=False)
        stop = asyncio.Event()
        running = asyncio.create_task(group.run_until(stop), name="aqueue-embedded")
        notifier = next(r for r in roles if isinstance(r, Notifier))
        the_worker = next(r for r in roles if isinstance(r, Worker))
        try:
            await _until_listening(notifier, running)
            yield Embedded(pool, notifier, the_worker, the_worker.metrics)
        finally:
            stop.set()
            await running
    finally:
        if own_pool:
            await pool.close()


async def _until_listening(notifier: Notifier, running: asyncio.Task[None]) -> None:
    """Return once the notifier listens (jobs enqueued from now on are heard at once),
    or raise what stopped the roles."""
    listening = asyncio.ensure_future(notifier.connected.wait())
    try:
        await asyncio.wait([listening, running], return_when=asyncio.FIRST_COMPLETED)
    finally:
        listening.cancel()
    if running.done():
        running.result()
        raise RuntimeError("the embedded worker stopped at start")
