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
from aqueue.metrics import Metrics
from aqueue.model import Job, JobSpec, check_spec, check_specs
from aqueue.store import Executor


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
    timeout_seconds: float | None = None,
    depends_on: Sequence[uuid.UUID] = (),
    concurrency_key: str | None = None,
    fair_key: str | None = None,
) -> Job:
    """Enqueue one job in one round trip and return it. With an idempotency key that
    already names a job, that job is returned instead (also under concurrent calls).
    Raises ValidationError for a field aqueue cannot store; the payload is checked by
    PostgreSQL only (the HTTP API checks its size and content first).

    `timeout_seconds`: the attempt's time limit (else the task's own, if any).
    `depends_on`: job ids that must all COMPLETE before this one starts; if one ends DEAD
    or CANCELLED, this one is CANCELLED (UnknownDependency for an id that is no job).
    `concurrency_key`: at most the queue's cap (`key_concurrency`, `key_limits`) of jobs
    with this key run at once, across every worker.
    `fair_key`: the tenant the job counts for; tenants share the queue by `fair_weights`
    (not with `depends_on`). Both: 1 to 200 characters; see control.set_limits."""
    spec = JobSpec(
        type=type,
        payload={} if payload is None else payload,
        queue=queue,
        priority=priority,
        run_after=run_after,
        max_attempts=max_attempts,
        idempotency_key=idempotency_key,
        timeout_seconds=timeout_seconds,
        depends_on=tuple(depends_on),
        concurrency_key=concurrency_key,
        fair_key=fair_key,
    )
    job, _created = await submit(db, spec)
    return job


async def enqueue_many(db: Executor, specs: Sequence[JobSpec]) -> list[uuid.UUID]:
    """Enqueue a batch in one statement (one NOTIFY per queue); returns the ids in order."""
    return await submit_many(db, specs)


# The gate: every enqueue (Python, HTTP, CLI, the scheduler) passes through one of these
# two, so that what must hold for every job (validation, counting) is done once. With a
# `metrics` (a served process's: the API passes its app's), the jobs stored are counted
# (jobs_enqueued_total; an idempotent repeat stores nothing), once the statement returns.


async def submit(db: Executor, spec: JobSpec, metrics: Metrics | None = None) -> tuple[Job, bool]:
    """Store one job; returns it and whether it is new (False: its idempotency key named
    an existing job, which is returned instead)."""
    checked = check_spec(spec)
    job, created = await store.insert_job(db, checked)
    if metrics is not None and created:
        metrics.count_enqueued(checked.queue, checked.type)
    return job, created


async def submit_many(
    db: Executor, specs: Sequence[JobSpec], metrics: Metrics | None = None
) -> list[uuid.UUID]:
    checked = check_specs(specs)
    if metrics is None:
        return await store.insert_jobs(db, checked)
    inserted = await store.insert_jobs_created(db, checked)
    counts: dict[tuple[str, str], int] = {}
    for spec, (_id, created) in zip(checked, inserted, strict=True):
        if created:
            counts[(spec.queue, spec.type)] = counts.get((spec.queue, spec.type), 0) + 1
    for (queue, type), n in counts.items():
        metrics.count_enqueued(queue, type, n)
    return [job_id for job_id, _created in inserted]
