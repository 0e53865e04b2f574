"""GET /stats (the dashboard's throughput and failure charts) against a real PostgreSQL:
its shape, its bounds, and its numbers as jobs finish."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from aqueue import JobStatus, enqueue
from aqueue.api.openapi import openapi_document
from aqueue.settings import Settings
from tests.helpers import running_worker, wait_status
from tests.integration.test_api import api_client


@pytest.fixture
async def client(pool):
    async with api_client(pool, Settings()) as c:
        yield c


def totals(body: dict) -> dict[str, tuple[int, int]]:
    return {q["name"]: (sum(q["completed"]), sum(q["failed"])) for q in body["queues"]}


async def test_an_hour_of_nothing_is_a_window_of_sixty_minutes_and_no_queue(client):
    r = await client.get("/stats")
    assert r.status_code == 200
    body = r.json()
    assert body["minutes"] == 60 and body["step_seconds"] == 60 and body["queues"] == []
    start, now = datetime.fromisoformat(body["start"]), datetime.fromisoformat(body["now"])
    assert start.second == 0 and start.microsecond == 0
    # the last of the 60 minutes is the current one
    assert start + timedelta(minutes=59) <= now < start + timedelta(minutes=60)


@pytest.mark.parametrize("minutes", ["0", "1441", "-1", "1.5", "abc", "", "99999999999", " 5"])
async def test_minutes_outside_1_to_1440_is_a_400_saying_so(client, minutes):
    r = await client.get("/stats", params={"minutes": minutes})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.json()["status"] == 400 and "from 1 to 1440" in r.json()["error"]


async def test_an_unknown_parameter_is_a_400(client):
    r = await client.get("/stats", params={"minute": "5"})
    assert r.status_code == 400 and "minute" in r.json()["error"]


@pytest.mark.parametrize("minutes", [1, 1440])
async def test_each_queue_has_one_count_per_minute_of_the_window(client, pool, db_url, minutes):
    # a one-minute window holds what finished in the current minute: keep the jobs and the
    # question in one minute of the database's clock
    second = await pool.fetchval("SELECT extract(second FROM clock_timestamp())")
    if second > 45:
        await asyncio.sleep(60.5 - float(second))
    await enqueue(pool, "demo.echo", {})
    async with running_worker(pool, db_url):
        job = await enqueue(pool, "demo.echo", {})
        await wait_status(pool, job.id, JobStatus.COMPLETED)
    body = (await client.get("/stats", params={"minutes": minutes})).json()
    assert body["minutes"] == minutes
    [queue] = body["queues"]
    assert queue["name"] == "default"
    assert len(queue["completed"]) == len(queue["failed"]) == minutes
    assert sum(queue["completed"]) == 2 and queue["completed"][-1] in (0, 2)


async def test_completed_and_failed_attempts_count_per_queue_as_jobs_finish(client, pool, db_url):
    before = (await client.get("/stats")).json()
    assert totals(before) == {}
    queues = {"default": 4, "mail": 4}
    async with running_worker(pool, db_url, queues=queues):
        done = [await enqueue(pool, "demo.echo", {"n": n}) for n in range(3)]
        done.append(await enqueue(pool, "demo.echo", {}, queue="mail"))
        dead = [await enqueue(pool, "demo.fail", {}, max_attempts=1) for _ in range(2)]
        # fails twice: a RETRY, then DEAD; both are failed attempts
        twice = await enqueue(pool, "demo.fail", {}, queue="mail", max_attempts=2)
        for job in done:
            await wait_status(pool, job.id, JobStatus.COMPLETED)
        for job in [*dead, twice]:
            await wait_status(pool, job.id, JobStatus.DEAD)
    after = (await client.get("/stats")).json()
    assert totals(after) == {"default": (3, 2), "mail": (1, 2)}
    # and a cancel is no failure
    job = await enqueue(pool, "demo.echo", {}, queue="idle")
    await client.post(f"/jobs/{job.id}/cancel", json={})
    assert "idle" not in totals((await client.get("/stats")).json())


async def test_an_attempt_counts_in_its_own_minute_and_only_inside_the_window(client, pool):
    at = await pool.fetchval(
        """INSERT INTO job_events (job_id, at, status, attempt, queue)
           VALUES (gen_random_uuid(), now() - interval '10 minutes', 'COMPLETED', 1, 'old')
           RETURNING date_trunc('minute', at)"""
    )
    assert "old" not in totals((await client.get("/stats", params={"minutes": 5})).json())
    body = (await client.get("/stats", params={"minutes": 15})).json()
    [queue] = body["queues"]
    index = int((at - datetime.fromisoformat(body["start"])).total_seconds() // 60)
    assert queue["completed"][index] == 1 and sum(queue["completed"]) == 1


def test_the_openapi_document_describes_stats():
    operation = openapi_document()["paths"]["/stats"]["get"]
    [minutes] = operation["parameters"]
    assert minutes["schema"]["minimum"] == 1 and minutes["schema"]["maximum"] == 1440
    assert {"200", "400"} <= set(operation["responses"])
