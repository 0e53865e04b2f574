"""Finished jobs leave the hot table for jobs_history (sql/005_history.sql): every path
that finishes a job moves it, reads still find it, idempotency keys keep naming it,
retry brings it back, and retention deletes old history in batches."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from aqueue import JobContext, JobSpec, JobStatus, Registry, db, enqueue, enqueue_many, store
from aqueue.api.app import create_app
from aqueue.reaper import Reaper
from aqueue.settings import Settings
from aqueue.store import Outcome
from tests.helpers import fast_settings, running_worker, wait_for

FINISHED = ("COMPLETED", "DEAD", "CANCELLED")


async def where(pool: asyncpg.Pool, job_id: uuid.UUID) -> list[tuple[str, str]]:
    """(table, status) of every row of this job, in both tables."""
    rows = await pool.fetch(
        """SELECT 'jobs' AS t, status FROM jobs WHERE id = $1
           UNION ALL SELECT 'jobs_history', status FROM jobs_history WHERE id = $1""",
        job_id,
    )
    return [(r["t"], r["status"]) for r in rows]


async def wait_in_history(pool: asyncpg.Pool, job_id: uuid.UUID, status: str) -> None:
    await wait_for(lambda: _is(pool, job_id, [("jobs_history", status)]))


async def _is(pool: asyncpg.Pool, job_id: uuid.UUID, expected: list[tuple[str, str]]) -> bool:
    return await where(pool, job_id) == expected


@pytest.fixture
async def client(pool):
    transport = httpx.ASGITransport(app=create_app(pool, Settings()), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as c:
        yield c


# --- every path that finishes a job moves it ----------------------------------------------


async def test_a_completed_job_moves_to_history_and_every_read_still_finds_it(pool, db_url, client):
    job = await enqueue(pool, "demo.echo", {"hi": 1}, queue="default")
    other = await enqueue(pool, "demo.echo", {}, run_after=None, queue="elsewhere")
    async with running_worker(pool, db_url):
        await wait_in_history(pool, job.id, "COMPLETED")
    assert await where(pool, other.id) == [("jobs", "PENDING")]

    found = await store.get_job(pool, job.id)
    assert found is not None and found.status is JobStatus.COMPLETED
    assert found.result == {"hi": 1} and found.finished_at is not None
    assert found.attempts == 1 and found.started_at is not None

    body = (await client.get(f"/jobs/{job.id}")).json()
    assert body["status"] == "COMPLETED" and body["result"] == {"hi": 1}
    assert [e["status"] for e in body["events"]] == ["PENDING", "RUNNING", "COMPLETED"]
    compat = (await client.get(f"/job-status/{job.id}")).json()
    assert compat["status"] == "completed"

    listed = (await client.get("/jobs")).json()["jobs"]
    assert [j["id"] for j in listed] == [str(other.id), str(job.id)]  # newest first
    for query in ("status=COMPLETED", "queue=default", "type=demo.echo&status=COMPLETED"):
        ids = [j["id"] for j in (await client.get(f"/jobs?{query}")).json()["jobs"]]
        assert ids == [str(job.id)], query
    assert (await client.get("/jobs?status=PENDING")).json()["jobs"][0]["id"] == str(other.id)


async def test_listings_page_through_both_tables_newest_first(pool, client):
    ids = [(await enqueue(pool, "demo.echo", {"n": n})).id for n in range(6)]
    # every other job finished (moved by the trigger, as an operator's UPDATE would be)
    await pool.execute(
        "UPDATE jobs SET status = 'COMPLETED', finished_at = now() WHERE id = ANY($1::uuid[])",
        ids[::2],
    )
    seen: list[str] = []
    cursor = None
    while True:
        url = "/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(url)).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(i) for i in reversed(ids)]


async def test_a_job_dead_by_its_handler_moves_and_is_listed_as_dead(pool, db_url, client):
    job = await enqueue(pool, "demo.fail", {}, max_attempts=1)
    async with running_worker(pool, db_url):
        await wait_in_history(pool, job.id, "DEAD")
    ids = [j["id"] for j in (await client.get("/jobs?status=DEAD")).json()["jobs"]]
    assert ids == [str(job.id)]
    events = await store.job_events(pool, job.id)
    assert [e.status for e in events][-1] is JobStatus.DEAD


async def test_a_retry_stays_in_the_hot_table(pool, db_url):
    job = await enqueue(pool, "demo.fail", {}, max_attempts=3)
    async with running_worker(pool, db_url, backoff_base_seconds=30.0, backoff_cap_seconds=30.0):
        await wait_for(lambda: _is(pool, job.id, [("jobs", "RETRY")]))


async def test_the_reaper_making_a_job_dead_moves_it(pool):
    job = await enqueue(pool, "demo.echo", {}, max_attempts=1)
    await store.claim(pool, "default", 1, "dead-worker", 0.05)
    await asyncio.sleep(0.1)
    reaper = Reaper(pool, fast_settings(), "test")
    assert await reaper.reap() == 1
    assert await where(pool, job.id) == [("jobs_history", "DEAD")]
    dead = await store.get_job(pool, job.id)
    assert dead is not None and "dead-worker" in (dead.last_error or "")
    assert (await store.job_events(pool, job.id))[-1].worker == reaper.id


async def test_a_release_that_spends_the_last_attempt_moves_the_job(pool):
    job = await enqueue(pool, "demo.echo", {}, max_attempts=1)
    [claimed] = await store.claim(pool, "default", 1, "w", 30)
    released = await store.release_jobs(
        pool,
        [(claimed.id, claimed.lease_token)],
        "shutdown",
        "w",
        free_releases=0,
        backoff_base=0.05,
        backoff_cap=0.1,
    )
    assert [r.status for r in released] == [JobStatus.DEAD]
    assert await where(pool, job.id) == [("jobs_history", "DEAD")]


async def test_a_restored_forgotten_claim_with_its_outcome_moves_the_job(pool):
    job = await enqueue(pool, "demo.echo", {})
    [claimed] = await store.claim(pool, "default", 1, "w", 30)
    # as crash recovery leaves a claim whose asynchronous commit never reached the disk
    await pool.execute(
        """UPDATE jobs SET status = 'PENDING', attempts = 0, locked_by = NULL,
                  locked_at = NULL, lease_token = NULL, lease_expires_at = NULL,
                  started_at = NULL, updated_at = now() - interval '1 minute'
           WHERE id = $1""",
        job.id,
    )
    outcome = Outcome(claimed, JobStatus.COMPLETED, result={"ok": True})
    assert await store.record_outcomes(pool, [outcome], "w") == set()
    assert await store.restore_forgotten(pool, [outcome], "w", 30) == {claimed.lease_token}
    assert await where(pool, job.id) == [("jobs_history", "COMPLETED")]


async def test_any_update_to_a_finished_status_moves_the_job(pool):
    # The pattern for statements added later (cancel, a dependent of a dead parent):
    # a plain UPDATE, in a CTE with RETURNING and a job_events row; the trigger moves it.
    jobs = [await enqueue(pool, "demo.echo", {}) for _ in range(3)]
    rows = await pool.fetch(
        """WITH cancelled AS (
               UPDATE jobs SET status = 'CANCELLED', finished_at = now(), updated_at = now()
               WHERE id = ANY($1::uuid[]) AND status = 'PENDING'
               RETURNING id, status, attempts
           ), logged AS (
               INSERT INTO job_events (job_id, status, attempt) SELECT id, status, attempts
               FROM cancelled
           )
           SELECT id FROM cancelled""",
        [j.id for j in jobs],
    )
    assert len(rows) == 3
    for job in jobs:
        assert await where(pool, job.id) == [("jobs_history", "CANCELLED")]
        assert (await store.job_events(pool, job.id))[-1].status is JobStatus.CANCELLED
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_nothing_finished_is_ever_left_in_the_hot_table(pool, db_url):
    registry = Registry()

    @registry.task("test.mixed")
    async def mixed(payload: Any, ctx: JobContext) -> Any:
        if payload["n"] % 3 == 0:
            raise RuntimeError("no")
        return payload

    specs = [JobSpec(type="test.mixed", payload={"n": n}, max_attempts=1) for n in range(60)]
    await enqueue_many(pool, specs)
    async with running_worker(pool, db_url, registry):
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 60 FROM jobs_history"))
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 0
    counts = dict(
        await pool.fetch("SELECT status, count(*) FROM jobs_history GROUP BY status")  # type: ignore[arg-type]
    )
    assert counts == {"COMPLETED": 40, "DEAD": 20}
    assert await pool.fetchval("SELECT count(*) FROM job_events") == 60


# --- the schema stays consistent ------------------------------------------------------------


async def _columns(pool: asyncpg.Pool, table: str) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        """SELECT column_name, data_type FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position""",
        table,
    )
    return [(r["column_name"], r["data_type"]) for r in rows]


async def test_history_and_the_view_have_the_columns_of_jobs_in_the_same_order(pool):
    # the trigger inserts NEW.* as it is; all_jobs is a UNION ALL of both
    jobs = await _columns(pool, "jobs")
    assert await _columns(pool, "jobs_history") == jobs
    assert await _columns(pool, "all_jobs") == jobs


@pytest.mark.parametrize("name", ["record_outcomes", "retry_job", "retry_dead"])
async def test_the_moving_statements_name_every_column(pool, name):
    # A column added to jobs and forgotten in a moving statement would be lost (history)
    # or reset (retry) without a word: each of them lists every column.
    statement = store.Q[name]
    target = "jobs_history" if name == "record_outcomes" else "jobs"
    listed = re.search(rf"INSERT INTO {target} \(([^)]*)\)", statement)
    assert listed is not None
    names = [c.strip() for c in listed.group(1).split(",")]
    assert names == [c for c, _ in await _columns(pool, "jobs")]


# --- idempotency keys after the move --------------------------------------------------------


async def test_an_idempotency_key_names_its_job_after_the_job_moved(pool, db_url, client):
    job = await enqueue(pool, "demo.echo", {"n": 1}, idempotency_key="k-moved")
    async with running_worker(pool, db_url):
        await wait_in_history(pool, job.id, "COMPLETED")
    again = await enqueue(pool, "demo.echo", {"n": 2}, idempotency_key="k-moved")
    assert again.id == job.id and again.status is JobStatus.COMPLETED
    response = await client.post(
        "/jobs", json={"type": "demo.echo", "payload": {}, "idempotency_key": "k-moved"}
    )
    assert response.status_code == 200 and response.json()["id"] == str(job.id)
    ids = await enqueue_many(
        pool,
        [JobSpec(type="demo.echo", idempotency_key="k-moved"), JobSpec(type="demo.echo")],
    )
    assert ids[0] == job.id
    assert await pool.fetchval("SELECT count(*) FROM all_jobs") == 2


async def test_concurrent_enqueues_with_the_key_of_a_moved_job_make_no_new_job(pool, client):
    job = await enqueue(pool, "demo.echo", {}, idempotency_key="k")
    await pool.execute("UPDATE jobs SET status = 'CANCELLED', finished_at = now()")
    results = await asyncio.gather(
        *(enqueue(pool, "demo.echo", {"n": n}, idempotency_key="k") for n in range(10)),
        *(
            client.post("/jobs", json={"type": "demo.echo", "idempotency_key": "k"})
            for _ in range(10)
        ),
    )
    ids = {getattr(r, "id", None) or uuid.UUID(r.json()["id"]) for r in results}
    assert ids == {job.id}
    assert await pool.fetchval("SELECT count(*) FROM all_jobs") == 1


async def test_concurrent_enqueues_with_one_key_while_the_job_moves(pool, db_url):
    # The job finishes (and moves) while repeats of its key arrive: still one job.
    first = await enqueue(pool, "demo.echo", {}, idempotency_key="racing")
    async with running_worker(pool, db_url):
        repeats = await asyncio.gather(
            *(enqueue(pool, "demo.echo", {}, idempotency_key="racing") for _ in range(30))
        )
        await wait_in_history(pool, first.id, "COMPLETED")
    assert {r.id for r in repeats} == {first.id}
    assert await pool.fetchval("SELECT count(*) FROM all_jobs") == 1


# --- retry ----------------------------------------------------------------------------------


async def _dead(pool: asyncpg.Pool, **kw: Any) -> uuid.UUID:
    job = await enqueue(pool, kw.pop("type", "demo.echo"), {}, **kw)
    await pool.execute(
        "UPDATE jobs SET status = 'DEAD', attempts = max_attempts, last_error = 'boom',"
        " finished_at = now() WHERE id = $1",
        job.id,
    )
    return job.id


async def test_retry_job_brings_a_dead_job_back_as_pending_with_a_fresh_budget(pool, db_url):
    job = await enqueue(pool, "demo.fail", {}, max_attempts=2)
    async with running_worker(pool, db_url):
        await wait_in_history(pool, job.id, "DEAD")
    listener = await asyncpg.connect(db_url)
    woken: list[str] = []
    await listener.add_listener("aqueue_jobs", lambda *args: woken.append(args[3]))
    try:
        retried = await store.retry_job(pool, job.id, by="operator")
        await wait_for(lambda: asyncio.sleep(0, woken))
    finally:
        await listener.close()
    assert woken == ["default"]
    assert retried.status is JobStatus.PENDING and retried.attempts == 0
    assert retried.last_error is None and retried.result is None
    assert retried.finished_at is None and retried.started_at is None
    assert retried.max_attempts == 2
    assert await where(pool, job.id) == [("jobs", "PENDING")]
    events = await store.job_events(pool, job.id)
    statuses = [e.status.value for e in events]
    # both earlier attempts are still there, then the retry
    assert statuses[:-1] == ["PENDING", "RUNNING", "RETRY", "RUNNING", "DEAD"]
    assert statuses[-1] == "PENDING" and events[-1].worker == "operator"
    async with running_worker(pool, db_url):
        await wait_in_history(pool, job.id, "DEAD")  # ran its two attempts again
    assert [e.status.value for e in await store.job_events(pool, job.id)].count("RUNNING") == 4


async def test_retry_job_brings_back_a_cancelled_job(pool):
    job = await enqueue(pool, "demo.echo", {}, idempotency_key="cancelled-key")
    await pool.execute("UPDATE jobs SET status = 'CANCELLED', finished_at = now()")
    retried = await store.retry_job(pool, job.id)
    assert retried.status is JobStatus.PENDING and retried.idempotency_key == "cancelled-key"
    # the key still names it
    assert (await enqueue(pool, "demo.echo", {}, idempotency_key="cancelled-key")).id == job.id


async def test_retry_job_refuses_an_unknown_job_and_one_not_dead_or_cancelled(pool, db_url):
    with pytest.raises(store.JobNotFound, match="no job with id"):
        await store.retry_job(pool, uuid.uuid4())
    pending = await enqueue(pool, "demo.echo", {})
    with pytest.raises(store.JobNotRetryable, match="is PENDING") as exc:
        await store.retry_job(pool, pending.id)
    assert exc.value.status is JobStatus.PENDING
    async with running_worker(pool, db_url):
        await wait_in_history(pool, pending.id, "COMPLETED")
    with pytest.raises(store.JobNotRetryable, match="is COMPLETED"):
        await store.retry_job(pool, pending.id)


async def test_concurrent_retries_of_one_job_bring_it_back_once(pool):
    job_id = await _dead(pool)
    results = await asyncio.gather(
        *(store.retry_job(pool, job_id) for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, store.JobNotRetryable) for r in results if isinstance(r, Exception))
    assert await where(pool, job_id) == [("jobs", "PENDING")]


async def test_retry_dead_retries_the_dead_jobs_of_one_queue_in_batches(pool):
    mine = [await _dead(pool, queue="q") for _ in range(5)]
    typed = [await _dead(pool, queue="q", type="other.type") for _ in range(2)]
    elsewhere = await _dead(pool, queue="elsewhere")
    cancelled = await enqueue(pool, "demo.echo", {}, queue="q")
    await pool.execute(
        "UPDATE jobs SET status = 'CANCELLED', finished_at = now() WHERE id = $1", cancelled.id
    )
    assert await store.retry_dead(pool, "q", "other.type", batch=1) == 2
    for job_id in typed:
        assert await where(pool, job_id) == [("jobs", "PENDING")]
    assert await store.retry_dead(pool, "q", batch=2) == 5
    for job_id in mine:
        assert await where(pool, job_id) == [("jobs", "PENDING")]
        assert (await store.job_events(pool, job_id))[-1].status is JobStatus.PENDING
    assert await where(pool, elsewhere) == [("jobs_history", "DEAD")]
    assert await where(pool, cancelled.id) == [("jobs_history", "CANCELLED")]
    assert await store.retry_dead(pool, "q") == 0


# --- retention ------------------------------------------------------------------------------


def uuid7_at(epoch: float) -> uuid.UUID:
    """A time-ordered id as aqueue makes them, for a job created at `epoch`."""
    ms = int(epoch * 1000)
    rand = int.from_bytes(secrets.token_bytes(10), "big")
    value = (ms << 80) | (0x7 << 76) | (rand & ((1 << 76) - 1))
    value = (value & ~(0xC << 60)) | (0x8 << 60)  # the variant bits
    return uuid.UUID(int=value)


async def _history_job(
    pool: asyncpg.Pool, created_ago: float, finished_ago: float, key: str | None = None
) -> uuid.UUID:
    now = time.time()
    job_id = uuid7_at(now - created_ago)
    await pool.execute(
        """INSERT INTO jobs_history (id, type, status, created_at, finished_at,
                                     idempotency_key, attempts)
           VALUES ($1, 'demo.echo', 'COMPLETED', to_timestamp($2), to_timestamp($3), $4, 1)""",
        job_id,
        now - created_ago,
        now - finished_ago,
        key,
    )
    await pool.execute(
        "INSERT INTO job_events (job_id, status, attempt) VALUES ($1, 'COMPLETED', 1)", job_id
    )
    if key is not None:
        await pool.execute("INSERT INTO job_keys VALUES ($1, $2)", key, job_id)
    return job_id


DAY = 86400.0


async def test_retention_deletes_only_old_history_with_its_events_and_keys(pool):
    old = [await _history_job(pool, 9 * DAY, 8 * DAY, key=f"old-{n}") for n in range(5)]
    # created long ago but finished recently (a long delay): kept
    late = await _history_job(pool, 9 * DAY, 1 * DAY)
    recent = await _history_job(pool, 2 * DAY, 2 * DAY, key="recent")
    running = await enqueue(pool, "demo.echo", {}, idempotency_key="live")

    assert await store.purge_history(pool, 7 * DAY, batch=2) == 5
    left = {r["id"] for r in await pool.fetch("SELECT id FROM all_jobs")}
    assert left == {late, recent, running.id}
    assert {r["job_id"] for r in await pool.fetch("SELECT job_id FROM job_events")} == {
        late,
        recent,
    }
    assert {r[0] for r in await pool.fetch("SELECT idempotency_key FROM job_keys")} == {
        "recent",
        "live",
    }
    # a deleted job's key is free again
    assert (await enqueue(pool, "demo.echo", {}, idempotency_key="old-0")).id not in old


async def test_retention_works_in_bounded_batches(pool):
    for _ in range(7):
        await _history_job(pool, 9 * DAY, 8 * DAY)
    assert await store.purge_history(pool, 7 * DAY, batch=2, max_batches=2) == 4
    assert await pool.fetchval("SELECT count(*) FROM jobs_history") == 3
    assert await store.purge_history(pool, 7 * DAY, batch=2) == 3
    assert await store.purge_history(pool, 7 * DAY, batch=2) == 0


async def test_retention_skips_a_row_another_transaction_holds(pool):
    held = await _history_job(pool, 9 * DAY, 8 * DAY)
    free = await _history_job(pool, 9 * DAY, 8 * DAY)
    async with pool.acquire() as other, other.transaction():
        await other.execute("SELECT 1 FROM jobs_history WHERE id = $1 FOR UPDATE", held)
        deleted = await asyncio.wait_for(store.purge_history(pool, 7 * DAY, batch=10), 5)
    assert deleted == 1
    assert await where(pool, free) == []
    assert await where(pool, held) == [("jobs_history", "COMPLETED")]


async def test_the_reaper_role_applies_retention_and_a_worker_alone_does_not(pool):
    await _history_job(pool, 9 * DAY, 8 * DAY)
    worker_only = Reaper(pool, fast_settings(), "test", retention=False)
    assert not worker_only.retention
    off = Reaper(pool, fast_settings(retention_seconds=None), "test")
    assert not off.retention
    reaper = Reaper(pool, fast_settings(retention_seconds=7 * DAY), "test")
    task = asyncio.create_task(reaper.run())
    try:
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 0 FROM jobs_history"))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert reaper.purged == 1


# --- the migration ----------------------------------------------------------------------


async def test_the_migration_moves_finished_jobs_and_keeps_their_keys(empty_db_url):
    migrations = db.load_migrations()
    before = [m for m in migrations if m.version < 4]
    conn = await asyncpg.connect(empty_db_url)
    try:
        await db.migrate(conn, migrations=before)
        ids = {}
        for status in ("PENDING", "RETRY", "COMPLETED", "DEAD", "CANCELLED"):
            ids[status] = await conn.fetchval(
                "INSERT INTO jobs (type, status, idempotency_key, result) VALUES"
                " ('demo.echo', $1, $2, $3::jsonb) RETURNING id",
                status,
                f"key-{status}",
                json.dumps({"s": status}),
            )
        await db.migrate(conn)
        hot = {r["status"] for r in await conn.fetch("SELECT status FROM jobs")}
        history = await conn.fetch("SELECT id, status, result FROM jobs_history")
        keys = dict(await conn.fetch("SELECT idempotency_key, job_id FROM job_keys"))  # type: ignore[arg-type]
    finally:
        await conn.close()
    assert hot == {"PENDING", "RETRY"}
    assert {r["status"] for r in history} == set(FINISHED)
    assert all(json.loads(r["result"]) == {"s": r["status"]} for r in history)
    assert keys == {f"key-{s}": job_id for s, job_id in ids.items()}


# --- the hot table's dead tuples --------------------------------------------------------


async def test_a_reaper_vacuums_the_hot_table_once_its_dead_tuples_pile_up(pool):
    await enqueue_many(pool, [JobSpec(type="demo.echo") for _ in range(300)])
    async with pool.acquire() as conn:
        claimed = await store.claim(conn, "default", 300, "w", 30)
        outcomes = [Outcome(job, JobStatus.COMPLETED) for job in claimed]
        assert len(await store.record_outcomes(conn, outcomes, "w")) == 300
        await conn.execute("SELECT pg_stat_force_next_flush()")
    # two dead tuples per job: its claim's old version and the moved row
    await wait_for(lambda: _dead_at_least(pool, 600), timeout=20)
    idle = Reaper(pool, fast_settings(hot_vacuum_dead=1000), "test")
    assert not await idle.vacuum_if_bloated()
    reaper = Reaper(pool, fast_settings(hot_vacuum_dead=500), "test")
    assert await reaper.vacuum_if_bloated()
    assert reaper.vacuums == 1
    stats = await store.hot_table_stats(pool)
    assert stats.dead == 0 and stats.live == 0


async def _dead_at_least(pool: asyncpg.Pool, n: int) -> bool:
    return (await store.hot_table_stats(pool)).dead >= n


async def test_a_reaper_that_may_not_vacuum_leaves_it_to_autovacuum(pool, db_url):
    if not await pool.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        pytest.skip("needs a superuser to make a role that does not own jobs")
    role = f"not_owner_{secrets.token_hex(4)}"
    await pool.execute(f"CREATE ROLE {role}")

    async def as_role(conn: asyncpg.Connection) -> None:
        await conn.execute(f"SET ROLE {role}")

    try:
        await pool.execute(f"GRANT SELECT ON jobs TO {role}")
        other = await asyncpg.create_pool(db_url, min_size=1, max_size=1, init=as_role)
        try:
            reaper = Reaper(other, fast_settings(hot_vacuum_dead=0), "test")
            assert not await reaper.vacuum_if_bloated()
            assert not await reaper.vacuum_if_bloated()  # asked once only
        finally:
            await other.close()
    finally:
        await pool.execute(f"DROP OWNED BY {role}")
        await pool.execute(f"DROP ROLE {role}")
