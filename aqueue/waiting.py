"""Waiting for a job to finish, woken by the job-finished notification rather than by
polling the job: `await aqueue.wait(pool, job_id, timeout=30)`.

Within `aqueue serve` (and with `embed.worker`), waiters share the process's one LISTEN
connection: a thousand of them cost one connection. Called from anywhere else, without
a notifier, a wait holds one pooled connection listening for its job until it returns."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from aqueue import store
from aqueue.model import FINAL_STATUSES, Job
from aqueue.notifier import Notifier, Topic
from aqueue.store import JobNotFound

# A finished job is notified; this is the safety net under that (a notification lost
# with its connection), not the way a wait learns of the end.
RECHECK_SECONDS = 5.0


async def wait(
    pool: asyncpg.Pool,
    job_id: uuid.UUID,
    timeout: float | None = None,
    *,
    notifier: Notifier | None = None,
) -> Job:
    """The job once it is COMPLETED, DEAD or CANCELLED. Raises TimeoutError when it has
    not finished within `timeout` seconds (None: wait as long as it takes), JobNotFound
    for an unknown id."""
    async with asyncio.timeout(timeout):
        async with _finished_event(pool, job_id, notifier) as event:
            return await _until_finished(pool, job_id, event)


async def wait_until_finished(
    pool: asyncpg.Pool, job_id: uuid.UUID, seconds: float, notifier: Notifier | None
) -> Job:
    """The job when it finishes, or as it is after `seconds` (a long-poll)."""
    try:
        return await wait(pool, job_id, seconds, notifier=notifier)
    except TimeoutError:
        job = await store.get_job(pool, job_id)
        if job is None:
            raise JobNotFound(job_id) from None
        return job


async def _until_finished(pool: asyncpg.Pool, job_id: uuid.UUID, event: asyncio.Event) -> Job:
    watched = False
    while True:
        event.clear()  # before the read: a notification during it is not lost
        job = await store.get_job(pool, job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.status in FINAL_STATUSES:
            return job
        if not watched:
            # Ask for its end to be notified, then look once more: it may have finished
            # in between, unnotified.
            await store.watch_job(pool, job_id)
            watched = True
            continue
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RECHECK_SECONDS):
                await event.wait()


@contextlib.asynccontextmanager
async def _finished_event(
    pool: asyncpg.Pool, job_id: uuid.UUID, notifier: Notifier | None
) -> AsyncIterator[asyncio.Event]:
    if notifier is not None:
        with notifier.finished(job_id) as event:
            yield event
        return
    event = asyncio.Event()
    wanted = str(job_id)

    def heard(_conn: Any, _pid: int, _channel: str, payload: object) -> None:
        if payload == wanted:
            event.set()

    async with pool.acquire() as conn:
        await conn.add_listener(Topic.FINISHED.value, heard)
        try:
            yield event
        finally:
            await conn.remove_listener(Topic.FINISHED.value, heard)
