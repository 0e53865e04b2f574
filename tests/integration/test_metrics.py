"""GET /metrics against the real PostgreSQL: every name of the metrics spec is there, and
the values move when jobs are enqueued, run, fail, lose their lease, and when another
session holds a transaction open. The text passes `promtool check metrics`."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from aqueue import JobSpec, JobStatus, enqueue, producer, store
from aqueue.api.app import create_app
from aqueue.metrics import CONTENT_TYPE_LATEST, Metrics
from aqueue.notifier import Notifier
from aqueue.reaper import Reaper
from aqueue.registry import Registry
from aqueue.server import build_roles
from aqueue.settings import Settings
from aqueue.worker import Worker
from tests.helpers import fast_settings, free_port, running_worker, wait_for, wait_status
from tests.metrics_spec import (
    COUNTERS,
    DEPTH_STATUSES,
    GAUGES,
    HISTOGRAMS,
    PROCESS,
    Scrape,
    check_with_promtool,
)


@pytest.fixture
async def metrics() -> Metrics:
    # no cache: each scrape reads the database anew
    return Metrics(cache_seconds=0.0, lost_after_seconds=15.0)


@pytest.fixture
async def client(pool: asyncpg.Pool, metrics: Metrics) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(pool, Settings(), metrics=metrics)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        yield c


async def scrape(client: httpx.AsyncClient) -> Scrape:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return Scrape(response.text)


async def post_job(client: httpx.AsyncClient, **job: Any) -> uuid.UUID:
    response = await client.post("/jobs", json=job)
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["id"])


async def test_metrics_carry_every_name_of_the_spec_with_its_labels(client, pool, db_url, metrics):
    # one of everything first, so that every family has samples to show its labels
    async with running_worker(pool, db_url, metrics=metrics):
        await post_job(client, type="demo.echo")
        failing = await post_job(client, type="demo.fail", max_attempts=1)
        await wait_status(pool, failing, JobStatus.DEAD)
        await wait_for(lambda: _completed_written(metrics, 2))
    await enqueue(pool, "demo.echo", {})
    await store.claim(pool, "default", 1, "dead-worker", 0.05)
    await asyncio.sleep(0.1)
    await Reaper(pool, fast_settings(), "test", metrics=metrics).reap()
    seen = await scrape(client)
    for kind, names in (("counter", COUNTERS), ("histogram", HISTOGRAMS), ("gauge", GAUGES)):
        for name, labels in names.items():
            assert seen.kinds.get(name) == kind, f"{name}: {seen.kinds.get(name)}, not {kind}"
            assert seen.labels[name] == labels, f"{name} has labels {seen.labels[name]}"
    for name in PROCESS:
        assert name in seen.kinds, f"no {name}: the process collectors are missing"
    depth = {dict(ls)["status"] for (n, ls) in seen.samples if n == "jobs_queue_depth"}
    assert depth == DEPTH_STATUSES
    check_with_promtool(seen.text)


async def _completed_written(metrics: Metrics, n: int) -> bool:
    return sum(sum(s.values()) for s in metrics.written.values()) >= n


async def test_a_fresh_process_shows_every_family_and_passes_promtool(client):
    seen = await scrape(client)
    for name in (*COUNTERS, *HISTOGRAMS, *GAUGES):
        assert name in seen.kinds, name
    assert seen.value("notifier_reconnects_total") == 0
    check_with_promtool(seen.text)


async def test_counters_and_histograms_move_when_jobs_run(client, pool, db_url, metrics):
    before = await scrape(client)
    assert before.value("jobs_enqueued_total", queue="default", type="demo.echo") is None
    async with running_worker(pool, db_url, metrics=metrics):
        ids = [await post_job(client, type="demo.echo", payload={"n": n}) for n in range(5)]
        for job_id in ids:
            await wait_status(pool, job_id, JobStatus.COMPLETED)
        await wait_for(lambda: _completed_written(metrics, 5))
        seen = await scrape(client)
    labels = {"queue": "default", "type": "demo.echo"}
    assert seen.value("jobs_enqueued_total", **labels) == 5
    assert seen.value("jobs_completed_total", **labels) == 5
    assert seen.value("jobs_failed_total", **labels) == 0
    assert seen.value("worker_jobs_completed_total", status="COMPLETED", **labels) == 5
    assert seen.value("worker_jobs_completed_total", status="RETRY", **labels) == 0
    assert seen.value("worker_job_duration_seconds_count", **labels) == 5
    assert seen.value("worker_job_duration_seconds_bucket", le="+Inf", **labels) == 5
    assert seen.value("job_pickup_latency_seconds_count", queue="default") == 5
    assert 0 <= seen.value("job_pickup_latency_seconds_sum", queue="default") < 5 * 10  # type: ignore[operator]
    claims = seen.value("worker_claim_batch_size_count", queue="default")
    assert claims is not None and claims >= 1
    assert seen.value("worker_claim_batch_size_sum", queue="default") == 5
    assert (seen.value("worker_claim_duration_seconds_count", queue="default") or 0) == claims
    assert seen.value("completer_batch_size_sum") == 5
    assert (seen.value("completer_write_duration_seconds_count") or 0) >= 1
    # an idempotent repeat stores nothing, and counts nothing
    for _ in range(2):
        await client.post("/jobs", json={"type": "demo.echo", "idempotency_key": "once"})
    again = await scrape(client)
    assert again.value("jobs_enqueued_total", **labels) == 6


async def test_a_failing_job_moves_failed_retried_and_dead(client, pool, db_url, metrics):
    async with running_worker(pool, db_url, metrics=metrics):
        job_id = await post_job(client, type="demo.fail", max_attempts=2)
        await wait_status(pool, job_id, JobStatus.DEAD)
        await wait_for(lambda: _completed_written(metrics, 2))
    seen = await scrape(client)
    labels = {"queue": "default", "type": "demo.fail"}
    assert seen.value("jobs_failed_total", **labels) == 2
    assert seen.value("jobs_retried_total", **labels) == 1
    assert seen.value("jobs_dead_total", **labels) == 1
    assert seen.value("jobs_completed_total", **labels) == 0
    assert seen.value("worker_jobs_completed_total", status="RETRY", **labels) == 1
    assert seen.value("worker_jobs_completed_total", status="DEAD", **labels) == 1
    assert seen.value("worker_job_duration_seconds_count", **labels) == 2


async def test_the_gauges_show_a_backlog_by_queue_and_status(client, pool, db_url, metrics):
    later = datetime.now(UTC) + timedelta(hours=1)
    await producer.submit_many(
        pool,
        [JobSpec(type="demo.echo", queue="backlog") for _ in range(7)]
        + [JobSpec(type="demo.echo", queue="backlog", run_after=later) for _ in range(2)],
        metrics,
    )
    parent = await enqueue(pool, "demo.echo", {}, queue="backlog", run_after=later)
    await enqueue(pool, "demo.echo", {}, queue="backlog", depends_on=[parent.id])
    await asyncio.sleep(0.05)
    async with running_worker(pool, db_url, metrics=metrics, queues={"default": 1}):
        # a job that runs for a while: RUNNING in its queue while the scrape looks
        await post_job(client, type="demo.sleep", payload={"seconds": 3})

        async def running() -> Scrape | None:
            seen = await scrape(client)
            return seen if seen.value("jobs_running", queue="default") == 1 else None

        seen = await wait_for(running, timeout=5)
    assert seen.value("jobs_enqueued_total", queue="backlog", type="demo.echo") == 9
    assert seen.value("jobs_pending", queue="backlog") == 7
    assert seen.value("jobs_queue_depth", queue="backlog", status="pending") == 7
    assert seen.value("jobs_queue_depth", queue="backlog", status="scheduled") == 3
    assert seen.value("jobs_queue_depth", queue="backlog", status="waiting") == 1
    assert seen.value("jobs_queue_depth", queue="backlog", status="running") == 0
    assert seen.value("jobs_queue_depth", queue="default", status="running") == 1
    assert seen.value("jobs_running", queue="backlog") == 0
    oldest = seen.value("jobs_oldest_pending_age_seconds", queue="backlog")
    assert oldest is not None and 0.05 <= oldest < 60
    assert seen.value("jobs_oldest_pending_age_seconds", queue="default") == 0
    assert seen.value("workers_alive", queue="default") == 1
    assert seen.value("workers_alive", queue="backlog") == 0
    live = seen.value("jobs_table_live_tuples")
    assert live is not None and live >= 0
    assert (seen.value("jobs_table_size_bytes") or 0) > 0
    assert (seen.value("jobs_history_size_bytes") or 0) > 0


async def test_a_reclaimed_lease_counts(client, pool, metrics):
    await enqueue(pool, "demo.echo", {}, queue="lost")
    await enqueue(pool, "demo.echo", {}, queue="lost", max_attempts=1)
    await store.claim(pool, "lost", 2, "dead-worker", 0.05)
    await asyncio.sleep(0.1)
    assert await Reaper(pool, fast_settings(), "test", metrics=metrics).reap() == 2
    seen = await scrape(client)
    assert seen.value("lease_reclaims_total", queue="lost") == 2


async def test_the_bloat_gauges_see_a_transaction_held_open_elsewhere(client, pool, db_url):
    quiet = await scrape(client)
    assert quiet.value("database_idle_in_transaction_sessions") == 0
    assert quiet.value("database_idle_in_transaction_max_age_seconds") == 0
    holder = await asyncpg.connect(db_url)
    try:
        # a snapshot held open (what holds back vacuum), then idle in its transaction
        await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await holder.fetchval("SELECT count(*) FROM jobs")
        for _ in range(3):  # transactions after it: its xmin gets older
            await enqueue(pool, "demo.echo", {})
        await asyncio.sleep(0.2)
        seen = await scrape(client)
    finally:
        await holder.close()
    assert (seen.value("database_oldest_xmin_age_transactions") or 0) > 0
    assert (seen.value("database_idle_in_transaction_sessions") or 0) >= 1
    assert (seen.value("database_idle_in_transaction_max_age_seconds") or 0) >= 0.2
    assert (seen.value("database_oldest_transaction_age_seconds") or 0) >= 0.2


async def test_a_reconnected_notifier_counts(pool, db_url):
    metrics = Metrics()
    notifier = Notifier(db_url, metrics)
    task = asyncio.create_task(notifier.run())
    try:
        await asyncio.wait_for(notifier.connected.wait(), 10)
        assert metrics.notifier_reconnects == 0
        old = notifier.backend_pid
        await pool.execute("SELECT pg_terminate_backend($1)", old)

        async def back() -> bool:
            return notifier.connected.is_set() and notifier.backend_pid != old

        await wait_for(back)
        assert metrics.notifier_reconnects == 1
    finally:
        notifier.stop()
        await task


class CountingPool:
    """A pool stand-in that counts the gauge statements and can be made to fail."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.calls = 0
        self.down = False

    async def fetchrow(self, query: str, *args: Any) -> Any:
        self.calls += 1
        if self.down:
            raise ConnectionRefusedError("connection refused")
        await asyncio.sleep(0.05)  # long enough for the scrapes to overlap
        return await self.pool.fetchrow(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        raise AssertionError("the gauges are one statement")

    async def fetchval(self, query: str, *args: Any) -> Any:
        raise AssertionError("the gauges are one statement")

    async def execute(self, query: str, *args: Any) -> str:
        raise AssertionError("the gauges are one statement")


async def test_concurrent_scrapes_share_one_statement_and_the_cache_holds_it(pool):
    metrics = Metrics(cache_seconds=60.0)
    counting = CountingPool(pool)
    await asyncio.gather(*(metrics.refresh(counting) for _ in range(5)))
    assert counting.calls == 1
    await metrics.refresh(counting)
    assert counting.calls == 1  # cached
    assert metrics.gauges is not None


async def test_without_the_database_metrics_answer_without_the_gauges_and_log_once(pool, caplog):
    metrics = Metrics(cache_seconds=0.0)
    counting = CountingPool(pool)
    app = create_app(counting, Settings(), metrics=metrics)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    caplog.set_level(logging.DEBUG, logger="aqueue.metrics")
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        assert (await scrape(client)).value("jobs_table_size_bytes") is not None
        counting.down = True
        for _ in range(3):
            seen = await scrape(client)
            assert "jobs_table_size_bytes" not in seen.kinds  # left out, never stale
            assert "jobs_pending" not in seen.kinds
            assert "process_cpu_seconds_total" in seen.kinds
            assert "jobs_enqueued_total" in seen.kinds
        counting.down = False
        assert (await scrape(client)).value("jobs_table_size_bytes") is not None
    warnings = [
        r for r in caplog.records if r.name == "aqueue.metrics" and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]  # went, and came back
    assert "connection refused" in warnings[0].getMessage()
    assert counting.calls == 5


async def test_metrics_answer_any_host_and_spend_no_rate_limit(pool):
    from aqueue.settings import rate_limit

    settings = Settings(allowed_hosts=("api.example.com",), rate_limit=rate_limit("1/min"))
    app = create_app(pool, settings, metrics=Metrics())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.7:8000") as c:
        for _ in range(3):
            assert (await c.get("/metrics")).status_code == 200
        assert (await c.get("/jobs")).status_code == 400  # the Host check still holds


async def test_an_app_without_metrics_has_no_metrics_route(pool):
    transport = httpx.ASGITransport(app=create_app(pool, Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        assert (await c.get("/metrics")).status_code == 404


async def test_only_a_process_that_serves_metrics_counts(pool, db_url):
    def worker_of(roles: list[Any]) -> Worker:
        return next(r for r in roles if isinstance(r, Worker))

    worker_only = build_roles(pool, db_url, Settings(roles=("worker",)), Registry())
    assert worker_of(worker_only).metrics is None
    assert not any(r.name == "metrics" for r in worker_only)
    served = build_roles(
        pool, db_url, Settings(roles=("worker",), metrics_port=free_port()), Registry()
    )
    assert isinstance(worker_of(served).metrics, Metrics)
    assert any(r.name == "metrics" for r in served)
