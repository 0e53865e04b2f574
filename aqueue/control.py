"""What an operator does to jobs and queues, from Python: cancel, retry, retry every dead
job of a queue, pause and resume a queue, and look at queues and workers. The HTTP API
and the CLI call these same functions.

    await aqueue.cancel(pool, job_id)
    await aqueue.retry(pool, job_id)
    await aqueue.pause(pool, "email"); ...; await aqueue.resume(pool, "email")
"""

from __future__ import annotations

import uuid

from aqueue import store
from aqueue.model import Job, ValidationError, check_name
from aqueue.settings import SettingsError, rate_limit
from aqueue.store import Executor, JobNotFound, JobStateError, QueueInfo, WorkerInfo

__all__ = [
    "JobNotFound",
    "JobStateError",
    "cancel",
    "pause",
    "queues",
    "resume",
    "retry",
    "retry_dead",
    "set_rate_limit",
    "workers",
]

# A worker with no heartbeat for this many intervals is shown as lost.
LOST_AFTER_HEARTBEATS = 3


async def cancel(db: Executor, job_id: uuid.UUID) -> Job:
    """Cancel a job that has not finished: a pending, delayed or retrying one never runs;
    a running one's handler is stopped by its worker within a moment, and its outcome is
    refused. Jobs that depend on it are cancelled too. Raises JobNotFound, or
    JobStateError (with the job) when it already finished."""
    return await store.cancel_job(db, job_id)


async def retry(db: Executor, job_id: uuid.UUID) -> Job:
    """Run a DEAD or CANCELLED job again now, with a fresh attempt budget; its earlier
    attempts stay in its history. Raises JobNotFound or JobStateError."""
    return await store.retry_job(db, job_id)


async def retry_dead(db: Executor, queue: str, type: str | None = None) -> int:
    """retry() every DEAD job of `queue` (only those of `type`, when given); returns how
    many."""
    check_name("queue", queue)
    if type is not None:
        check_name("type", type)
    return await store.retry_dead(db, queue, type)


async def pause(db: Executor, queue: str) -> None:
    """No worker claims from `queue` until it is resumed (also after restarts); running
    jobs finish; producers keep enqueueing."""
    await store.set_queue_paused(db, check_name("queue", queue), True)


async def resume(db: Executor, queue: str) -> None:
    await store.set_queue_paused(db, check_name("queue", queue), False)


async def set_rate_limit(db: Executor, queue: str, rate: str | None) -> None:
    """At most `rate` (`20/s`, `100/min`, `1000/h`) jobs of `queue` start, across every
    worker together, enforced in the claim; None removes the limit. Jobs over it wait;
    they do not fail."""
    check_name("queue", queue)
    if rate is None:
        await store.set_queue_rate(db, queue, None, None)
        return
    try:
        limit = rate_limit(rate)
    except SettingsError as exc:
        raise ValidationError(f"'rate_limit' {exc}") from None
    await store.set_queue_rate(db, queue, limit.count, limit.period)


async def queues(db: Executor, heartbeat_seconds: float = 10.0) -> list[QueueInfo]:
    """Every queue with its depth by status, paused flag, oldest pending age, attempts
    completed and failed over the last minute, and the live workers serving it."""
    return await store.queue_overview(
        db, recent_seconds=60.0, lost_after_seconds=LOST_AFTER_HEARTBEATS * heartbeat_seconds
    )


async def workers(db: Executor, heartbeat_seconds: float = 10.0) -> list[WorkerInfo]:
    """Every aqueue process seen lately: alive, lost (silent for three heartbeats) or
    stopped."""
    return await store.list_workers(db, LOST_AFTER_HEARTBEATS * heartbeat_seconds)
