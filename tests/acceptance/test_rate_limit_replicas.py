"""Two API replicas with --rate-limit 5/s, hit alternately, let through one shared budget
and answer the rest 429 with Retry-After."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests.helpers import ServeProcess, free_port

pytestmark = pytest.mark.timeout(120)


async def test_two_replicas_spend_one_budget(db_url):
    ports = [free_port(), free_port()]
    replicas = []
    try:
        for port in ports:
            replicas.append(
                await ServeProcess(
                    "--roles", "api", "--database-url", db_url, "--port", str(port),
                    "--rate-limit", "5/s",
                ).start(marker="api listening")
            )  # fmt: skip
        clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}") for p in ports]
        responses = []
        began = time.monotonic()
        for i in range(40):
            responses.append(await clients[i % 2].get("/jobs"))
        elapsed = time.monotonic() - began
        for client in clients:
            await client.aclose()
    finally:
        for replica in replicas:
            replica.signal(signal.SIGTERM)
        for replica in replicas:
            assert await replica.wait() == 0
    allowed = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(allowed) + len(refused) == 40
    # one budget: a burst of 5, then 5 a second, whichever replica answers
    assert 5 <= len(allowed) <= 5 + 5 * elapsed + 1, (len(allowed), elapsed)
    assert refused and all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert "rate limit exceeded: 5/s per client" in refused[0].json()["error"]
