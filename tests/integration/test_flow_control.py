"""Flow control inside the claim: per-key concurrency caps (slot rows taken by the claim,
freed by whatever ends the attempt) and weighted fair share (tags given at enqueue)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

import asyncpg
import pytest

import aqueue
from aqueue import JobContext, JobSpec, Registry, control, enqueue_many, producer, store
from aqueue.model import JobStatus
from aqueue.store import ClaimedJob, Outcome
from tests.helpers import running_worker, wait_for

pytestmark = pytest.mark.timeout(120)


async def claim(pool: asyncpg.Pool, queue: str, n: int = 50) -> list[ClaimedJob]:
    return await store.claim_flow(pool, queue, n, "w", 30.0)


async def claim_all(pool: asyncpg.Pool, queue: str, n: int = 50) -> list[ClaimedJob]:
    """Claim until nothing more may start: the first claim that meets a capped key makes
    its slot rows, and its jobs start from the next one."""
    got: list[ClaimedJob] = []
    empty = 0
    while empty < 2:
        batch = await claim(pool, queue, n)
        got += batch
        empty = 0 if batch else empty + 1
    return got


async def running_by_key(pool: asyncpg.Pool) -> dict[str | None, int]:
    rows = await pool.fetch(
        "SELECT concurrency_key AS k, count(*) AS n FROM jobs WHERE status = 'RUNNING' GROUP BY 1"
    )
    return {r["k"]: r["n"] for r in rows}


async def held_slots(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT key, count(*) AS n FROM concurrency_slots WHERE job_id IS NOT NULL GROUP BY key"
    )
    return {r["key"]: r["n"] for r in rows}


def keyed(queue: str, key: str | None, n: int, fair: str | None = None) -> list[JobSpec]:
    return [JobSpec("demo.echo", {}, queue=queue, concurrency_key=key, fair_key=fair)] * n


# --- per-key concurrency caps -------------------------------------------------------------


async def test_one_batch_never_takes_more_than_the_cap(pool):
    await control.set_limits(pool, "q", key_concurrency=2)
    await enqueue_many(pool, keyed("q", "customer:1", 10))
    assert len(await claim_all(pool, "q")) == 2
    assert await running_by_key(pool) == {"customer:1": 2}
    assert await held_slots(pool) == {"customer:1": 2}


async def test_a_key_limit_overrides_the_queue_cap_and_other_jobs_run_freely(pool):
    await control.set_limits(pool, "q", key_concurrency=1, key_limits={"vip": 3})
    await enqueue_many(pool, keyed("q", "vip", 5) + keyed("q", "plain", 5) + keyed("q", None, 4))
    await claim_all(pool, "q")
    assert await running_by_key(pool) == {"vip": 3, "plain": 1, None: 4}


async def test_a_key_named_only_in_key_limits_is_the_only_capped_one(pool):
    await control.set_limits(pool, "q", key_limits={"vip": 2})
    await enqueue_many(pool, keyed("q", "vip", 5) + keyed("q", "other", 5))
    await claim_all(pool, "q")
    assert await running_by_key(pool) == {"vip": 2, "other": 5}


async def test_the_plain_claim_takes_nothing_from_a_capped_queue(pool):
    # a worker that has not heard of the cap yet claims nothing rather than past it
    await enqueue_many(pool, keyed("q", "k", 3))
    await control.set_limits(pool, "q", key_concurrency=1)
    assert await store.claim(pool, "q", 10, "w", 30.0) == []


async def test_every_way_an_attempt_ends_frees_its_slot_once(pool):
    await control.set_limits(pool, "q", key_concurrency=1)
    await enqueue_many(pool, keyed("q", "k", 5))
    for status in (JobStatus.COMPLETED, JobStatus.RETRY, JobStatus.DEAD):
        (job,) = await claim_all(pool, "q")
        assert await held_slots(pool) == {"k": 1}
        accepted = await store.record_outcomes(pool, [Outcome(job, status, retry_in=60)], "w")
        assert accepted == {job.lease_token}
        assert await held_slots(pool) == {}
    (job,) = await claim_all(pool, "q")
    await aqueue.cancel(pool, job.id)
    assert await held_slots(pool) == {}
    (job,) = await claim_all(pool, "q")
    await store.release_jobs(
        pool, [(job.id, job.lease_token)], "stopping", "w",
        free_releases=3, backoff_base=0.1, backoff_cap=1.0,
    )  # fmt: skip
    assert await held_slots(pool) == {}


async def test_the_reaper_frees_a_dead_workers_slot_and_its_late_outcome_frees_nothing(pool):
    await control.set_limits(pool, "q", key_concurrency=1)
    await enqueue_many(pool, keyed("q", "k", 3))
    (lost,) = await claim_all(pool, "q")
    # its worker died: the lease runs out and the reaper takes the job back
    await pool.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 s'")
    assert len(await store.reclaim_expired(pool, 100, "reaper", 60.0, 60.0)) == 1
    assert await held_slots(pool) == {}
    (successor,) = await claim_all(pool, "q")
    # the dead worker's outcome arrives late: refused, and the successor keeps its slot
    assert await store.record_outcomes(pool, [Outcome(lost, JobStatus.COMPLETED)], "w") == set()
    assert await held_slots(pool) == {"k": 1}
    assert await running_by_key(pool) == {"k": 1}
    assert await pool.fetchval(
        "SELECT job_id FROM concurrency_slots WHERE job_id IS NOT NULL"
    ) == successor.id  # fmt: skip


async def test_lowering_a_cap_retires_held_slots_as_their_jobs_end(pool):
    await control.set_limits(pool, "q", key_concurrency=3)
    await enqueue_many(pool, keyed("q", "k", 6))
    running = await claim_all(pool, "q")
    assert len(running) == 3
    await control.set_limits(pool, "q", key_concurrency=1)
    # nothing more starts until two of the three have ended
    assert await claim_all(pool, "q") == []
    for job in running[:2]:
        await store.record_outcomes(pool, [Outcome(job, JobStatus.COMPLETED)], "w")
        assert await claim_all(pool, "q") == []
    await store.record_outcomes(pool, [Outcome(running[2], JobStatus.COMPLETED)], "w")
    assert len(await claim_all(pool, "q")) == 1
    assert await pool.fetchval("SELECT count(*) FROM concurrency_slots") == 1


async def test_raising_and_removing_a_cap(pool):
    await control.set_limits(pool, "q", key_concurrency=1)
    await enqueue_many(pool, keyed("q", "k", 6))
    assert len(await claim_all(pool, "q")) == 1
    await control.set_limits(pool, "q", key_concurrency=3)
    assert len(await claim_all(pool, "q")) == 2
    await control.set_limits(pool, "q", key_concurrency=None)
    # no cap and no other limit: the plain claim serves the queue again
    assert await store.queue_flow(pool, "q") is None
    assert len(await store.claim(pool, "q", 10, "w", 30.0)) == 3


async def test_a_reaper_round_mends_slot_rows_made_from_a_stale_cap(pool):
    await control.set_limits(pool, "q", key_concurrency=2)
    # as if a claim had read cap 1 just before the change and made one row
    await pool.execute("INSERT INTO concurrency_slots (queue, key, slot) VALUES ('q', 'k', 0)")
    assert await store.fit_slots(pool) == 1
    assert await pool.fetchval("SELECT count(*) FROM concurrency_slots WHERE key = 'k'") == 2
    assert await store.fit_slots(pool) == 0


class Spans:
    """Each handler's own record of when it ran, per key, for the overlap check."""

    def __init__(self) -> None:
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()

    def registry(self) -> Registry:
        registry = Registry()

        @registry.task("flow.span")
        async def span(payload: Any, ctx: JobContext) -> None:
            key = payload["key"]
            self.running[key] += 1
            self.peak[key] = max(self.peak[key], self.running[key])
            try:
                # Until its key has reached the cap once, a job keeps its slot (up to
                # 10 s): the cap is then reached however slowly a loaded machine starts
                # jobs, and never reached only if the claims cannot give the slots.
                for _ in range(1000):
                    if self.peak[key] >= payload["cap"]:
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(payload["seconds"])
            finally:
                self.running[key] -= 1

        return registry


async def test_a_cap_holds_across_workers_and_is_reached(pool, db_url):
    # Four workers, each on its own connections, claiming at once: per key never more
    # than its cap at any moment, as the handlers themselves see it; and the cap reached.
    await control.set_limits(pool, "q", key_concurrency=2, key_limits={"k0": 1, "k1": 5})
    rng = random.Random(7)
    specs = [
        JobSpec(
            "flow.span",
            {"key": f"k{i % 4}", "cap": (1, 5, 2, 2)[i % 4], "seconds": rng.uniform(0, 0.03)},
            queue="q",
            concurrency_key=f"k{i % 4}",
        )
        for i in range(240)
    ]
    await enqueue_many(pool, specs)
    spans = Spans()
    async with (
        running_worker(pool, db_url, spans.registry(), queues={"q": 8}),
        running_worker(pool, db_url, spans.registry(), queues={"q": 8}),
        running_worker(pool, db_url, spans.registry(), queues={"q": 8}),
        running_worker(pool, db_url, spans.registry(), queues={"q": 8}),
    ):
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 240 FROM jobs_history"), timeout=60)
    assert dict(spans.peak) == {"k0": 1, "k1": 5, "k2": 2, "k3": 2}
    assert await held_slots(pool) == {}


# --- weighted fair share ------------------------------------------------------------------


async def fair_keys_of(pool: asyncpg.Pool, jobs: list[ClaimedJob]) -> list[str]:
    rows = await pool.fetch(
        "SELECT id, fair_key FROM jobs WHERE id = ANY($1::uuid[])", [j.id for j in jobs]
    )
    keys = {r["id"]: r["fair_key"] for r in rows}
    return [keys[j.id] for j in jobs]


async def test_the_first_fair_job_makes_the_queue_fair(pool):
    assert await store.queue_flow(pool, "f") is None
    (await producer.submit(pool, JobSpec("demo.echo", queue="f", fair_key="A")))[0]
    assert await store.queue_flow(pool, "f") is not None
    # and the plain claim leaves it to claim_flow
    assert await store.claim(pool, "f", 10, "w", 30.0) == []
    assert len(await claim(pool, "f")) == 1


async def test_a_trickle_is_not_stuck_behind_a_flood(pool):
    # A floods 1,000 jobs; B sends one job every fifth claim. Counted in claims, not
    # time: each B job is taken by the first claim after its enqueue, where FIFO would
    # put it behind A's whole backlog (100 claims of 10).
    await enqueue_many(pool, keyed("f", None, 1000, fair="A"))
    waits = []
    pending: dict[uuid.UUID, int] = {}
    for round_ in range(60):
        if round_ % 5 == 0:
            job = (await producer.submit(pool, JobSpec("demo.echo", queue="f", fair_key="B")))[0]
            pending[job.id] = round_
        for job in await claim(pool, "f", 10):
            if job.id in pending:
                waits.append(round_ - pending.pop(job.id))
    assert not pending and waits == [0] * 12, waits


async def test_weights_share_a_backlog_in_proportion(pool):
    await control.set_limits(pool, "f", fair_weights={"A": 3, "B": 1})
    await enqueue_many(pool, keyed("f", None, 400, fair="A"))
    await enqueue_many(pool, keyed("f", None, 400, fair="B"))
    first = []
    for _ in range(20):
        first += await claim(pool, "f", 10)
    share = Counter(await fair_keys_of(pool, first))
    assert 135 <= share["A"] <= 165 and share["A"] + share["B"] == 200, share


async def test_an_idle_tenant_banks_no_credit(pool):
    await enqueue_many(pool, keyed("f", None, 1, fair="B"))
    await claim(pool, "f")
    await enqueue_many(pool, keyed("f", None, 600, fair="A"))
    for _ in range(25):  # A runs alone for a while
        await claim(pool, "f", 20)
    await enqueue_many(pool, keyed("f", None, 100, fair="B"))
    share = Counter(
        await fair_keys_of(pool, [j for _ in range(10) for j in await claim(pool, "f", 10)])
    )
    # B came back: it shares from now on, it does not get the next 100 to itself
    assert 40 <= share["B"] <= 60, share


async def test_fair_share_is_work_conserving(pool):
    await control.set_limits(pool, "f", fair_weights={"A": 10, "B": 1})
    await enqueue_many(pool, keyed("f", None, 30, fair="B"))
    # A, with the larger weight, has no work: B gets every slot
    assert len(await claim(pool, "f", 30)) == 30


async def test_jobs_without_a_fair_key_fill_what_tagged_jobs_leave(pool):
    await enqueue_many(pool, keyed("f", None, 3, fair="A") + keyed("f", None, 5))
    assert len(await claim(pool, "f", 6)) == 6
    assert len(await claim(pool, "f", 6)) == 2


async def test_priority_still_comes_first_in_a_fair_queue(pool):
    await enqueue_many(pool, keyed("f", None, 20, fair="A"))
    urgent = (
        await producer.submit(pool, JobSpec("demo.echo", queue="f", fair_key="A", priority=5))
    )[0]
    (first,) = await claim(pool, "f", 1)
    assert first.id == urgent.id


async def test_caps_fairness_and_a_rate_limit_together(pool):
    await control.set_limits(pool, "f", rate_limit="5/h", key_concurrency=1)
    await enqueue_many(
        pool,
        [JobSpec("demo.echo", {}, queue="f", fair_key=t, concurrency_key=t) for t in "AB" * 5],
    )
    got = await claim_all(pool, "f")
    # one per key (the cap), both tenants (fair), and the bucket charged for 2 of its 5
    assert sorted(await fair_keys_of(pool, got)) == ["A", "B"]
    await pool.execute("UPDATE jobs SET status = 'RETRY', lease_token = NULL, "
                       "lease_expires_at = NULL WHERE status = 'RUNNING'")  # fmt: skip
    assert len(await claim_all(pool, "f")) == 2
    await pool.execute("UPDATE jobs SET status = 'RETRY', lease_token = NULL, "
                       "lease_expires_at = NULL WHERE status = 'RUNNING'")  # fmt: skip
    assert len(await claim_all(pool, "f")) == 1  # 5 per hour: the bucket is spent


async def _flood_and_trickle(pool: asyncpg.Pool, db_url: str, fair: bool) -> list[dict[str, Any]]:
    """Tenant A enqueues 10,000 jobs in batches while tenant B enqueues 50 one by one,
    over the same period, on one worker of concurrency 10. For each B job: how many jobs
    started between its enqueue and its start, and how long it waited."""
    queue = "fair" if fair else "fifo"

    def spec(tenant: str) -> JobSpec:
        return JobSpec("demo.echo", {}, queue=queue, fair_key=tenant if fair else None)

    async def flood() -> None:
        for _ in range(10):
            await enqueue_many(pool, [spec("A")] * 1000)
            await asyncio.sleep(0.01)

    async def trickle() -> list[tuple[uuid.UUID, datetime]]:
        # each B job with a time on the database's clock after its commit: claims that
        # start later see it
        sent = []
        for _ in range(50):
            job = (await producer.submit(pool, spec("B")))[0]
            sent.append((job.id, await pool.fetchval("SELECT clock_timestamp()")))
            await asyncio.sleep(0.005)
        return sent

    async with running_worker(pool, db_url, queues={queue: 10}):
        _, sent = await asyncio.gather(flood(), trickle())
        await wait_for(
            lambda: pool.fetchval(
                "SELECT count(*) = 10050 FROM jobs_history WHERE queue = $1", queue
            ),
            timeout=90,
        )
    rows = await pool.fetch(
        """SELECT b.id,
                  (SELECT count(*) FROM jobs_history o
                   WHERE o.started_at > s.committed AND o.started_at < b.started_at) AS ahead,
                  extract(epoch FROM b.started_at - b.created_at) * 1000 AS wait_ms
           FROM jobs_history b
           JOIN unnest($1::uuid[], $2::timestamptz[]) AS s(id, committed) ON s.id = b.id""",
        [i for i, _ in sent],
        [t for _, t in sent],
    )
    return [dict(r) for r in rows]


async def test_a_tenant_flooding_10000_jobs_delays_a_trickle_by_a_bounded_amount(pool, db_url):
    # The README's bound, counted in jobs, not time: once a B job's enqueue has
    # committed, at most two claim batches of others start before it (a batch is the
    # worker's free slots, here at most 10): jobs tagged ahead of it are a job or two of
    # each other tenant, however many A has queued. FIFO, the control, puts B behind
    # whatever A has queued.
    fair = await _flood_and_trickle(pool, db_url, fair=True)
    fifo = await _flood_and_trickle(pool, db_url, fair=False)
    waits = {
        name: sorted(r["wait_ms"] for r in rows) for name, rows in (("fair", fair), ("fifo", fifo))
    }
    ahead = {
        name: sorted(r["ahead"] for r in rows) for name, rows in (("fair", fair), ("fifo", fifo))
    }
    print(f"B's wait p50/p99, fair: {waits['fair'][25]:.1f}/{waits['fair'][48]:.1f} ms, "
          f"FIFO: {waits['fifo'][25]:.1f}/{waits['fifo'][48]:.1f} ms; jobs ahead max, fair: "
          f"{ahead['fair'][-1]}, FIFO: {ahead['fifo'][-1]}")  # fmt: skip
    assert ahead["fair"][-1] <= 2 * 10, ahead["fair"]
    assert ahead["fifo"][-1] > 1000, ahead["fifo"]


async def test_the_fair_claim_takes_nothing_from_a_queue_just_capped(pool):
    # a worker still using claim_fair has not heard of the cap yet: it claims nothing
    await enqueue_many(pool, keyed("f", "k", 3, fair="A"))
    await control.set_limits(pool, "f", key_concurrency=1)
    assert await store.claim_fair(pool, "f", 10, "w", 30.0) == []
    flow = await store.queue_flow(pool, "f")
    assert flow is not None and flow.claim is store.claim_flow
    assert len(await claim_all(pool, "f")) == 1
