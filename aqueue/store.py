"""Every SQL statement about jobs runs here, and only here. The statements themselves
live in sql/queries.sql under `-- name: x --` headers, loaded once at import."""

from __future__ import annotations

import contextlib
import operator
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from aqueue.cron import Schedule, ScheduleSpec
from aqueue.db import as_stored, sql_dir
from aqueue.model import FINAL_STATUSES, Job, JobSpec, JobStatus, lease_salt, uuid7, uuid7s
from aqueue.settings import RateLimit


class Executor(Protocol):
    """An asyncpg Pool or Connection: both run a statement on one connection."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...
    async def fetchrow(self, query: str, *args: Any) -> Any: ...
    async def fetchval(self, query: str, *args: Any) -> Any: ...
    async def execute(self, query: str, *args: Any) -> str: ...


def load_queries(text: str) -> dict[str, str]:
    """The named statements; `{{name}}` in one stands for the named fragment's text, so
    that two statements sharing a part (the claim's lease, say) share one text of it."""
    queries: dict[str, str] = {}
    parts = re.split(r"^-- name: ([a-z_]+) --\s*$", text, flags=re.MULTILINE)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        queries[name] = body.strip()

    def expand(match: re.Match[str]) -> str:
        return _without_comments(queries[match[1]])

    return {name: _FRAGMENT.sub(expand, body) for name, body in queries.items()}


_FRAGMENT = re.compile(r"\{\{([a-z_]+)\}\}")


def _without_comments(fragment: str) -> str:
    # its header comment says what it is for; inside a statement it only takes room
    lines = fragment.splitlines()
    while lines and lines[0].startswith("--"):
        lines.pop(0)
    return "\n".join(lines)


Q = load_queries((sql_dir() / "queries.sql").read_text())


# --- producing --------------------------------------------------------------------------


async def insert_job(db: Executor, spec: JobSpec) -> tuple[Job, bool]:
    """Insert one job; returns (job, created). An idempotent repeat returns the existing
    job (also one that finished and moved to the history) and created=False. Concurrent
    callers with one key all get the same job."""
    args = (
        uuid7(),
        spec.type,
        spec.payload,
        spec.queue,
        spec.priority,
        spec.run_after,
        spec.max_attempts,
        spec.timeout_seconds,
        spec.idempotency_key,
    )
    if spec.depends_on:
        return await _insert_dependent_job(db, spec, args)
    if spec.concurrency_key is not None or spec.fair_key is not None:
        return await _insert_flow_job(db, spec, args[0])
    if spec.idempotency_key is None:
        row = await db.fetchrow(Q["insert_job"], *args[:8])
        return _new_job(args[0], spec, row), True
    # Two tries: the existing job can vanish between the conflict and the read only if
    # retention deleted it (and its key) in between; then the second insert succeeds.
    for _ in range(2):
        row = await db.fetchrow(Q["insert_job_keyed"], *args)
        if row is not None:
            return _new_job(args[0], spec, row), True
        row = await db.fetchrow(Q["job_by_key"], spec.idempotency_key)
        if row is not None:
            return Job.from_record(row), False
    raise RuntimeError(f"could not insert or read the job with key {spec.idempotency_key!r}")


def _new_job(job_id: uuid.UUID, spec: JobSpec, times: Mapping[str, Any]) -> Job:
    """The job just inserted: the spec's fields as the columns store them, and the times
    the database gave it (the insert returns only those)."""
    timeout = spec.timeout_seconds
    return Job(
        id=job_id,
        type=spec.type,
        payload=as_stored(spec.payload),
        status=JobStatus.PENDING,
        queue=spec.queue,
        priority=spec.priority,
        attempts=0,
        max_attempts=spec.max_attempts,
        run_after=times["run_after"],
        locked_by=None,
        locked_at=None,
        last_error=None,
        idempotency_key=spec.idempotency_key,
        result=None,
        created_at=times["created_at"],
        updated_at=times["updated_at"],
        started_at=None,
        finished_at=None,
        timeout_seconds=None if timeout is None else float(timeout),
    )


async def _insert_flow_job(db: Executor, spec: JobSpec, job_id: uuid.UUID) -> tuple[Job, bool]:
    for _ in range(2):  # as in insert_job
        rows = await db.fetch(Q["insert_jobs_flow"], [_batch_row(spec, job_id)])
        if rows:
            return Job.from_record(rows[0]), True
        row = await db.fetchrow(Q["job_by_key"], spec.idempotency_key)
        if row is not None:
            return Job.from_record(row), False
    raise RuntimeError(f"could not insert or read the job with key {spec.idempotency_key!r}")


def _batch_row(spec: JobSpec, job_id: uuid.UUID) -> dict[str, Any]:
    row = {
        "id": job_id.hex,
        "type": spec.type,
        "payload": spec.payload,
        "queue": spec.queue,
        "priority": spec.priority,
        "run_after": None if spec.run_after is None else spec.run_after.isoformat(),
        "max_attempts": spec.max_attempts,
        "idempotency_key": spec.idempotency_key,
        "timeout_seconds": spec.timeout_seconds,
    }
    if spec.concurrency_key is not None or spec.fair_key is not None:
        row["concurrency_key"] = spec.concurrency_key
        row["fair_key"] = spec.fair_key
    return row


# From this many jobs on, a batch without idempotency keys or flow keys goes in by binary
# COPY (four round trips: BEGIN, COPY, NOTIFY, COMMIT) instead of one INSERT of a JSON
# array that PostgreSQL must parse back into rows: measured in bench (enqueue_batch).
COPY_MIN_BATCH = 64
_COPY_COLUMNS = (
    "id",
    "type",
    "payload",
    "queue",
    "priority",
    "effective_priority",
    "max_attempts",
    "timeout_seconds",
)


async def _copy_jobs(db: Executor, specs: Sequence[JobSpec], ids: Sequence[uuid.UUID]) -> None:
    """A batch by COPY, with one NOTIFY per queue, in one transaction (so one durable
    commit, and the NOTIFY delivered only if the jobs are). A job without run_after takes
    the column's default, the database's now(), as the INSERT gives it; COPY cannot say
    coalesce, so jobs with one go in by a second COPY of the same transaction."""
    due, later = [], []
    for spec, job_id in zip(specs, ids, strict=True):
        row = (
            job_id,
            spec.type,
            spec.payload,
            spec.queue,
            spec.priority,
            spec.priority,
            spec.max_attempts,
            spec.timeout_seconds,
        )
        if spec.run_after is None:
            due.append(row)
        else:
            later.append((*row, spec.run_after))
    async with transaction(db) as conn:
        if due:
            await conn.copy_records_to_table("jobs", records=due, columns=_COPY_COLUMNS)
        if later:
            columns = (*_COPY_COLUMNS, "run_after")
            await conn.copy_records_to_table("jobs", records=later, columns=columns)
        await conn.execute(Q["notify_queues"], sorted({spec.queue for spec in specs}))


async def insert_jobs(db: Executor, specs: Sequence[JobSpec]) -> list[uuid.UUID]:
    """Insert a batch in one statement; returns the job ids in the order given (for an
    idempotent repeat, the existing job's id)."""
    return [job_id for job_id, _created in await insert_jobs_created(db, specs)]


async def insert_jobs_created(
    db: Executor, specs: Sequence[JobSpec]
) -> list[tuple[uuid.UUID, bool]]:
    """insert_jobs, each id with whether that job is new (False: an idempotent repeat)."""
    if not specs:
        return []
    if any(s.depends_on for s in specs):
        # Each job with dependencies locks its parents: one at a time, in one
        # transaction, so that the batch still commits (or fails) as a whole.
        async with transaction(db) as conn:
            out = []
            for s in specs:
                job, created = await insert_job(conn, s)
                out.append((job.id, created))
            return out
    ids = uuid7s(len(specs))
    keyed = any(s.idempotency_key is not None for s in specs)
    flow = any(s.concurrency_key is not None or s.fair_key is not None for s in specs)
    if not keyed and not flow and len(specs) >= COPY_MIN_BATCH:
        await _copy_jobs(db, specs, ids)
        return [(job_id, True) for job_id in ids]
    rows = [_batch_row(s, job_id) for s, job_id in zip(specs, ids, strict=True)]
    query = "insert_jobs_flow" if flow else "insert_jobs_keyed" if keyed else "insert_jobs"
    returned = await db.fetch(Q[query], rows)
    if len(returned) == len(specs):
        return [(job_id, True) for job_id in ids]
    inserted = {r["id"] for r in returned}
    keys = [s.idempotency_key for s, i in zip(specs, ids, strict=True) if i not in inserted]
    existing = {r["idempotency_key"]: r["id"] for r in await db.fetch(Q["job_ids_by_keys"], keys)}
    out = []
    for spec, new_id in zip(specs, ids, strict=True):
        if new_id in inserted:
            out.append((new_id, True))
        elif spec.idempotency_key in existing:
            out.append((existing[spec.idempotency_key], False))
        else:
            raise RuntimeError(
                f"job with key {spec.idempotency_key!r} was neither inserted nor found"
            )
    return out


# --- reading ----------------------------------------------------------------------------


async def get_job(db: Executor, job_id: uuid.UUID) -> Job | None:
    row = await db.fetchrow(Q["get_job"], job_id)
    return None if row is None else Job.from_record(row)


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    # where the next page starts (below this id) when more may follow, else None
    next_after: uuid.UUID | None


# Statuses whose listing an index finds, however rare they are: list_jobs needs no bound.
INDEXED_STATUSES = frozenset({JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.RUNNING})


async def list_jobs(
    db: Executor,
    *,
    status: JobStatus | None = None,
    queue: str | None = None,
    type: str | None = None,
    after: uuid.UUID | None = None,
    limit: int = 50,
    scan_limit: int | None = None,
) -> JobPage:
    """Jobs newest first, below `after`, from both tables (or the one that holds jobs of
    `status`). With `scan_limit`, a filter no index serves examines at most that many
    jobs: the page may then be short, even empty, with a next_after to continue from."""
    filters = (status.value if status else None, queue, type, after, limit + 1)
    table = _LISTING_TABLES[status]
    bounded = scan_limit is not None and (
        queue is not None
        or type is not None
        or (status is not None and status not in INDEXED_STATUSES)
    )
    if not bounded:
        rows = await db.fetch(_LIST_JOBS[table], *filters)
        jobs = [Job.from_record(r) for r in rows[:limit]]
        return JobPage(jobs, jobs[-1].id if len(rows) > limit else None)
    rows = await db.fetch(_LIST_JOBS_BOUNDED[table], *filters, scan_limit)
    matched = [r for r in rows if r["matched"]]
    jobs = [Job.from_record(r) for r in matched[:limit]]
    if len(matched) > limit:
        return JobPage(jobs, jobs[-1].id)
    # the scan stopped at its limit: continue below the last job it examined
    cut = bool(rows) and rows[-1]["examined"] == scan_limit
    return JobPage(jobs, rows[-1]["id"] if cut else None)


# Where jobs of a status live (sql/005_history.sql): the listing reads only that table.
_LISTING_TABLES: dict[JobStatus | None, str] = {
    None: "all_jobs",
    **{s: ("jobs_history" if s in FINAL_STATUSES else "jobs") for s in JobStatus},
}
_LIST_JOBS = {t: re.sub(r"\ball_jobs\b", t, Q["list_jobs"]) for t in set(_LISTING_TABLES.values())}
_LIST_JOBS_BOUNDED = {
    t: re.sub(r"\ball_jobs\b", t, Q["list_jobs_bounded"]) for t in set(_LISTING_TABLES.values())
}


@dataclass(frozen=True)
class JobEvent:
    at: datetime
    status: JobStatus
    attempt: int
    worker: str | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "status": self.status.value,
            "attempt": self.attempt,
            "worker": self.worker,
            "error": self.error,
        }


async def job_events(db: Executor, job_id: uuid.UUID) -> list[JobEvent]:
    rows = await db.fetch(Q["job_events"], job_id)
    return [
        JobEvent(r["at"], JobStatus(r["status"]), r["attempt"], r["worker"], r["error"])
        for r in rows
    ]


async def ping(db: Executor) -> None:
    await db.fetchval(Q["ping"])


# --- working ----------------------------------------------------------------------------


# The two classes made for every job on the hot path are plain slotted classes: a frozen
# dataclass sets each field through object.__setattr__, which cost a worker more CPU per
# job than decoding the claim's row. Treat them as read-only all the same.
@dataclass(slots=True, eq=False)
class ClaimedJob:
    """What a worker needs to run one attempt of a job, and the lease that fences it."""

    id: uuid.UUID
    type: str
    payload: Any
    queue: str
    priority: int
    attempt: int
    max_attempts: int
    lease_token: uuid.UUID
    # times as epoch seconds (see the claim statement), as datetimes through the properties
    created_epoch: float
    run_after_epoch: float
    # when the claim made it RUNNING (the database's clock)
    started_epoch: float

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created_epoch, UTC)

    @property
    def run_after(self) -> datetime:
        return datetime.fromtimestamp(self.run_after_epoch, UTC)

    @property
    def started_at(self) -> datetime:
        return datetime.fromtimestamp(self.started_epoch, UTC)

    # seconds this attempt may run (None: the task's default, if any)
    timeout_seconds: float | None = None


async def claim(
    db: Executor, queue: str, limit: int, worker_id: str, lease_seconds: float
) -> list[ClaimedJob]:
    """Lease up to `limit` runnable jobs of `queue`. A first attempt's claim skips the WAL
    flush only on a connection with synchronous_commit off (the claim loop's own, made
    with db.CLAIM_SERVER_SETTINGS); elsewhere every claim commits durably."""
    rows = await db.fetch(Q["claim"], queue, limit, worker_id, lease_seconds, lease_salt())
    # the last column only made the transaction durable (see the statement)
    return [ClaimedJob(*r[:-1]) for r in rows]


async def seconds_until_next_job(db: Executor, queue: str) -> float | None:
    """None when the queue holds no runnable job at all."""
    value = await db.fetchval(Q["seconds_until_next_job"], queue)
    return None if value is None else float(value)


@dataclass(slots=True, eq=False)
class Outcome:
    """The end of one attempt: COMPLETED (with result), RETRY (in retry_in seconds) or DEAD."""

    job: ClaimedJob
    status: JobStatus
    result: Any = None
    error: str | None = None
    retry_in: float = 0.0

    @property
    def job_id(self) -> uuid.UUID:
        return self.job.id

    @property
    def lease_token(self) -> uuid.UUID:
        return self.job.lease_token


def _by_id(outcomes: Sequence[Outcome]) -> list[Outcome]:
    # Multi-row statements lock rows in id order, so that two of them never deadlock.
    return sorted(outcomes, key=_JOB_ID)


_JOB_ID = operator.attrgetter("job.id")


async def record_outcomes(
    db: Executor, outcomes: Sequence[Outcome], worker_id: str
) -> set[uuid.UUID]:
    """Write a batch of outcomes in one statement; returns the lease tokens accepted. A
    token missing from the answer lost its lease: its outcome was discarded."""
    if not outcomes:
        return set()
    ordered = _by_id(outcomes)
    jobs = [o.job for o in ordered]
    rows = await db.fetch(
        Q["record_outcomes"],
        [j.id for j in jobs],
        [j.lease_token for j in jobs],
        [o.status.value for o in ordered],
        [o.result for o in ordered],
        [o.error for o in ordered],
        [o.retry_in for o in ordered],
        worker_id,
    )
    return {r[0] for r in rows}


async def restore_forgotten(
    db: Executor, outcomes: Sequence[Outcome], worker_id: str, lease_seconds: float
) -> set[uuid.UUID]:
    """Write back attempts whose claim PostgreSQL forgot in a crash (see the statement):
    each with its outcome, or as RUNNING under its lease when the outcome's status is
    RUNNING (the handler still runs). Returns the lease tokens restored."""
    if not outcomes:
        return set()
    ordered = _by_id(outcomes)
    async with transaction(db) as conn:
        rows = await conn.fetch(
            Q["restore_forgotten"],
            [o.job_id for o in ordered],
            [o.lease_token for o in ordered],
            [o.job.attempt for o in ordered],
            [o.job.started_epoch for o in ordered],
            [o.status.value for o in ordered],
            [o.result for o in ordered],
            [o.error for o in ordered],
            [o.retry_in for o in ordered],
            worker_id,
            lease_seconds,
        )
        await settle(conn, [Ended.of(r) for r in rows])
    restored = {r["id"] for r in rows}
    return {o.lease_token for o in ordered if o.job_id in restored}


@dataclass(frozen=True)
class Renewal:
    """What a heartbeat found, by lease token: renewed, busy (locked by another statement
    right now; still ours, renewed next round), and the rest, lost."""

    renewed: set[uuid.UUID]
    busy: set[uuid.UUID]


async def extend_leases(
    db: Executor, leases: Sequence[tuple[uuid.UUID, uuid.UUID]], lease_seconds: float
) -> Renewal:
    """Renew (job id, lease token) pairs without waiting for any row lock."""
    if not leases:
        return Renewal(set(), set())
    ordered = sorted(leases)
    rows = await db.fetch(
        Q["extend_leases"], [i for i, _ in ordered], [t for _, t in ordered], lease_seconds
    )
    return Renewal(
        renewed={r["token"] for r in rows if r["renewed"]},
        busy={r["token"] for r in rows if r["ours"] and not r["renewed"]},
    )


@dataclass(frozen=True)
class Released:
    job_id: uuid.UUID
    status: JobStatus
    queue: str


async def release_jobs(
    db: Executor,
    leases: Sequence[tuple[uuid.UUID, uuid.UUID]],
    reason: str,
    worker_id: str,
    *,
    free_releases: int,
    backoff_base: float,
    backoff_cap: float,
) -> list[Released]:
    """Hand unfinished jobs back to RETRY, due now, the attempt not counted for the first
    `free_releases` releases of a job (then counted, after the backoff); wake the workers
    of their queues."""
    if not leases:
        return []
    ordered = sorted(leases)
    async with transaction(db) as conn:
        rows = await conn.fetch(
            Q["release_jobs"],
            [i for i, _ in ordered],
            [t for _, t in ordered],
            reason,
            worker_id,
            free_releases,
            backoff_base,
            backoff_cap,
        )
        await settle(conn, [Ended.of(r) for r in rows])
    released = [Released(r["id"], JobStatus(r["status"]), r["queue"]) for r in rows]
    await notify_queues(db, {r.queue for r in released if r.status is JobStatus.RETRY})
    return released


async def notify_queues(db: Executor, queues: set[str]) -> None:
    if queues:
        await db.execute(Q["notify_queues"], sorted(queues))


@dataclass(frozen=True)
class Reclaimed:
    job_id: uuid.UUID
    status: JobStatus
    queue: str


async def reclaim_expired(
    db: Executor, limit: int, reaper_id: str, backoff_base: float, backoff_cap: float
) -> list[Reclaimed]:
    """Expired leases back to RETRY after the retry backoff (or DEAD); at most `limit`."""
    async with transaction(db) as conn:
        rows = await conn.fetch(Q["reclaim_expired"], limit, reaper_id, backoff_base, backoff_cap)
        await settle(conn, [Ended.of(r) for r in rows])
    reclaimed = [Reclaimed(r["id"], JobStatus(r["status"]), r["queue"]) for r in rows]
    await notify_queues(db, {r.queue for r in reclaimed if r.status is JobStatus.RETRY})
    return reclaimed


# --- transactions -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def transaction(db: Executor) -> AsyncIterator[Any]:
    """A transaction on `db`: a pool lends a connection for it; a connection opens one (a
    savepoint when it is already in one)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        assert isinstance(db, asyncpg.Connection)
        async with db.transaction():
            yield db


# --- what a job's end means for others --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ended:
    """A job some statement ended (or moved on), with what follows from it."""

    job_id: uuid.UUID
    status: JobStatus
    has_dependents: bool
    notify_finish: bool

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Ended:
        return cls(row["id"], JobStatus(row["status"]), row["has_dependents"], row["notify_finish"])


async def settle(db: Executor, ended: Sequence[Ended]) -> None:
    """Release the dependents of COMPLETED jobs, cancel those of DEAD or CANCELLED ones
    (and theirs), and notify whoever waits for a finished job. Run it in the transaction
    of the statement that ended them: a crash in between must not leave dependents
    waiting for ever."""
    completed = [e.job_id for e in ended if e.has_dependents and e.status is JobStatus.COMPLETED]
    failed = [
        e for e in ended if e.has_dependents and e.status in (JobStatus.DEAD, JobStatus.CANCELLED)
    ]
    watched = [e.job_id for e in ended if e.notify_finish and e.status in FINAL_STATUSES]
    if completed:
        await db.fetchval(Q["release_dependents"], sorted(completed))
    ids, statuses = [e.job_id for e in failed], [e.status.value for e in failed]
    while ids:
        rows = await db.fetch(Q["cancel_dependents"], ids, statuses)
        watched += [r["id"] for r in rows if r["notify_finish"]]
        # A job that began to depend on one of these while the statement ran is not in its
        # snapshot; the next statement sees it (and finds nothing more, almost always).
        ids = [r["id"] for r in rows]
        statuses = [JobStatus.CANCELLED.value] * len(ids)
    if watched:
        await db.execute(Q["notify_finished"], watched)


async def finish_with_consequences(
    db: Executor, outcomes: Sequence[Outcome], worker_id: str
) -> set[uuid.UUID]:
    """record_outcomes for jobs that others depend on or someone waits for (it refuses
    them): each outcome with its consequences (dependents released or cancelled, waiters
    notified), in one transaction per job. Returns the lease tokens accepted; the
    others were refused by the lease."""
    accepted: set[uuid.UUID] = set()
    for outcome in _by_id(outcomes):
        async with transaction(db) as conn:
            row = await conn.fetchrow(
                Q["finish_with_consequences"],
                outcome.job_id,
                outcome.lease_token,
                outcome.status.value,
                outcome.result,
                outcome.error,
                outcome.retry_in,
                worker_id,
            )
            if row is None:
                continue
            await settle(conn, [Ended.of(row)])
            accepted.add(outcome.lease_token)
    return accepted


class UnknownDependency(LookupError):
    """A job named in depends_on does not exist."""


async def _insert_dependent_job(
    db: Executor, spec: JobSpec, args: tuple[Any, ...]
) -> tuple[Job, bool]:
    parents = sorted(set(spec.depends_on))
    async with transaction(db) as conn:
        if spec.idempotency_key is not None:
            row = await conn.fetchrow(Q["job_by_key"], spec.idempotency_key)
            if row is not None:
                return Job.from_record(row), False
        # Lock the parents still in jobs and flag them (their end then releases or
        # cancels this job), then read every parent's status: a parent that finished
        # meanwhile is found in jobs_history by this later statement.
        await conn.execute(Q["mark_parents"], parents)
        found = {
            r["id"]: JobStatus(r["status"]) for r in await conn.fetch(Q["job_statuses"], parents)
        }
        unknown = [str(p) for p in parents if p not in found]
        if unknown:
            raise UnknownDependency(f"'depends_on' names unknown job(s): {', '.join(unknown)}")
        waiting = [p for p in parents if found[p] is not JobStatus.COMPLETED]
        row = await conn.fetchrow(
            Q["insert_dependent_job"], *args, len(waiting), parents, spec.concurrency_key
        )
        if row is None:  # an idempotency key inserted concurrently: that job it is
            row = await conn.fetchrow(Q["job_by_key"], spec.idempotency_key)
            return Job.from_record(row), False
        failed = next(
            (p for p in parents if found[p] in (JobStatus.DEAD, JobStatus.CANCELLED)), None
        )
        if failed is not None:
            # Its fate is known already: cancelled at once, as its parent's end would have
            # (inserted first, then cancelled: a finished job is never inserted into jobs)
            row = await conn.fetchrow(
                Q["cancel_job"],
                row["id"],
                f"cancelled: job {failed}, which it depends on, ended {found[failed]}",
                None,
                False,
            )
        return Job.from_record(row), True


async def job_dependencies(db: Executor, job_id: uuid.UUID) -> list[uuid.UUID]:
    return [r["parent_id"] for r in await db.fetch(Q["job_dependencies"], job_id)]


# --- operator actions -------------------------------------------------------------------


class JobNotFound(LookupError):
    """No job with this id (never enqueued, or deleted by retention)."""

    def __init__(self, job_id: uuid.UUID) -> None:
        super().__init__(f"no job with id {job_id}")
        self.job_id = job_id


class JobStateError(Exception):
    """The job is in a status that does not allow this action; the message says which."""

    def __init__(self, message: str, job: Job) -> None:
        super().__init__(message)
        self.job = job


class JobNotRetryable(JobStateError):
    """The job exists but is not DEAD or CANCELLED: only those can be retried."""

    def __init__(self, job: Job) -> None:
        super().__init__(
            f"job {job.id} is {job.status.value}: only DEAD or CANCELLED jobs can be retried",
            job,
        )
        self.job_id = job.id
        self.status = job.status


async def cancel_job(
    db: Executor, job_id: uuid.UUID, reason: str = "cancelled by an operator"
) -> Job:
    """CANCEL a pending, delayed, retrying or running job (a running one's worker is told
    and stops its handler; its outcome is refused by the lease). Raises JobNotFound, or
    JobStateError for a job that already finished."""
    async with transaction(db) as conn:
        locked = await conn.fetchrow(Q["lock_job"], job_id)
        if locked is None:
            job = await get_job(conn, job_id)
            if job is None:
                raise JobNotFound(job_id)
            raise JobStateError(f"job {job_id} already finished: it is {job.status}", job)
        # jobs holds no finished job (they move to jobs_history): this one still runs
        running = JobStatus(locked["status"]) is JobStatus.RUNNING
        row = await conn.fetchrow(Q["cancel_job"], job_id, reason, locked["locked_by"], running)
        await settle(conn, [Ended.of(row)])
        return Job.from_record(row)


async def retry_job(db: Executor, job_id: uuid.UUID, by: str | None = None) -> Job:
    """Bring a DEAD or CANCELLED job back as PENDING, due now, with fresh attempts and
    releases, no result and no error; its earlier attempts stay in its events, and this
    retry is a PENDING event with `by` as its worker. Its workers are woken (NOTIFY, as an
    insert does). A finished job is always in jobs_history (the trigger moves any that a
    statement finishes), so that is where it is taken from. Raises JobNotFound or
    JobNotRetryable (with the job's status)."""
    row = await db.fetchrow(Q["retry_job"], job_id, by)
    if row is not None:
        return Job.from_record(row)
    job = await get_job(db, job_id)
    if job is None:
        raise JobNotFound(job_id)
    raise JobNotRetryable(job)


async def retry_dead(
    db: Executor, queue: str, type: str | None = None, *, by: str | None = None,
    batch: int = 1000,
) -> int:  # fmt: skip
    """Retry every DEAD job of `queue` (of `type` when given), `batch` per statement, each
    its own transaction when `db` is a pool; returns how many."""
    total = 0
    after: uuid.UUID | None = None
    while True:
        row = await db.fetchrow(Q["retry_dead"], queue, type, batch, after, by)
        total += row["retried"]
        if row["last_id"] is None:
            return total
        after = row["last_id"]


async def purge_history(
    db: Executor, older_than_seconds: float, batch: int, *, max_batches: int | None = None
) -> int:
    """Retention: delete jobs finished more than `older_than_seconds` ago, with their
    events and keys, `batch` per statement (each its own transaction on a pool) until none
    is left or `max_batches` ran; returns how many."""
    total = 0
    done = 0
    while max_batches is None or done < max_batches:
        deleted = await db.fetchval(Q["purge_history"], older_than_seconds, batch)
        total += deleted
        done += 1
        if deleted < batch:
            break
    return total


async def watch_job(db: Executor, job_id: uuid.UUID) -> None:
    """Have this job's end notified on the job-finished topic (see Notifier.finished)."""
    await db.execute(Q["watch_job"], job_id)


async def set_queue_paused(db: Executor, queue: str, paused: bool) -> None:
    """Pause (no worker claims from it, also after a restart) or resume a queue, and tell
    every worker at once."""
    await db.fetchrow(Q["set_queue_paused"], queue, paused)


async def paused_queues(db: Executor) -> list[str]:
    return [r["name"] for r in await db.fetch(Q["paused_queues"])]


async def promote_starving(db: Executor, after_seconds: float, limit: int, to: int) -> int:
    """Give jobs due for longer than `after_seconds` the promoted priority `to`."""
    return int(await db.fetchval(Q["promote_starving"], after_seconds, limit, to))


@dataclass(frozen=True)
class QueueInfo:
    name: str
    paused: bool
    depth: dict[str, int]
    oldest_pending_seconds: float | None
    completed_recently: int
    failed_recently: int
    workers: list[str]
    # jobs per period in seconds, when the queue has a rate limit
    rate: tuple[int, float] | None = None
    key_concurrency: int | None = None
    key_limits: dict[str, int] | None = None
    fair_weights: dict[str, float] | None = None
    # jobs with a fair key were enqueued here: it is claimed in fair order
    fair: bool = False

    def limits(self) -> dict[str, Any]:
        """The shape PUT /queues/{name}/limits takes."""
        return {
            "rate_limit": None if self.rate is None else str(RateLimit(*self.rate)),
            "key_concurrency": self.key_concurrency,
            "key_limits": self.key_limits,
            "fair_weights": self.fair_weights,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "paused": self.paused,
            "limits": self.limits(),
            "fair": self.fair,
            "depth": self.depth,
            "oldest_pending_seconds": self.oldest_pending_seconds,
            "completed_last_minute": self.completed_recently,
            "failed_last_minute": self.failed_recently,
            "workers": self.workers,
        }


DEPTH_KEYS = ("pending", "scheduled", "waiting", "retry", "running", "dead", "cancelled")


async def queue_overview(
    db: Executor, recent_seconds: float = 60.0, lost_after_seconds: float = 30.0
) -> list[QueueInfo]:
    rows = await db.fetch(Q["queue_overview"], recent_seconds, lost_after_seconds)
    return [
        QueueInfo(
            name=r["name"],
            paused=r["paused"],
            depth={k: r[k] for k in DEPTH_KEYS},
            oldest_pending_seconds=r["oldest_pending_seconds"],
            completed_recently=r["completed_recently"],
            failed_recently=r["failed_recently"],
            workers=list(r["workers"]),
            rate=None if r["rate_count"] is None else (r["rate_count"], r["rate_period"]),
            key_concurrency=r["key_concurrency"],
            key_limits=r["key_limits"],
            fair_weights=r["fair_weights"],
            fair=r["fair"],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class QueueDepth:
    """A queue as an autoscaler sees it: jobs due and waiting for a worker, and how long
    the oldest of them has waited (0 when none)."""

    name: str
    pending: int
    oldest_pending_seconds: float
    paused: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "oldest_pending_seconds": self.oldest_pending_seconds,
            "paused": self.paused,
        }


async def queue_due_depth(db: Executor, queues: Sequence[str] = ()) -> list[QueueDepth]:
    """The queues named (each, even with nothing due), or every queue with due jobs or a
    stored state when none is named; by name."""
    rows = await db.fetch(Q["queue_due_depth"], list(queues))
    return [
        QueueDepth(r["name"], r["pending"], r["oldest_pending_seconds"], r["paused"]) for r in rows
    ]


@dataclass(frozen=True)
class AttemptStats:
    """Finished attempts per queue and minute: `completed[q][i]` and `failed[q][i]` count
    the minute that begins `i` minutes after `start` (the last one is the current minute,
    still going at `now`). Queues with no finished attempt in the window are left out."""

    start: datetime
    now: datetime
    minutes: int
    completed: dict[str, list[int]]
    failed: dict[str, list[int]]

    def to_json(self) -> dict[str, Any]:
        return {
            "minutes": self.minutes,
            "start": self.start.isoformat(),
            "now": self.now.isoformat(),
            "step_seconds": 60,
            "queues": [
                {"name": name, "completed": self.completed[name], "failed": self.failed[name]}
                for name in sorted(self.completed)
            ],
        }


async def attempt_stats(db: Executor, minutes: int) -> AttemptStats:
    """Completed and failed attempts per queue over the last `minutes` minutes (one
    statement), as dense per-minute series."""
    rows = await db.fetch(Q["attempt_stats"], minutes)
    start: datetime = rows[0]["start"]
    completed: dict[str, list[int]] = {}
    failed: dict[str, list[int]] = {}
    for r in rows:
        if r["queue"] is None:  # the window's bounds alone: nothing finished in it
            continue
        index = int((r["minute"] - start).total_seconds() // 60)
        if not 0 <= index < minutes:
            continue
        completed.setdefault(r["queue"], [0] * minutes)[index] = r["completed"]
        failed.setdefault(r["queue"], [0] * minutes)[index] = r["failed"]
    return AttemptStats(start, rows[0]["now"], minutes, completed, failed)


# --- the registry of live processes ------------------------------------------------------


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    version: str
    roles: list[str]
    queues: dict[str, int]
    running: int
    started_at: datetime
    last_heartbeat: datetime
    stopped_at: datetime | None
    state: str  # alive, lost or stopped

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "roles": self.roles,
            "queues": self.queues,
            "running": self.running,
            "started_at": self.started_at.isoformat(),
            "last_heartbeat": self.last_heartbeat.isoformat(),
            "stopped_at": None if self.stopped_at is None else self.stopped_at.isoformat(),
            "state": self.state,
        }


async def worker_heartbeat(
    db: Executor,
    worker_id: str,
    *,
    host: str,
    pid: int,
    version: str,
    roles: Sequence[str],
    queues: Mapping[str, int],
    running: int,
) -> None:
    await db.execute(
        Q["worker_heartbeat"], worker_id, host, pid, version, list(roles), dict(queues), running
    )


async def worker_stopped(db: Executor, worker_id: str) -> None:
    await db.execute(Q["worker_stopped"], worker_id)


async def list_workers(db: Executor, lost_after_seconds: float) -> list[WorkerInfo]:
    rows = await db.fetch(Q["list_workers"], lost_after_seconds)
    return [
        WorkerInfo(
            id=r["id"],
            host=r["host"],
            pid=r["pid"],
            version=r["version"],
            roles=list(r["roles"]),
            queues=dict(r["queues"]),
            running=r["running"],
            started_at=r["started_at"],
            last_heartbeat=r["last_heartbeat"],
            stopped_at=r["stopped_at"],
            state=r["state"],
        )
        for r in rows
    ]


async def prune_workers(db: Executor, older_than_seconds: float) -> int:
    status = await db.execute(Q["prune_workers"], older_than_seconds)
    return int(status.split()[-1])


@dataclass(frozen=True)
class HotTableStats:
    dead: int
    live: int
    may_vacuum: bool


async def hot_table_stats(db: Executor) -> HotTableStats:
    row = await db.fetchrow(Q["hot_table_stats"])
    return HotTableStats(int(row["dead"]), int(row["live"]), bool(row["may_vacuum"]))


@dataclass(frozen=True)
class QueueGauges:
    queue: str
    due: int  # PENDING or RETRY, due now, not waiting on dependencies
    depth: dict[str, int]  # pending, scheduled, waiting, retry, running (as GET /queues)
    oldest_due_seconds: float  # 0 when nothing is due
    workers_alive: int


GAUGE_DEPTH_KEYS = ("pending", "scheduled", "waiting", "retry", "running")


@dataclass(frozen=True)
class DatabaseGauges:
    """What GET /metrics reads from the database (see the statement metrics_gauges)."""

    queues: list[QueueGauges]
    dead_tuples: int
    live_tuples: int
    jobs_bytes: int
    history_bytes: int
    last_autovacuum: float  # epoch seconds, 0 when never
    last_vacuum: float
    oldest_xmin_age: int  # transactions
    oldest_transaction_seconds: float
    idle_in_transaction: int
    idle_in_transaction_seconds: float


async def database_gauges(db: Executor, lost_after_seconds: float) -> DatabaseGauges:
    """One statement: per-queue depths and live workers, and the bloat guardrails."""
    r = await db.fetchrow(Q["metrics_gauges"], lost_after_seconds)
    names = r["queues"] or []
    columns = {k: r[k] for k in ("due", "oldest_due_seconds", "workers", *GAUGE_DEPTH_KEYS)}
    queues = [
        QueueGauges(
            queue=name,
            due=columns["due"][i],
            depth={k: columns[k][i] for k in GAUGE_DEPTH_KEYS},
            oldest_due_seconds=columns["oldest_due_seconds"][i],
            workers_alive=columns["workers"][i],
        )
        for i, name in enumerate(names)
    ]
    return DatabaseGauges(
        queues=queues,
        dead_tuples=int(r["dead_tuples"]),
        live_tuples=int(r["live_tuples"]),
        jobs_bytes=int(r["jobs_bytes"]),
        history_bytes=int(r["history_bytes"]),
        last_autovacuum=float(r["last_autovacuum"]),
        last_vacuum=float(r["last_vacuum"]),
        oldest_xmin_age=int(r["oldest_xmin_age"]),
        oldest_transaction_seconds=float(r["oldest_transaction_seconds"]),
        idle_in_transaction=int(r["idle_in_transaction"]),
        idle_in_transaction_seconds=float(r["idle_in_transaction_seconds"]),
    )


async def vacuum_jobs(db: Executor) -> None:
    """VACUUM the hot table (it must not run inside a transaction)."""
    await db.execute(Q["vacuum_jobs"])


# --- schedules ---------------------------------------------------------------------------


def _schedule_args(spec: ScheduleSpec) -> tuple[Any, ...]:
    return (
        spec.name,
        spec.cron,
        spec.timezone,
        spec.type,
        spec.payload,
        spec.queue,
        spec.priority,
        spec.max_attempts,
    )


class ScheduleNameTaken(ValueError):
    """Another schedule has this name."""


async def insert_schedule(
    db: Executor, spec: ScheduleSpec, next_run_at: datetime, source: str = "api"
) -> Schedule:
    try:
        row = await db.fetchrow(
            Q["insert_schedule"],
            *_schedule_args(spec),
            spec.enabled,
            spec.catch_up,
            source,
            next_run_at,
        )
    except asyncpg.UniqueViolationError:
        raise ScheduleNameTaken(f"a schedule named {spec.name!r} exists already") from None
    return Schedule.from_record(row)


async def upsert_code_schedule(db: Executor, spec: ScheduleSpec, next_run_at: datetime) -> Schedule:
    row = await db.fetchrow(
        Q["upsert_code_schedule"], *_schedule_args(spec), spec.catch_up, next_run_at
    )
    return Schedule.from_record(row)


async def list_schedules(db: Executor) -> list[Schedule]:
    return [Schedule.from_record(r) for r in await db.fetch(Q["list_schedules"])]


async def get_schedule(db: Executor, schedule_id: uuid.UUID) -> Schedule | None:
    row = await db.fetchrow(Q["get_schedule"], schedule_id)
    return None if row is None else Schedule.from_record(row)


async def update_schedule(
    db: Executor, schedule_id: uuid.UUID, spec: ScheduleSpec, next_run_at: datetime
) -> Schedule | None:
    try:
        row = await db.fetchrow(
            Q["update_schedule"],
            schedule_id,
            *_schedule_args(spec),
            spec.enabled,
            spec.catch_up,
            next_run_at,
        )
    except asyncpg.UniqueViolationError:
        raise ScheduleNameTaken(f"a schedule named {spec.name!r} exists already") from None
    return None if row is None else Schedule.from_record(row)


async def delete_schedule(db: Executor, schedule_id: uuid.UUID) -> bool:
    return await db.fetchrow(Q["delete_schedule"], schedule_id) is not None


async def lock_due_schedules(db: Executor, limit: int) -> list[Schedule]:
    """Due schedules locked for this transaction (SKIP LOCKED: one scheduler each)."""
    return [Schedule.from_record(r) for r in await db.fetch(Q["lock_due_schedules"], limit)]


async def advance_schedule(
    db: Executor, schedule_id: uuid.UUID, next_run_at: datetime, ran_at: datetime | None
) -> None:
    await db.execute(Q["advance_schedule"], schedule_id, next_run_at, ran_at)


async def seconds_until_next_schedule(db: Executor) -> float | None:
    value = await db.fetchval(Q["next_schedule_due"])
    return None if value is None else float(value)


async def database_now(db: Executor) -> datetime:
    """The database's clock (the transaction's start inside one): every scheduler
    reads the same clock, whatever the hosts' clocks say."""
    value: datetime = await db.fetchval(Q["database_now"])
    return value


# --- the API's rate limit ----------------------------------------------------------------


async def take_rate_tokens(
    db: Executor, client: str, wanted: int, interval: float, burst: float
) -> int:
    """Spend up to `wanted` requests of `client`'s budget; returns how many it allowed."""
    return int(await db.fetchval(Q["take_rate_tokens"], client, interval, burst, wanted))


async def rate_retry_after(db: Executor, client: str, interval: float, burst: float) -> float:
    value = await db.fetchval(Q["rate_retry_after"], client, interval, burst)
    return 0.0 if value is None else float(value)


async def prune_rate_limits(db: Executor) -> None:
    await db.execute(Q["prune_rate_limits"])


# --- flow control: queue rate limits, key caps, fair share ------------------------------


async def claim_flow(
    db: Executor, queue: str, limit: int, worker_id: str, lease_seconds: float
) -> list[ClaimedJob]:
    """claim for a queue with a rate limit, key caps or fair keys: at most what its
    bucket allows, no key past its cap, tenants in fair order."""
    rows = await db.fetch(Q["claim_flow"], queue, limit, worker_id, lease_seconds, lease_salt())
    return [ClaimedJob(*r) for r in rows]


async def claim_fair(
    db: Executor, queue: str, limit: int, worker_id: str, lease_seconds: float
) -> list[ClaimedJob]:
    """claim_flow for a queue without key caps: its rate limit and fair order only."""
    rows = await db.fetch(Q["claim_fair"], queue, limit, worker_id, lease_seconds, lease_salt())
    return [ClaimedJob(*r) for r in rows]


@dataclass(frozen=True)
class QueueFlow:
    """A queue claimed with claim_flow (capped) or claim_fair; its rate limit (count per
    period), if any."""

    count: int | None
    period: float | None
    # seconds until the bucket allows one more job (0 without a rate limit)
    wait: float
    capped: bool = True

    @property
    def claim(self) -> Callable[..., Awaitable[list[ClaimedJob]]]:
        return claim_flow if self.capped else claim_fair


async def queue_flow(db: Executor, queue: str) -> QueueFlow | None:
    """None: the plain claim serves this queue."""
    row = await db.fetchrow(Q["queue_flow"], queue)
    if row is None:
        return None
    return QueueFlow(row["rate_count"], row["rate_period"], row["wait"] or 0.0, row["capped"])


UNCHANGED: Any = object()


async def set_queue_limits(
    db: Executor,
    queue: str,
    *,
    rate: tuple[int, float] | None = UNCHANGED,
    key_concurrency: int | None = UNCHANGED,
    key_limits: dict[str, int] | None = UNCHANGED,
    fair_weights: dict[str, float] | None = UNCHANGED,
) -> None:
    """Set the limits given (None: remove that one), keep the others; slot rows are
    fitted to the new caps in the same transaction, and every worker is told."""
    count, period = (None, None) if rate is UNCHANGED or rate is None else rate
    async with transaction(db) as conn:
        await conn.fetchval(
            Q["set_queue_limits"],
            queue,
            rate is not UNCHANGED,
            count,
            period,
            key_concurrency is not UNCHANGED,
            None if key_concurrency is UNCHANGED else key_concurrency,
            key_limits is not UNCHANGED,
            None if key_limits is UNCHANGED else key_limits,
            fair_weights is not UNCHANGED,
            None if fair_weights is UNCHANGED else fair_weights,
        )
        await conn.fetchrow(Q["fit_slots"], queue)


async def queue_limits(db: Executor, queue: str) -> dict[str, Any]:
    row = await db.fetchrow(Q["queue_limits"], queue)
    info = QueueInfo(queue, False, {}, None, 0, 0, [])
    if row is not None:
        rate = None if row["rate_count"] is None else (row["rate_count"], row["rate_period"])
        info = QueueInfo(
            queue, False, {}, None, 0, 0, [], rate,
            row["key_concurrency"], row["key_limits"], row["fair_weights"],
        )  # fmt: skip
    return info.limits()


async def fit_slots(db: Executor) -> int:
    """Fit every key's slot rows to its cap (see the statement); returns rows changed."""
    row = await db.fetchrow(Q["fit_slots"], None)
    return int(row["added"] + row["dropped"] + row["retired"] + row["freed"])


# --- API tokens --------------------------------------------------------------------------


async def insert_token(
    db: Executor, name: str, digest: bytes, scopes: Sequence[str], expires_seconds: float | None
) -> Any:
    """The new token's row, or None when the name is taken."""
    return await db.fetchrow(Q["insert_token"], name, digest, list(scopes), expires_seconds)


async def list_tokens(db: Executor) -> list[Any]:
    return await db.fetch(Q["list_tokens"])


async def revoke_token(db: Executor, name: str) -> Any:
    return await db.fetchrow(Q["revoke_token"], name)


async def authenticate_token(db: Executor, digest: bytes) -> Any:
    """(name, scopes, expires_at) of the live token with this digest, or None."""
    return await db.fetchrow(Q["authenticate_token"], digest)
