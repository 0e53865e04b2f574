"""What one request may make `aqueue serve` hold, over real HTTP: bodies past
--max-body-bytes (declared or chunked), URLs past 8 KiB and headers past 16 KiB are JSON
4xx answers, on every route, and nothing of such a request is done."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from aqueue.settings import Settings
from tests.helpers import api_server

pytestmark = pytest.mark.timeout(120)

LIMIT = Settings().max_body_bytes
assert LIMIT == 1_048_576, "the tests below are about the default: 1 MiB"


@pytest.fixture(scope="module")
async def api(module_db_url: str) -> AsyncIterator[str]:
    # the payload limit as large as a body may be, so that the body limit is what binds
    async with api_server(module_db_url, "--max-payload-bytes", str(LIMIT)) as server:
        yield server.url


@pytest.fixture
async def http(api: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        yield client


async def job_count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM all_jobs"))
    finally:
        await conn.close()


def job_body(size: int) -> bytes:
    """A POST /jobs body of exactly `size` bytes."""
    empty = json.dumps({"type": "demo.echo", "payload": {"pad": ""}}).encode()
    body = json.dumps({"type": "demo.echo", "payload": {"pad": "x" * (size - len(empty))}})
    assert len(body) == size
    return body.encode()


def assert_refused(answer: httpx.Response, status: int, *words: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["status"] == status
    for word in words:
        assert word in answer.json()["error"], answer.json()


JSON = {"content-type": "application/json"}


async def chunks(body: bytes, size: int = 65_536) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_a_body_at_the_limit_is_taken(http, module_db_url):
    before = await job_count(module_db_url)
    answer = await http.post("/jobs", content=job_body(LIMIT), headers=JSON)
    assert answer.status_code == 201, answer.text
    assert len(answer.json()["payload"]["pad"]) > LIMIT - 100
    assert await job_count(module_db_url) == before + 1


async def test_a_2_mib_body_is_a_413_and_enqueues_nothing(http, module_db_url):
    before = await job_count(module_db_url)
    body = job_body(2 * LIMIT)
    declared = await http.post("/jobs", content=body, headers=JSON)
    assert declared.request.headers["content-length"] == str(len(body))
    assert_refused(declared, 413, str(len(body)), str(LIMIT))
    chunked = await http.post("/jobs", content=chunks(body), headers=JSON)
    assert "content-length" not in chunked.request.headers
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    assert_refused(chunked, 413, str(LIMIT))
    assert await job_count(module_db_url) == before


async def test_a_chunked_body_just_under_the_limit_is_taken(http, module_db_url):
    before = await job_count(module_db_url)
    answer = await http.post("/jobs", content=chunks(job_body(LIMIT - 1)), headers=JSON)
    assert answer.status_code == 201, answer.text
    assert await job_count(module_db_url) == before + 1


async def test_a_route_that_ignores_its_body_refuses_one_past_the_limit(http):
    # POST /queues/{name}/pause reads no body: without the limit it would act on a
    # request whose body is still arriving
    body = b"x" * (LIMIT + 1)
    for sent in (body, chunks(body)):
        answer = await http.post("/queues/limited/pause", content=sent)
        assert_refused(answer, 413, str(LIMIT))
    queues = (await http.get("/queues")).json()["queues"]
    assert not any(q["name"] == "limited" and q["paused"] for q in queues)
    # retry-dead reads its body whole (request.body()) before looking at it
    answer = await http.post("/queues/limited/retry-dead", content=chunks(body))
    assert_refused(answer, 413)


async def test_the_connection_goes_on_after_a_413(http):
    refused = await http.post("/jobs", content=job_body(2 * LIMIT), headers=JSON)
    assert refused.status_code == 413
    assert (await http.get("/healthz")).status_code == 200


async def test_a_url_past_8_kib_is_a_414(http):
    limit = Settings().max_url_bytes
    room = limit - len("/healthz?q=")
    assert (await http.get("/healthz", params={"q": "x" * room})).status_code == 200
    answer = await http.get("/healthz", params={"q": "x" * (room + 1)})
    assert_refused(answer, 414, f"the limit is {limit}")
    assert_refused(await http.get("/jobs/" + "x" * limit), 414)


async def test_headers_past_16_kib_are_a_431(http):
    limit = Settings().max_header_bytes
    sent = await http.get("/healthz", headers={"x-pad": ""})
    used = sum(len(k) + len(v) for k, v in sent.request.headers.raw)
    room = limit - used
    answer = await http.get("/healthz", headers={"x-pad": "x" * room})
    assert answer.status_code == 200
    answer = await http.get("/healthz", headers={"x-pad": "x" * (room + 1)})
    assert_refused(answer, 431, f"the limit is {limit}")
    many = {f"x-pad-{n}": "x" * 100 for n in range(200)}
    assert_refused(await http.get("/healthz", headers=many), 431)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, object]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return status, json.loads(await reader.readexactly(length))


async def test_a_head_that_never_ends_is_cut_off_at_the_limits(api):
    # One header that goes on and on, never finished: the API never sees the request, yet
    # the server answers once the head passes what the limits allow, instead of holding
    # what comes for ever. The client may send on: what it sends is read and dropped, so
    # its writes succeed and it reads the answer after.
    port = int(api.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ")
        for _ in range(64):
            writer.write(b"x" * 65_536)  # 4 MiB in all
            await writer.drain()
        status, body = await read_answer(reader)
        assert status == 431 and body["status"] == 431, body
        assert await reader.read() == b"", "the server closes after it"
    finally:
        writer.close()


async def test_a_url_of_64_kib_is_a_json_414_not_a_parser_error(api):
    # httptools refuses URLs past 64 KiB itself, with uvicorn's plain-text 400
    port = int(api.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz?q=" + b"x" * 70_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        status, body = await read_answer(reader)
        assert status == 414 and "the limit is 8192" in str(body["error"]), body
    finally:
        writer.close()
