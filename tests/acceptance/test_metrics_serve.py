"""`aqueue serve` with metrics, from outside: a worker-only process serves GET /metrics on
--metrics-port; with the api role too, both ports answer from the same registry."""

from __future__ import annotations

import signal

import httpx
import pytest

from aqueue import JobSpec, store
from tests.helpers import ServeProcess, free_port, wait_for
from tests.metrics_spec import COUNTERS, GAUGES, HISTOGRAMS, Scrape, check_with_promtool

pytestmark = pytest.mark.timeout(120)


async def test_a_worker_process_serves_metrics_on_its_metrics_port(pool, db_url):
    await store.insert_jobs(pool, [JobSpec(type="demo.echo", payload={"n": n}) for n in range(20)])
    port = free_port()
    worker = await ServeProcess(
        "--roles", "worker", "--database-url", db_url, "--metrics-port", str(port)
    ).start()
    try:
        await worker.wait_for_line(f"metrics on http://127.0.0.1:{port}/metrics")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def all_counted() -> Scrape | None:
                response = await http.get("/metrics")
                assert response.status_code == 200
                seen = Scrape(response.text)
                done = seen.value("jobs_completed_total", queue="default", type="demo.echo")
                return seen if done == 20 else None

            seen = await wait_for(all_counted, timeout=30)
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            assert (await http.get("/jobs")).status_code == 404  # metrics only
        for name in (*COUNTERS, *HISTOGRAMS, *GAUGES):
            assert name in seen.kinds, name
        labels = {"queue": "default", "type": "demo.echo"}
        assert seen.value("worker_jobs_completed_total", status="COMPLETED", **labels) == 20
        assert seen.value("worker_job_duration_seconds_count", **labels) == 20
        assert seen.value("job_pickup_latency_seconds_count", queue="default") == 20
        assert seen.value("workers_alive", queue="default") == 1
        assert seen.value("jobs_enqueued_total", **labels) is None  # enqueued elsewhere
        check_with_promtool(seen.text)
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    finally:
        await worker.kill()


async def test_with_the_api_role_both_ports_answer_from_one_registry(db_url):
    api_port, metrics_port = free_port(), free_port()
    server = await ServeProcess(
        "--roles",
        "api,worker",
        "--database-url",
        db_url,
        "--port",
        str(api_port),
        "--metrics-port",
        str(metrics_port),
    ).start()
    try:
        await server.wait_for_line("api listening")
        async with httpx.AsyncClient() as http:
            created = await http.post(
                f"http://127.0.0.1:{api_port}/jobs", json={"type": "demo.echo"}
            )
            assert created.status_code == 201
            for port in (api_port, metrics_port):
                seen = Scrape((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
                enqueued = seen.value("jobs_enqueued_total", queue="default", type="demo.echo")
                assert enqueued == 1, port
    finally:
        server.signal(signal.SIGTERM)
        await server.wait()
        await server.kill()


async def test_a_metrics_port_in_use_fails_at_start(db_url):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ServeProcess(
            "--roles", "worker", "--database-url", db_url, "--metrics-port", str(port)
        )
        with pytest.raises(AssertionError, match="aqueue serve did not start"):
            await server.start(timeout=20)
        assert any(f"cannot listen on 127.0.0.1:{port}" in line for line in server.lines)
