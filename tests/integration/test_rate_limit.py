"""The API's rate limit per client, kept in PostgreSQL."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import httpx

from aqueue.api.app import create_app
from aqueue.settings import Settings, rate_limit


@asynccontextmanager
async def client_from(pool, address: str, limit: str = "3/min"):
    # Budgets slow enough that no token comes back while a test runs, however loaded the
    # machine: time passing is simulated by moving the client's row back.
    app = create_app(pool, Settings(rate_limit=rate_limit(limit)))
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client


async def test_over_budget_is_a_429_with_retry_after_and_a_json_error(pool):
    async with client_from(pool, "10.0.0.1") as client:
        codes = [(await client.get("/jobs")).status_code for _ in range(3)]
        refused = await client.get("/jobs")
    assert codes == [200, 200, 200]
    assert refused.status_code == 429
    seconds = int(refused.headers["retry-after"])
    assert 19 <= seconds <= 20  # 3/min: one request's worth comes back every 20 s
    assert refused.json() == {
        "error": f"rate limit exceeded: 3/min per client; retry in {seconds}s",
        "status": 429,
    }


async def test_each_client_has_its_own_budget_and_it_refills(pool):
    async with client_from(pool, "10.0.0.2") as first, client_from(pool, "10.0.0.3") as second:
        for _ in range(3):
            await first.post("/jobs", json={"type": "demo.echo"})
        assert (await first.get("/jobs")).status_code == 429
        assert (await second.get("/jobs")).status_code == 200
        # 20 seconds later (3/min): one request's worth is back, and only one
        await pool.execute(
            "UPDATE api_rate_limits SET tat = tat - interval '20 seconds' WHERE client = '10.0.0.2'"
        )
        assert (await first.get("/jobs")).status_code == 200
        assert (await first.get("/jobs")).status_code == 429
    # refused requests wrote nothing
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 3


async def test_two_replicas_share_one_budget(pool):
    # two apps on one database: the budget is the database's, not a process's
    async with client_from(pool, "10.0.0.4") as one, client_from(pool, "10.0.0.4") as two:
        codes = [(await (one if i % 2 else two).get("/jobs")).status_code for i in range(6)]
    assert codes.count(200) == 3 and codes.count(429) == 3


async def test_probes_are_never_limited(pool):
    async with client_from(pool, "10.0.0.5", "1/h") as client:
        assert (await client.get("/jobs")).status_code == 200
        assert (await client.get("/jobs")).status_code == 429
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_without_the_option_nothing_is_limited(pool):
    transport = httpx.ASGITransport(app=create_app(pool, Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        codes = {(await client.get("/jobs")).status_code for _ in range(20)}
    assert codes == {200}
    assert await pool.fetchval("SELECT count(*) FROM api_rate_limits") == 0


async def test_concurrent_requests_of_one_client_are_decided_together_and_exactly(pool):
    # Requests that arrive while the client's statement runs go in the next one, as a
    # batch: the budget still lets exactly its size through.
    async with client_from(pool, "10.0.0.6") as client:
        responses = await asyncio.gather(*(client.get("/jobs") for _ in range(10)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 3 + [429] * 7
