"""Cross-origin access over real HTTP: off by default, no Access-Control-* header on any
answer; with --cors-origins, the pages of those origins get a preflight and their
requests act (the cross-site check lets exactly them through), and any other origin is
refused with a 403 that carries no CORS header."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.helpers import api_server

pytestmark = pytest.mark.timeout(120)

APP = "https://app.example.com"
DEV = "http://localhost:3000"
EVIL = "https://evil.example"


async def serve(db_url: str, *args: str) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        api_server(db_url, *args) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        yield client


@pytest.fixture
async def plain(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async for client in serve(db_url):
        yield client


@pytest.fixture
async def cors(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    # given as an operator might: upper case and a default port, normalised to what
    # browsers send
    async for client in serve(db_url, "--cors-origins", "https://APP.example.com:443, " + DEV):
        yield client


def cors_headers(answer: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k.lower().startswith("access-control-")}


def preflight(origin: str, method: str = "POST", headers: str = "content-type") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def from_page(origin: str) -> dict[str, str]:
    """What a browser sends with a page's fetch() to another origin."""
    return {"Origin": origin, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}


JOB = {"type": "demo.echo", "payload": {"n": 1}}


async def job_count(db_url: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM all_jobs"))
    finally:
        await conn.close()


async def test_by_default_no_answer_carries_cors_headers(plain, db_url):
    asked = await plain.options("/jobs", headers=preflight(APP))
    assert asked.status_code == 405, asked.text  # a preflight is no route's method
    assert asked.headers["content-type"] == "application/json"
    assert cors_headers(asked) == {}
    read = await plain.get("/queues", headers={"Origin": APP})
    assert read.status_code == 200 and cors_headers(read) == {}
    posted = await plain.post("/jobs", json=JOB, headers=from_page(APP))
    assert posted.status_code == 403 and cors_headers(posted) == {}
    assert await job_count(db_url) == 0
    # clients that are not browsers are not concerned
    assert (await plain.post("/jobs", json=JOB)).status_code == 201


async def test_a_configured_origin_gets_a_preflight_and_its_post_acts(cors, db_url):
    asked = await cors.options(
        "/jobs", headers=preflight(APP, "POST", "content-type,authorization")
    )
    assert asked.status_code == 200, asked.text
    headers = cors_headers(asked)
    assert headers["access-control-allow-origin"] == APP
    methods = {m.strip() for m in headers["access-control-allow-methods"].split(",")}
    assert methods == {"GET", "POST", "PUT", "PATCH", "DELETE"}
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "access-control-allow-credentials" not in headers  # no cookies cross-site
    assert "origin" in asked.headers["vary"].lower()

    posted = await cors.post("/jobs", json=JOB, headers=from_page(APP))
    assert posted.status_code == 201, posted.text
    assert posted.headers["access-control-allow-origin"] == APP
    assert "access-control-allow-credentials" not in posted.headers
    assert await job_count(db_url) == 1
    # a route without a body, and the other configured origin
    paused = await cors.post("/queues/default/pause", headers=from_page(DEV))
    assert paused.status_code == 200 and paused.headers["access-control-allow-origin"] == DEV
    asked = await cors.options("/queues/default/limits", headers=preflight(DEV, "PUT"))
    assert asked.status_code == 200 and asked.headers["access-control-allow-origin"] == DEV


async def test_another_origin_is_refused_and_gets_no_cors_headers(cors, db_url):
    asked = await cors.options("/jobs", headers=preflight(EVIL))
    assert asked.status_code == 403
    assert asked.json()["status"] == 403 and "--cors-origins" in asked.json()["error"]
    assert cors_headers(asked) == {}
    posted = await cors.post("/jobs", json=JOB, headers=from_page(EVIL))
    assert posted.status_code == 403 and "cross-site" in posted.json()["error"]
    assert cors_headers(posted) == {}
    paused = await cors.post("/queues/default/pause", headers=from_page(EVIL))
    assert paused.status_code == 403 and cors_headers(paused) == {}
    read = await cors.get("/queues", headers={"Origin": EVIL})
    assert read.status_code == 200 and cors_headers(read) == {}  # the browser keeps it
    assert not any(q["paused"] for q in read.json()["queues"])
    # an allowed origin's scheme or port differs: another origin
    for near in ("http://app.example.com", "https://app.example.com:8443", "http://localhost"):
        assert (await cors.post("/jobs", json=JOB, headers=from_page(near))).status_code == 403
        assert cors_headers(await cors.options("/jobs", headers=preflight(near))) == {}
    assert await job_count(db_url) == 0


async def test_a_method_or_header_not_allowed_is_a_json_400(cors):
    asked = await cors.options("/jobs", headers=preflight(APP, "TRACE"))
    assert asked.status_code == 400 and "method" in asked.json()["error"]
    asked = await cors.options("/jobs", headers=preflight(APP, "POST", "x-secret-header"))
    assert asked.status_code == 400 and "headers" in asked.json()["error"]
