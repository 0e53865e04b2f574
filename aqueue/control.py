"""What an operator does to jobs and queues, from Python: cancel, retry, retry every dead
job of a queue, pause and resume a queue, and look at queues and workers. The HTTP API
and the CLI call these same functions.

    await aqueue.cancel(pool, job_id)
    await aqueue.retry(pool, job_id)
    await aqueue.pause(pool, "email"); ...; await aqueue.resume(pool, "email")
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from typing import Any

from aqueue import store
from aqueue.model import Job, ValidationError, check_flow_key, check_name
from aqueue.settings import SettingsError, rate_limit
from aqueue.store import UNCHANGED, Executor, JobNotFound, JobStateError, QueueInfo, WorkerInfo

__all__ = [
    "JobNotFound",
    "JobStateError",
    "cancel",
    "limits",
    "pause",
    "queues",
    "resume",
    "retry",
    "retry_dead",
    "set_limits",
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
    await set_limits(db, queue, rate_limit=rate)


# caps and weights within reason: a cap is a number of slot rows per key
MAX_KEY_CONCURRENCY = 10_000
MAX_FAIR_WEIGHT = 1_000.0
MAX_LIMIT_ENTRIES = 10_000


async def set_limits(
    db: Executor,
    queue: str,
    *,
    rate_limit: str | None = UNCHANGED,
    key_concurrency: int | None = UNCHANGED,
    key_limits: Mapping[str, int] | None = UNCHANGED,
    fair_weights: Mapping[str, float] | None = UNCHANGED,
) -> None:
    """Flow control for `queue`, enforced in the claim across every worker; each argument
    given is set (None removes it), the others are kept.

    rate_limit: at most `20/s` (`N/min`, `N/h`) jobs start; the rest wait.
    key_concurrency: at most this many jobs of one `concurrency_key` run at once.
    key_limits: {"customer:vip": 5}: caps for single keys (over key_concurrency).
    fair_weights: {"A": 3, "B": 1}: tenants (`fair_key`) share the queue by weight
    (default 1). Raises ValidationError naming the first bad value."""
    check_name("queue", queue)
    changes: dict[str, Any] = {}
    if rate_limit is not UNCHANGED:
        changes["rate"] = None if rate_limit is None else _rate(rate_limit)
    if key_concurrency is not UNCHANGED:
        changes["key_concurrency"] = (
            None if key_concurrency is None else _cap("key_concurrency", key_concurrency)
        )
    if key_limits is not UNCHANGED:
        changes["key_limits"] = None if key_limits is None else _caps(key_limits)
    if fair_weights is not UNCHANGED:
        changes["fair_weights"] = None if fair_weights is None else _weights(fair_weights)
    await store.set_queue_limits(db, queue, **changes)


def _rate(value: object) -> tuple[int, float]:
    if not isinstance(value, str):
        raise ValidationError("'rate_limit' must be a string such as \"20/s\", or null")
    try:
        limit = rate_limit(value)
    except SettingsError as exc:
        raise ValidationError(f"'rate_limit' {exc}") from None
    return limit.count, limit.period


def _cap(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"'{name}' must be a whole number of running jobs, or null")
    if not 1 <= value <= MAX_KEY_CONCURRENCY:
        raise ValidationError(f"'{name}' must be between 1 and {MAX_KEY_CONCURRENCY}")
    return value


def _entries(name: str, value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ValidationError(f"'{name}' must be an object of key: number, or null")
    if len(value) > MAX_LIMIT_ENTRIES:
        raise ValidationError(f"'{name}' has more than {MAX_LIMIT_ENTRIES} entries")
    for key in value:
        try:
            check_flow_key("key", key)
        except ValidationError as exc:
            raise ValidationError(f"'{name}': key {key!r}: {exc}") from None
    return value


def _caps(value: object) -> dict[str, int]:
    return {k: _cap(f"key_limits.{k}", v) for k, v in _entries("key_limits", value).items()}


def _weights(value: object) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, weight in _entries("fair_weights", value).items():
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ValidationError(f"'fair_weights.{key}' must be a number")
        if not 0 < weight <= MAX_FAIR_WEIGHT or math.isnan(weight):
            raise ValidationError(
                f"'fair_weights.{key}' must be greater than 0 and at most {MAX_FAIR_WEIGHT:g}"
            )
        out[key] = float(weight)
    return out


async def limits(db: Executor, queue: str) -> dict[str, Any]:
    """The queue's limits in the shape set_limits (and PUT /queues/{name}/limits) takes."""
    return await store.queue_limits(db, check_name("queue", queue))


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
