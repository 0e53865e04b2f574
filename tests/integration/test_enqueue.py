"""The producer API against a real PostgreSQL: enqueue, enqueue_many, transactions,
notifications, history and idempotency."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from aqueue import db, store
from aqueue.model import JobSpec, JobStatus, ValidationError
from aqueue.producer import enqueue, enqueue_many

CHANNEL = "aqueue_jobs"


async def count_jobs(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM all_jobs")


async def test_enqueue_returns_a_pending_job_with_defaults(pool):
    before = datetime.now(UTC)
    job = await enqueue(pool, "demo.echo", {"a": 1})
    assert job.status is JobStatus.PENDING
    assert (job.type, job.payload, job.queue) == ("demo.echo", {"a": 1}, "default")
    assert (job.priority, job.attempts, job.max_attempts) == (0, 0, 5)
    assert job.run_after >= before - timedelta(seconds=5)
    assert job.id.version == 7
    assert job.last_error is job.result is job.idempotency_key is job.locked_by is None
    assert job.started_at is job.finished_at is None
    assert await store.get_job(pool, job.id) == job


PLANS = "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1"


async def test_a_pool_for_enqueueing_plans_the_insert_once(db_url):
    """Planning the insert on every call was 10-15% of a single enqueue; aqueue serve's pool
    still plans each execution with its values, for its scans of the jobs table."""
    producer = await db.create_pool(db_url, min_size=1, max_size=1)
    serving = await db.create_pool(db_url, min_size=1, max_size=1, plan_every_execution=True)
    try:
        for pool in (producer, serving):
            for n in range(8):
                await enqueue(pool, "demo.echo", {"n": n})
        generic, custom = await producer.fetchrow(PLANS, store.Q["insert_job"])
        assert generic >= 1 and custom + generic == 8
        assert tuple(await serving.fetchrow(PLANS, store.Q["insert_job"])) == (0, 8)
    finally:
        await producer.close()
        await serving.close()


async def test_the_job_enqueue_returns_is_the_job_as_stored(pool):
    # the insert returns only the database's times; the rest must read back as returned
    later = datetime.now(UTC) + timedelta(hours=1)
    for key in (None, "returned-as-stored"):
        job = await enqueue(
            pool,
            "demo.echo",
            {"list": (1, 2), "n": 1.5, "nested": {"z": None, "a": "é"}},
            queue="q1",
            priority=3,
            run_after=later,
            max_attempts=2,
            idempotency_key=key,
            timeout_seconds=7,
        )
        assert await store.get_job(pool, job.id) == job
        assert job.payload == {"list": [1, 2], "n": 1.5, "nested": {"z": None, "a": "é"}}
        assert isinstance(job.timeout_seconds, float)


async def test_enqueue_without_payload_stores_an_empty_object(pool):
    job = await enqueue(pool, "demo.echo")
    assert job.payload == {}


async def test_enqueue_keeps_the_options_given(pool):
    later = datetime.now(UTC) + timedelta(hours=1)
    job = await enqueue(
        pool, "email.send", [1], queue="email", priority=7, run_after=later, max_attempts=2
    )
    assert (job.payload, job.queue, job.priority, job.max_attempts) == ([1], "email", 7, 2)
    assert job.run_after == later


async def test_job_enqueued_in_a_rolled_back_transaction_does_not_exist(pool):
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        job = await enqueue(conn, "demo.echo")
        await tx.rollback()
    assert await store.get_job(pool, job.id) is None
    assert await count_jobs(pool) == 0


async def test_job_enqueued_in_a_committed_transaction_exists(pool):
    async with pool.acquire() as conn, conn.transaction():
        job = await enqueue(conn, "demo.echo")
        assert await store.get_job(pool, job.id) is None  # not visible before the commit
    assert await store.get_job(pool, job.id) == job


async def test_enqueue_many_returns_ids_in_input_order(pool):
    specs = [JobSpec(type="demo.echo", payload={"i": i}) for i in range(50)]
    ids = await enqueue_many(pool, specs)
    rows = await pool.fetch("SELECT id, payload FROM all_jobs")
    by_id = {r["id"]: r["payload"]["i"] for r in rows}
    assert [by_id[i] for i in ids] == list(range(50))


async def test_enqueue_many_of_nothing_inserts_nothing(pool):
    assert await enqueue_many(pool, []) == []
    assert await count_jobs(pool) == 0


async def test_enqueue_many_applies_each_specs_options(pool):
    later = datetime.now(UTC) + timedelta(minutes=5)
    ids = await enqueue_many(
        pool,
        [
            JobSpec(type="a", queue="email", priority=3, run_after=later, max_attempts=1),
            JobSpec(type="b"),
        ],
    )
    first, second = [await store.get_job(pool, i) for i in ids]
    assert (first.type, first.queue, first.priority, first.run_after) == ("a", "email", 3, later)
    assert first.max_attempts == 1
    assert (second.type, second.queue, second.priority, second.max_attempts) == (
        "b",
        "default",
        0,
        5,
    )


class Listener:
    """A LISTEN on the jobs channel, on its own connection. `drain()` returns what arrived
    before a sentinel sent afterwards: notifications are delivered in commit order."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.payloads: list[str] = []
        self.sentinel = asyncio.Event()

    def _on(self, _conn, _pid, _channel, payload: str) -> None:
        if payload == "--sentinel--":
            self.sentinel.set()
        else:
            self.payloads.append(payload)

    async def drain(self, pool: asyncpg.Pool) -> list[str]:
        await pool.execute("SELECT pg_notify($1, '--sentinel--')", CHANNEL)
        await asyncio.wait_for(self.sentinel.wait(), 10)
        return self.payloads


@pytest.fixture
async def listener(db_url):
    conn = await asyncpg.connect(db_url)
    listening = Listener(conn)
    await conn.add_listener(CHANNEL, listening._on)
    try:
        yield listening
    finally:
        await conn.close()


async def test_batch_of_500_jobs_sends_one_notification(pool, listener):
    await enqueue_many(pool, [JobSpec(type="demo.echo", payload={"i": i}) for i in range(500)])
    assert await listener.drain(pool) == ["default"]


async def test_batch_on_two_queues_sends_one_notification_per_queue(pool, listener):
    specs = [JobSpec(type="demo.echo", queue=("email" if i % 2 else "video")) for i in range(500)]
    await enqueue_many(pool, specs)
    assert Counter(await listener.drain(pool)) == {"email": 1, "video": 1}


async def test_rolled_back_enqueue_sends_no_notification(pool, listener):
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await enqueue(conn, "demo.echo")
        await tx.rollback()
    assert await listener.drain(pool) == []


async def test_a_new_jobs_history_starts_with_its_creation(pool):
    job = await enqueue(pool, "demo.echo")
    events = await store.job_events(pool, job.id)
    assert [(e.status, e.attempt, e.at) for e in events] == [(JobStatus.PENDING, 0, job.created_at)]


async def test_enqueue_many_writes_no_history_rows_of_its_own(pool):
    # The creation is read from jobs.created_at; job_events holds only transitions.
    await enqueue_many(pool, [JobSpec(type="demo.echo") for _ in range(10)])
    assert await pool.fetchval("SELECT count(*) FROM job_events") == 0


async def test_enqueue_with_an_existing_key_returns_the_existing_job(pool):
    first = await enqueue(pool, "demo.echo", {"n": 1}, idempotency_key="k")
    again = await enqueue(pool, "demo.echo", {"n": 2}, idempotency_key="k")
    assert again == first
    assert await count_jobs(pool) == 1


async def test_concurrent_enqueues_with_one_key_make_one_job(pool):
    jobs = await asyncio.gather(
        *(enqueue(pool, "demo.echo", {"n": n}, idempotency_key="k") for n in range(20))
    )
    assert len({job.id for job in jobs}) == 1
    assert await count_jobs(pool) == 1


async def test_enqueue_many_with_an_existing_key_returns_it_and_inserts_the_rest(pool):
    existing = await enqueue(pool, "demo.echo", idempotency_key="k")
    ids = await enqueue_many(
        pool,
        [
            JobSpec(type="demo.echo", idempotency_key="new"),
            JobSpec(type="demo.echo", idempotency_key="k"),
            JobSpec(type="demo.echo"),
        ],
    )
    assert ids[1] == existing.id
    assert len(set(ids)) == 3
    assert await count_jobs(pool) == 3
    assert {r["id"] for r in await pool.fetch("SELECT id FROM all_jobs")} == set(ids)


async def test_enqueue_many_with_one_key_twice_makes_one_job(pool):
    ids = await enqueue_many(
        pool, [JobSpec(type="a", idempotency_key="k"), JobSpec(type="b", idempotency_key="k")]
    )
    assert ids[0] == ids[1]
    assert await count_jobs(pool) == 1


async def test_enqueue_with_a_naive_run_after_is_rejected_and_writes_nothing(pool):
    with pytest.raises(ValidationError, match="run_after"):
        await enqueue(pool, "demo.echo", run_after=datetime(2030, 1, 1))
    assert await count_jobs(pool) == 0


async def test_enqueue_many_with_a_naive_run_after_is_rejected_and_writes_nothing(pool):
    specs = [JobSpec(type="a"), JobSpec(type="b", run_after=datetime(2030, 1, 1))]
    with pytest.raises(ValidationError, match="run_after"):
        await enqueue_many(pool, specs)
    assert await count_jobs(pool) == 0


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"type": "bad type"}, "type"),
        ({"type": "a", "queue": ""}, "queue"),
        ({"type": "a", "max_attempts": 0}, "max_attempts"),
    ],
)
async def test_enqueue_rejects_invalid_options_and_writes_nothing(pool, kwargs, named):
    job_type = kwargs.pop("type")
    with pytest.raises(ValidationError, match=named):
        await enqueue(pool, job_type, **kwargs)
    assert await count_jobs(pool) == 0


async def test_ids_made_by_the_database_are_time_ordered_too(pool):
    # Jobs inserted by plain SQL get the column default, a UUIDv7 like aqueue's own.
    # (Ids within one millisecond are in random order: step past it.)
    first = await pool.fetchval("INSERT INTO jobs (type) VALUES ('demo.echo') RETURNING id")
    await asyncio.sleep(0.002)
    job = await enqueue(pool, "demo.echo")
    await asyncio.sleep(0.002)
    later = await pool.fetchval("INSERT INTO jobs (type) VALUES ('demo.echo') RETURNING id")
    assert first.version == job.id.version == later.version == 7
    assert first < job.id < later


# --- large batches go in by COPY (store.COPY_MIN_BATCH and up) ----------------------------


def copy_batch(n: int = store.COPY_MIN_BATCH * 2) -> list[JobSpec]:
    return [JobSpec(type="demo.echo", payload={"i": i}) for i in range(n)]


async def test_a_copied_batch_keeps_every_field_and_the_databases_clock(pool):
    later = datetime.now(UTC) + timedelta(minutes=5)
    specs = copy_batch()
    specs[3] = JobSpec(
        type="b", payload=[1, "x"], queue="email", priority=4, run_after=later,
        max_attempts=2, timeout_seconds=1.5,
    )  # fmt: skip
    ids = await enqueue_many(pool, specs)
    jobs = [await store.get_job(pool, i) for i in ids]
    assert [j.payload for j in jobs[:3]] == [{"i": 0}, {"i": 1}, {"i": 2}]
    timed = jobs[3]
    assert (timed.type, timed.payload, timed.queue, timed.priority) == ("b", [1, "x"], "email", 4)
    assert (timed.run_after, timed.max_attempts, timed.timeout_seconds) == (later, 2, 1.5)
    # no run_after: the database's now() of the enqueue, as for a single insert
    assert all(j.run_after == j.created_at for j in jobs if j is not timed)
    assert all(j.status is JobStatus.PENDING and j.attempts == 0 for j in jobs)
    assert await count_jobs(pool) == len(specs)


async def test_a_copied_batch_in_a_rolled_back_transaction_leaves_nothing(pool, listener):
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await enqueue_many(conn, copy_batch())
        await tx.rollback()
    assert await count_jobs(pool) == 0
    assert await listener.drain(pool) == []


async def test_a_copied_batch_with_a_payload_postgresql_refuses_stores_none(pool, listener):
    specs = copy_batch()
    specs[-1] = JobSpec(type="demo.echo", payload={"bad": float("nan")})
    with pytest.raises(asyncpg.PostgresError):
        await enqueue_many(pool, specs)
    assert await count_jobs(pool) == 0
    assert await listener.drain(pool) == []
