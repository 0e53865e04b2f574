"""The producer API: put jobs on a queue from Python, alone or in the caller's own
transaction (pass the asyncpg connection that holds it: the job exists only if that
transaction commits).

    job = await enqueue(pool, "email.send", {"to": "a@example.com"}, queue="email")
    async with conn.transaction():
        await conn.execute("INSERT INTO orders ...")
        await enqueue(conn, "order.ship", {"order": 42})   # commits with the order
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aqueue import store
from aqueue.model import (
    MAX_ATTEMPTS_LIMIT,
    Job,
    JobSpec,
    ValidationError,
    check_name,
)
from aqueue.store import Executor


def _checked(spec: JobSpec) -> JobSpec:
    check_name("type", spec.type)
    check_name("queue", spec.queue)
    if not 1 <= spec.max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise ValidationError(f"max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}")
    if spec.run_after is not None and spec.run_after.tzinfo is None:
        raise ValidationError("run_after needs a time zone (a naive datetime is ambiguous)")
    return spec


async def enqueue(
    db: Executor,
    type: str,
    payload: Any = None,
    *,
    queue: str = "default",
    priority: int = 0,
    run_after: datetime | None = None,
    max_attempts: int = 5,
    idempotency_key: str | None = None,
) -> Job:
    """Enqueue one job in one round trip and return it. With an idempotency key that
    already names a job, that job is returned instead (also under concurrent calls)."""
    spec = JobSpec(
        type=type,
        payload={} if payload is None else payload,
        queue=queue,
        priority=priority,
        run_after=run_after,
        max_attempts=max_attempts,
        idempotency_key=idempotency_key,
    )
    job, _created = await store.insert_job(db, _checked(spec))
    return job


async def enqueue_many(db: Executor, specs: Sequence[JobSpec]) -> list[uuid.UUID]:
    """Enqueue a batch in one statement (one NOTIFY per queue); returns the ids in order."""
    return await store.insert_jobs(db, [_checked(s) for s in specs])
