"""What an operator does to jobs and queues, from Python: cancel, retry, retry every dead
job of a queue, pause and resume a queue, and look at queues and workers. The HTTP API
and the CLI call these same functions.

    await aqueue.cancel(pool, job_id)
    await aqueue.retry(pool, job_id)
    await aqueue.pause(pool, "email"); ...; await aqueue.resume(pool, "email")
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aqueue import store
from aqueue.model import Job, ValidationError, check_flow_key, check_name
from aqueue.settings import RateLimit, SettingsError, rate_limit
from aqueue.store import (
    UNCHANGED,
    Executor,
    JobNotFound,
    JobStateError,
    QueueDepth,
    QueueInfo,
    WorkerInfo,
)

__all__ = [
    "JobNotFound",
    "JobStateError",
    "cancel",
    "check_limits",
    "depths",
    "limits",
    "pause",
    "queues",
    "resume",
    "retry",
    "retry_dead",
    "set_limits",
    "set_rate_limit",
    "sync_code_limits",
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
# a tenant's jobs are spaced 1/weight apart on its clock: a weight near 0 (1e-320) would
# overflow that float8 and refuse every enqueue of the tenant
MIN_FAIR_WEIGHT = 1 / MAX_FAIR_WEIGHT
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
    (default 1). An empty key_limits or fair_weights is None. Raises ValidationError
    naming the first bad value; then nothing is changed."""
    check_name("queue", queue)
    given = check_limits(
        rate_limit=rate_limit,
        key_concurrency=key_concurrency,
        key_limits=key_limits,
        fair_weights=fair_weights,
    )
    changes: dict[str, Any] = {k: v for k, v in given.items() if k != "rate_limit"}
    if "rate_limit" in given:
        rate = given["rate_limit"]
        changes["rate"] = None if rate is None else _rate(rate)
    await store.set_queue_limits(db, queue, **changes)


LIMIT_FIELDS = ("rate_limit", "key_concurrency", "key_limits", "fair_weights")


def check_limits(
    *,
    rate_limit: str | None = UNCHANGED,
    key_concurrency: int | None = UNCHANGED,
    key_limits: Mapping[str, int] | None = UNCHANGED,
    fair_weights: Mapping[str, float] | None = UNCHANGED,
) -> dict[str, Any]:
    """The limits given (as set_limits takes them), checked and normalized: a rate as
    `20/s`, weights as floats, an empty map as None; the ones not given are left out.
    Raises ValidationError naming the first bad value."""
    out: dict[str, Any] = {}
    if rate_limit is not UNCHANGED:
        out["rate_limit"] = None if rate_limit is None else str(_rate_limit(rate_limit))
    if key_concurrency is not UNCHANGED:
        out["key_concurrency"] = (
            None if key_concurrency is None else _cap("key_concurrency", key_concurrency)
        )
    if key_limits is not UNCHANGED:
        out["key_limits"] = None if key_limits is None else _caps(key_limits) or None
    if fair_weights is not UNCHANGED:
        out["fair_weights"] = None if fair_weights is None else _weights(fair_weights) or None
    return out


def _rate_limit(value: object) -> RateLimit:
    if not isinstance(value, str):
        raise ValidationError("'rate_limit' must be a string such as \"20/s\", or null")
    try:
        return rate_limit(value)
    except SettingsError as exc:
        raise ValidationError(f"'rate_limit' {exc}") from None


def _rate(value: object) -> tuple[int, float]:
    limit = _rate_limit(value)
    return limit.count, limit.period


def _cap(name: str, value: object, or_null: str = ", or null") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"'{name}' must be a whole number of running jobs{or_null}")
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
            shown = repr(key) if len(repr(key)) <= 60 else repr(key)[:56] + "...'"
            raise ValidationError(f"'{name}' has a bad key {shown}: {exc}") from None
    return value


def _caps(value: object) -> dict[str, int]:
    entries = _entries("key_limits", value)
    return {k: _cap(f"key_limits.{k}", v, "") for k, v in entries.items()}


def _weights(value: object) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, weight in _entries("fair_weights", value).items():
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ValidationError(f"'fair_weights.{key}' must be a number")
        if not MIN_FAIR_WEIGHT <= weight <= MAX_FAIR_WEIGHT:  # NaN fails it too
            raise ValidationError(
                f"'fair_weights.{key}' must be at least {MIN_FAIR_WEIGHT:g} and at most "
                f"{MAX_FAIR_WEIGHT:g}"
            )
        out[key] = float(weight)
    return out


async def limits(db: Executor, queue: str) -> dict[str, Any]:
    """The queue's limits in the shape set_limits (and PUT /queues/{name}/limits) takes."""
    return await store.queue_limits(db, check_name("queue", queue))


async def sync_code_limits(db: Executor, declared: Mapping[str, Mapping[str, Any]]) -> None:
    """The limits declared in code (registry.limits): each queue's fields named there are
    set, its others left as they are (as set over HTTP or the CLI)."""
    for queue, fields in declared.items():
        await set_limits(db, queue, **fields)


async def queues(db: Executor, heartbeat_seconds: float = 10.0) -> list[QueueInfo]:
    """Every queue with its depth by status, paused flag, oldest pending age, attempts
    completed and failed over the last minute, and the live workers serving it."""
    return await store.queue_overview(
        db, recent_seconds=60.0, lost_after_seconds=LOST_AFTER_HEARTBEATS * heartbeat_seconds
    )


async def depths(db: Executor, queues: Sequence[str] = ()) -> list[QueueDepth]:
    """What an autoscaler needs, in one cheap statement: per queue, the jobs due and
    waiting for a worker (`pending`) and the age of the oldest (`oldest_pending_seconds`).
    The queues named come back even with nothing due; with none named, every queue with
    due jobs or a stored state (paused, limits).

        [d] = await aqueue.control.depths(pool, ["email"])
        wanted_workers = math.ceil(d.pending / 100)
    """
    for queue in queues:
        check_name("queue", queue)
    return await store.queue_due_depth(db, queues)


async def workers(db: Executor, heartbeat_seconds: float = 10.0) -> list[WorkerInfo]:
    """Every aqueue process seen lately: alive, lost (silent for three heartbeats) or
    stopped."""
    return await store.list_workers(db, LOST_AFTER_HEARTBEATS * heartbeat_seconds)
