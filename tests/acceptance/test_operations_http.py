"""Operating the queue over HTTP against `aqueue serve` (one process: api, worker and
reaper, one slot): cancel, retry, pause and resume, priorities that cannot starve,
dependencies, long-polls, timeouts and the queue overview."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.helpers import ServeProcess, free_port, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def http(db_url: str, request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    marker = request.node.get_closest_marker("promote_after")
    port = free_port()
    server = await ServeProcess(
        "--database-url",
        db_url,
        "--port",
        str(port),
        "--app",
        "tests.apps:registry",
        "--queues",
        "default:1",
        "--promote-after",
        str(marker.args[0] if marker else 1),
        "--reaper-interval",
        "0.2",
        "--backoff-base",
        "0.1",
        "--backoff-cap",
        "0.2",
    ).start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=40) as client:
            yield client
    finally:
        server.signal(signal.SIGTERM)
        assert await server.wait() == 0


async def _post(http: httpx.AsyncClient, path: str, body: Any = None) -> httpx.Response:
    return await http.post(path, json=body if body is not None else {})


async def _job(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await http.get(f"/jobs/{job_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def _until(http: httpx.AsyncClient, job_id: str, status: str, timeout: float = 10) -> dict:
    async def reached() -> dict | None:
        job = await _job(http, job_id)
        return job if job["status"] == status else None

    return await wait_for(reached, timeout)


async def _enqueue(http: httpx.AsyncClient, **fields: Any) -> str:
    response = await _post(http, "/jobs", fields)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_cancel_a_pending_and_a_running_job(http):
    running = await _enqueue(http, type="test.nap", payload={"seconds": 60})
    await _until(http, running, "RUNNING")
    pending = await _enqueue(http, type="demo.echo", payload={})
    assert (await _post(http, f"/jobs/{pending}/cancel")).json()["status"] == "CANCELLED"
    cancelled = await _post(http, f"/jobs/{running}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    # the one slot is free again at once: the next job runs
    after = await _enqueue(http, type="demo.echo", payload={})
    await _until(http, after, "COMPLETED", timeout=5)  # a heartbeat would take 10 s
    job = await _job(http, running)
    assert job["status"] == "CANCELLED"
    assert job["events"][-1]["status"] == "CANCELLED"
    assert (await _job(http, pending))["status"] == "CANCELLED"
    again = await _post(http, f"/jobs/{running}/cancel")
    assert again.status_code == 409 and "already finished" in again.json()["error"]
    unknown = await _post(http, "/jobs/01a00000-0000-7000-8000-000000000000/cancel")
    assert unknown.status_code == 404


async def test_retry_a_dead_job_to_completed(http, pool):
    await pool.execute("CREATE TABLE ran_once (job_id uuid PRIMARY KEY)")
    job_id = await _enqueue(http, type="test.fail_once", payload={}, max_attempts=1)
    await _until(http, job_id, "DEAD")
    retried = await _post(http, f"/jobs/{job_id}/retry")
    assert retried.status_code == 200 and retried.json()["attempts"] == 0
    done = await _until(http, job_id, "COMPLETED")
    assert done["result"] == "second time lucky"
    assert [e["status"] for e in done["events"] if e["status"] != "RUNNING"][-3:] == [
        "DEAD",
        "PENDING",
        "COMPLETED",
    ]
    not_dead = await _post(http, f"/jobs/{job_id}/retry")
    assert not_dead.status_code == 409


async def test_retry_dead_of_a_queue(http):
    ids = [
        await _enqueue(http, type="demo.fail", payload={}, max_attempts=1, queue="default")
        for _ in range(3)
    ]
    for job_id in ids:
        await _until(http, job_id, "DEAD")
    response = await _post(http, "/queues/default/retry-dead", {"type": "demo.fail"})
    assert response.json()["retried"] == 3
    bad = await _post(http, "/queues/default/retry-dead", {"kind": "x"})
    assert bad.status_code == 400


async def test_pause_while_jobs_arrive_then_resume(http, pool):
    assert (await _post(http, "/queues/default/pause")).json() == {
        "name": "default",
        "paused": True,
    }
    ids = [await _enqueue(http, type="demo.echo", payload={"n": i}) for i in range(5)]
    await asyncio.sleep(1.5)
    assert {(await _job(http, i))["status"] for i in ids} == {"PENDING"}

    async def overview() -> dict | None:
        queues = {q["name"]: q for q in (await http.get("/queues")).json()["queues"]}
        return queues if queues["default"]["workers"] else None  # registry row written

    queues = await wait_for(overview)
    assert queues["default"]["paused"] is True
    assert queues["default"]["depth"]["pending"] == 5
    assert len(queues["default"]["workers"]) == 1
    await _post(http, "/queues/default/resume")
    for job_id in ids:
        await _until(http, job_id, "COMPLETED", timeout=3)


@pytest.mark.promote_after(3600)  # a job waiting 1 s on a loaded machine would be promoted
async def test_priority_order_on_a_one_slot_worker(http, pool):
    await _post(http, "/queues/default/pause")
    ids = {
        p: await _enqueue(http, type="demo.echo", payload={"p": p}, priority=p)
        for p in (0, 7, -2, 3)
    }
    await _post(http, "/queues/default/resume")
    for job_id in ids.values():
        await _until(http, job_id, "COMPLETED")
    started = await pool.fetch("SELECT priority FROM all_jobs ORDER BY started_at")
    assert [r["priority"] for r in started] == [7, 3, 0, -2]


async def test_a_low_priority_job_starts_within_the_bound_under_a_high_priority_stream(http, pool):
    stop = asyncio.Event()

    async def stream() -> None:
        while not stop.is_set():
            await _post(
                http,
                "/jobs",
                {"type": "test.nap", "payload": {"seconds": 0.05}, "priority": 100},
            )
            await asyncio.sleep(0.02)

    streaming = [asyncio.create_task(stream()) for _ in range(3)]
    try:
        await asyncio.sleep(0.5)
        low = await _enqueue(http, type="demo.echo", payload={}, priority=-100)
        # --promote-after 1 and a reaper round every 0.2 s: it starts in about 1.2 s
        done = await _until(http, low, "COMPLETED", timeout=15)
        backlog = await pool.fetchval(
            "SELECT count(*) FROM jobs WHERE status = 'PENDING' AND priority = 100"
        )
    finally:
        stop.set()
        await asyncio.gather(*streaming)
    assert backlog > 0
    assert done["started_at"] is not None


async def test_a_chain_runs_in_order_and_a_failed_parent_cancels_its_child(http, pool):
    a = await _enqueue(http, type="demo.sleep", payload={"seconds": 0.2})
    b = await _enqueue(http, type="demo.echo", payload={}, depends_on=[a], priority=10)
    c = await _enqueue(http, type="demo.echo", payload={}, depends_on=[b], priority=20)
    await _until(http, c, "COMPLETED")
    order = await pool.fetch("SELECT id::text FROM all_jobs ORDER BY started_at")
    assert [r["id"] for r in order] == [a, b, c]
    assert (await _job(http, c))["depends_on"] == [b]

    parent = await _enqueue(http, type="demo.fail", payload={}, max_attempts=1)
    child = await _enqueue(http, type="demo.echo", payload={}, depends_on=[parent])
    cancelled = await _until(http, child, "CANCELLED")
    assert parent in cancelled["last_error"]
    unknown = await _post(
        http,
        "/jobs",
        {"type": "demo.echo", "depends_on": ["01a00000-0000-7000-8000-000000000000"]},
    )
    assert unknown.status_code == 400 and "unknown job" in unknown.json()["error"]
    bad = await _post(http, "/jobs", {"type": "demo.echo", "depends_on": ["nope"]})
    assert bad.status_code == 422


async def test_a_long_poll_returns_as_the_job_completes(http):
    job_id = await _enqueue(http, type="demo.sleep", payload={"seconds": 0.5})
    loop = asyncio.get_running_loop()
    began = loop.time()
    response = await http.get(f"/jobs/{job_id}", params={"wait": 20})
    assert response.json()["status"] == "COMPLETED"
    assert loop.time() - began < 5  # the completion answered, not the 20 s limit
    slow = await _enqueue(http, type="test.nap", payload={"seconds": 30})
    still = await http.get(f"/jobs/{slow}", params={"wait": 0.5})
    assert still.status_code == 200 and still.json()["status"] in ("PENDING", "RUNNING")
    too_long = await http.get(f"/jobs/{slow}", params={"wait": 31})
    assert too_long.status_code == 400


async def test_a_timed_out_job_fails_with_a_timeout_error(http):
    job_id = await _enqueue(
        http, type="demo.sleep", payload={"seconds": 30}, timeout_seconds=0.3, max_attempts=1
    )
    dead = await _until(http, job_id, "DEAD")
    assert "JobTimeout" in dead["last_error"]
    bad = await _post(http, "/jobs", {"type": "demo.echo", "timeout_seconds": -1})
    assert bad.status_code == 422


async def test_workers_lists_the_serving_process(http):
    async def listed() -> list | None:
        return (await http.get("/workers")).json()["workers"] or None

    workers = await wait_for(listed)
    assert len(workers) == 1 and workers[0]["state"] == "alive"
    assert workers[0]["queues"] == {"default": 1}
