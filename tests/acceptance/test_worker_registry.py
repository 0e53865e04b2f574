"""The worker registry from outside: GET /workers lists two running worker processes,
marks one lost once it was killed and stopped renewing, and a running job's locked_by
names a listed worker."""

from __future__ import annotations

import signal

import httpx
import pytest

import aqueue
from tests.helpers import ServeProcess, free_port, wait_for

pytestmark = pytest.mark.timeout(120)

# heartbeat = lease / 3: a worker silent for three heartbeats (3 s) counts as lost
LEASE = "3"


async def test_two_workers_listed_and_a_killed_one_marked_lost(db_url, pool):
    port = free_port()
    api = await ServeProcess(
        "--roles", "api", "--database-url", db_url, "--port", str(port),
        "--lease-seconds", LEASE,
    ).start(marker="api listening")  # fmt: skip
    workers = [
        await ServeProcess(
            "--roles", "worker", "--database-url", db_url, "--queues", "default:2",
            "--lease-seconds", LEASE, "--app", "tests.apps:registry",
        ).start()
        for _ in range(2)
    ]  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def listed(state: str, count: int) -> list[dict[str, object]] | None:
                rows = (await http.get("/workers")).json()["workers"]
                matching = [w for w in rows if w["state"] == state and "worker" in w["roles"]]
                return matching if len(matching) == count else None

            alive = await wait_for(lambda: listed("alive", 2), timeout=20)
            assert {w["queues"]["default"] for w in alive} == {2}  # type: ignore[index]
            # a running job's locked_by is one of them
            job = await aqueue.enqueue(pool, "test.nap", {"seconds": 30})
            running = await wait_for(
                lambda: pool.fetchval(
                    "SELECT locked_by FROM jobs WHERE id = $1 AND status = 'RUNNING'", job.id
                ),
                timeout=20,
            )
            assert running in {w["id"] for w in alive}
            # kill the other one: no goodbye, its heartbeat just stops
            victim = next(w for w in alive if w["id"] != running)
            killed = next(p for p in workers if p.proc is not None and p.proc.pid == victim["pid"])
            await killed.kill()
            lost = await wait_for(lambda: listed("lost", 1), timeout=30)
            assert lost[0]["id"] == victim["id"]
            assert (await listed("alive", 1)) is not None
    finally:
        for worker in workers:  # the napping job would hold a graceful stop for 30 s
            await worker.kill()
        api.signal(signal.SIGTERM)
        assert await api.wait() == 0
