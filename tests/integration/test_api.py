"""The HTTP API against a real PostgreSQL, through the ASGI app in process."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
import httpx
import pytest

from aqueue import db, store
from aqueue.api.app import create_app
from aqueue.api.openapi import openapi_document
from aqueue.metrics import Metrics
from aqueue.model import JobSpec
from aqueue.producer import enqueue, enqueue_many
from aqueue.settings import Settings

JOB_FIELDS = {
    "id",
    "type",
    "payload",
    "status",
    "queue",
    "priority",
    "attempts",
    "max_attempts",
    "run_after",
    "last_error",
    "idempotency_key",
    "result",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
}


@asynccontextmanager
async def api_client(pool, settings: Settings):
    # raise_app_exceptions=False: a crash shows as the 500 a real client would see.
    transport = httpx.ASGITransport(app=create_app(pool, settings), raise_app_exceptions=False)
    # localhost: the API bound to loopback answers only local Host names
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as client:
        yield client


@pytest.fixture
async def client(pool):
    async with api_client(pool, Settings()) as c:
        yield c


@pytest.fixture
async def small_client(pool):
    async with api_client(pool, Settings(max_payload_bytes=1000)) as c:
        yield c


async def count_jobs(pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM all_jobs")


def assert_error(response: httpx.Response, *words: str) -> str:
    """A 4xx with a JSON {"error": "..."} that mentions every word; returns the message."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert isinstance(message, str) and message
    for word in words:
        assert word.lower() in message.lower(), message
    return message


# --- POST /jobs -------------------------------------------------------------------------


async def test_post_jobs_is_201_with_the_job_json(client, pool):
    body = {
        "type": "email.send",
        "payload": {"to": "a@example.com"},
        "queue": "email",
        "priority": 3,
        "run_after": "2030-01-01T00:00:00Z",
        "max_attempts": 2,
        "idempotency_key": "order-1",
    }
    r = await client.post("/jobs", json=body)
    assert r.status_code == 201
    job = r.json()
    assert set(job) >= JOB_FIELDS
    assert job["status"] == "PENDING"
    assert {k: job[k] for k in ("type", "payload", "queue", "priority", "max_attempts")} == {
        k: body[k] for k in ("type", "payload", "queue", "priority", "max_attempts")
    }
    assert job["idempotency_key"] == "order-1"
    assert datetime.fromisoformat(job["run_after"]) == datetime.fromisoformat(body["run_after"])
    assert (job["attempts"], job["last_error"], job["result"]) == (0, None, None)
    assert (job["started_at"], job["finished_at"]) == (None, None)
    assert datetime.fromisoformat(job["created_at"]).tzinfo is not None
    assert await store.get_job(pool, uuid.UUID(job["id"])) is not None


async def test_post_jobs_with_only_a_type_gets_the_defaults(client):
    r = await client.post("/jobs", json={"type": "demo.echo"})
    assert r.status_code == 201
    job = r.json()
    assert (job["payload"], job["queue"], job["priority"], job["max_attempts"]) == (
        {},
        "default",
        0,
        5,
    )
    assert job["idempotency_key"] is None


async def test_post_jobs_idempotent_repeat_is_200_with_the_same_job(client, pool):
    first = await client.post("/jobs", json={"type": "a", "idempotency_key": "k"})
    again = await client.post("/jobs", json={"type": "a", "idempotency_key": "k"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert await count_jobs(pool) == 1


async def test_concurrent_posts_with_one_idempotency_key_make_one_job(client, pool):
    responses = await asyncio.gather(
        *(client.post("/jobs", json={"type": "a", "idempotency_key": "k"}) for _ in range(20))
    )
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await count_jobs(pool) == 1


BAD_JOB_BODIES = [
    pytest.param(b'{"type": ', "not valid JSON", id="malformed-json"),
    pytest.param(b"", "empty", id="empty-body"),
    pytest.param(b"   \n", "empty", id="blank-body"),
    pytest.param(b'[{"type": "a"}]', "JSON object", id="array-body"),
    pytest.param(b'"a"', "JSON object", id="string-body"),
    pytest.param(b"null", "JSON object", id="null-body"),
    pytest.param(b"\xff\xfe{}", "JSON", id="not-utf8"),
    pytest.param(b"{}", "type", id="missing-type"),
    pytest.param(b'{"type": 5}', "type", id="type-not-string"),
    pytest.param(b'{"type": "has space"}', "type", id="type-bad-name"),
    pytest.param(b'{"type": "a", "queue": ["q"]}', "queue", id="queue-not-string"),
    pytest.param(b'{"type": "a", "payload": "x"}', "payload", id="payload-not-object"),
    pytest.param(b'{"type": "a", "priority": "high"}', "priority", id="priority-string"),
    pytest.param(b'{"type": "a", "priority": true}', "priority", id="priority-bool"),
    pytest.param(b'{"type": "a", "priority": 5000}', "priority", id="priority-range"),
    pytest.param(b'{"type": "a", "max_attempts": 0}', "max_attempts", id="max-attempts-0"),
    pytest.param(b'{"type": "a", "max_attempts": 2.5}', "max_attempts", id="max-attempts-float"),
    pytest.param(b'{"type": "a", "run_after": "soon"}', "run_after", id="run-after-not-iso"),
    pytest.param(
        b'{"type": "a", "run_after": "2030-01-01T00:00:00"}', "run_after", id="run-after-naive"
    ),
    pytest.param(b'{"type": "a", "idempotency_key": 1}', "idempotency_key", id="key-not-string"),
    pytest.param(
        json.dumps({"type": "a", "idempotency_key": "k" * 256}).encode(),
        "idempotency_key",
        id="key-too-long",
    ),
    pytest.param(b'{"type": "a", "colour": "red"}', "colour", id="unknown-field"),
]


@pytest.mark.parametrize(("content", "named"), BAD_JOB_BODIES)
async def test_post_jobs_with_bad_input_is_4xx_naming_it_and_writes_nothing(
    client, pool, content, named
):
    r = await client.post("/jobs", content=content, headers={"content-type": "application/json"})
    assert_error(r, named)
    assert await count_jobs(pool) == 0


@pytest.mark.parametrize("field", ["queue", "type"])
async def test_post_jobs_with_a_newline_ending_a_name_is_422_naming_it_and_writes_nothing(
    client, pool, field
):
    # 422 as for every other invalid name: the JSON is well-formed, one value is not
    r = await client.post("/jobs", json={"type": "a", field: "a\n"})
    assert r.status_code == 422
    assert_error(r, f"'{field}' 'a\\n'", "not allowed")
    assert await count_jobs(pool) == 0


async def test_submit_job_with_a_newline_ending_the_queue_is_422_and_writes_nothing(client, pool):
    r = await client.post("/submit-job", json={"task": "demo.echo", "queue": "default\n"})
    assert r.status_code == 422
    assert_error(r, "queue", "\\n")
    assert await count_jobs(pool) == 0


# --- content type: JSON only ------------------------------------------------------------

VALID_BODIES = {"/jobs": b'{"type": "demo.echo"}', "/submit-job": b'{"task": "demo.echo"}'}
NOT_JSON_CONTENT_TYPES = [
    pytest.param("text/plain", id="text-plain"),
    pytest.param("text/plain;charset=UTF-8", id="text-plain-charset"),
    pytest.param("application/x-www-form-urlencoded", id="form"),
    pytest.param("multipart/form-data; boundary=x", id="multipart"),
    pytest.param("application/jsonp", id="jsonp"),
    pytest.param("text/json", id="text-json"),
]


@pytest.mark.parametrize("path", ["/jobs", "/submit-job"])
@pytest.mark.parametrize("content_type", NOT_JSON_CONTENT_TYPES)
async def test_a_body_not_declared_json_is_415_and_writes_nothing(client, pool, path, content_type):
    # what a web page may send cross-site without a CORS preflight, and its neighbours
    body = VALID_BODIES[path]
    r = await client.post(path, content=body, headers={"content-type": content_type})
    assert r.status_code == 415
    assert r.json()["status"] == 415
    assert_error(r, content_type, "application/json")
    assert await count_jobs(pool) == 0


@pytest.mark.parametrize("path", ["/jobs", "/submit-job"])
async def test_a_body_without_content_type_is_415_and_writes_nothing(client, pool, path):
    r = await client.post(path, content=VALID_BODIES[path])
    assert "content-type" not in r.request.headers
    assert r.status_code == 415
    assert_error(r, "no Content-Type", "application/json")
    assert await count_jobs(pool) == 0


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.api+json",
    ],
)
async def test_json_content_types_with_parameters_or_a_suffix_are_accepted(client, content_type):
    r = await client.post(
        "/jobs", content=b'{"type": "demo.echo"}', headers={"content-type": content_type}
    )
    assert r.status_code == 201, r.text


async def test_post_jobs_with_an_oversized_payload_is_422_and_writes_nothing(small_client, pool):
    r = await small_client.post("/jobs", json={"type": "a", "payload": {"x": "a" * 2000}})
    assert r.status_code == 422
    assert_error(r, "payload", "1000")
    assert await count_jobs(pool) == 0


async def test_post_jobs_with_a_huge_body_is_413_and_writes_nothing(small_client, pool):
    r = await small_client.post("/jobs", json={"type": "a", "payload": {"x": "a" * 100_000}})
    assert r.status_code == 413
    assert_error(r, "limit")
    assert await count_jobs(pool) == 0


# JSON that parses, or almost, but that PostgreSQL (or Python) cannot take as a job.
UNSTORABLE_BODIES = [
    pytest.param(b'{"type": "a", "payload": {"x": "\\u0000"}}', id="nul-in-payload"),
    pytest.param(b'{"type": "a", "payload": {"x": "\\ud800"}}', id="lone-surrogate-in-payload"),
    pytest.param(b'{"type": "a", "payload": {"x": NaN}}', id="nan-in-payload"),
    pytest.param(b'{"type": "a", "payload": {"x": 1e400}}', id="infinity-in-payload"),
    pytest.param(b'{"type": "a", "payload": {"x": ' + b"9" * 5000 + b"}}", id="5000-digit-int"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
    pytest.param(b'{"type": "a", "idempotency_key": "k\\u0000"}', id="nul-in-key"),
    pytest.param(
        b'{"type": "a", "run_after": "9999-12-31T23:59:59-14:00"}', id="run-after-overflow"
    ),
    # asyncpg stores Python's first and last instants as -infinity and infinity, and
    # reads them back without a time zone (a run_after that is no date-time)
    pytest.param(b'{"type": "a", "run_after": "0001-01-01T00:00:00Z"}', id="run-after-first"),
    pytest.param(b'{"type": "a", "run_after": "9999-12-31T23:59:59.999999Z"}', id="run-after-last"),
    pytest.param(
        b'{"type": "a", "run_after": "0001-01-01T05:00:00+05:00"}', id="run-after-first-in-+5"
    ),
]


@pytest.mark.parametrize("content", UNSTORABLE_BODIES)
async def test_post_jobs_with_unstorable_values_is_4xx_not_500_and_writes_nothing(
    client, pool, content
):
    r = await client.post("/jobs", content=content, headers={"content-type": "application/json"})
    assert_error(r)
    assert await count_jobs(pool) == 0


@pytest.mark.parametrize("run_after", ["0001-01-01T00:00:01+00:00", "9999-12-31T23:59:59+00:00"])
async def test_a_run_after_next_to_the_ends_of_time_comes_back_as_given(client, run_after):
    r = await client.post("/jobs", json={"type": "a", "run_after": run_after})
    assert r.status_code == 201, r.text
    assert r.json()["run_after"] == run_after
    fetched = await client.get(f"/jobs/{r.json()['id']}")
    assert fetched.json()["run_after"] == run_after


# --- GET /jobs --------------------------------------------------------------------------


async def test_get_jobs_lists_newest_first(client):
    ids = [(await client.post("/jobs", json={"type": "a"})).json()["id"] for _ in range(3)]
    r = await client.get("/jobs")
    assert r.status_code == 200
    assert [j["id"] for j in r.json()["jobs"]] == ids[::-1]
    assert r.json()["next_cursor"] is None


async def test_get_jobs_filters_by_queue(client, pool):
    await enqueue(pool, "a", queue="email")
    await enqueue(pool, "a", queue="video")
    r = await client.get("/jobs", params={"queue": "email"})
    assert [j["queue"] for j in r.json()["jobs"]] == ["email"]


async def test_get_jobs_filters_by_type(client, pool):
    await enqueue(pool, "email.send")
    await enqueue(pool, "video.encode")
    r = await client.get("/jobs", params={"type": "video.encode"})
    assert [j["type"] for j in r.json()["jobs"]] == ["video.encode"]


async def test_get_jobs_filters_by_status(client, pool):
    await enqueue(pool, "a")
    await enqueue(pool, "a")
    [claimed] = await store.claim(pool, "default", 1, "worker-1", 30.0)
    running = await client.get("/jobs", params={"status": "RUNNING"})
    pending = await client.get("/jobs", params={"status": "PENDING"})
    assert [j["id"] for j in running.json()["jobs"]] == [str(claimed.id)]
    assert len(pending.json()["jobs"]) == 1
    assert pending.json()["jobs"][0]["id"] != str(claimed.id)


async def test_get_jobs_combines_filters(client, pool):
    await enqueue(pool, "a", queue="email")
    await enqueue(pool, "b", queue="email")
    await enqueue(pool, "a", queue="video")
    r = await client.get("/jobs", params={"queue": "email", "type": "a", "status": "PENDING"})
    assert [(j["type"], j["queue"]) for j in r.json()["jobs"]] == [("a", "email")]


async def walk(client, **params) -> list[dict]:
    pages = []
    cursor = None
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        r = await client.get("/jobs", params=query)
        assert r.status_code == 200
        pages.append(r.json()["jobs"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 10, "pagination does not end"


async def test_keyset_pagination_walks_every_job_once(client):
    ids = [(await client.post("/jobs", json={"type": "a"})).json()["id"] for _ in range(7)]
    pages = await walk(client, limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [j["id"] for p in pages for j in p] == ids[::-1]


async def test_keyset_pagination_walks_a_batch_sharing_one_created_at(client, pool):
    ids = await enqueue_many(pool, [JobSpec(type="a") for _ in range(7)])
    assert await pool.fetchval("SELECT count(DISTINCT created_at) FROM all_jobs") == 1
    pages = await walk(client, limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sorted(j["id"] for p in pages for j in p) == sorted(str(i) for i in ids)


async def test_keyset_pagination_applies_the_filter_on_every_page(client, pool):
    await enqueue_many(pool, [JobSpec(type="a", queue=("q1" if i % 2 else "q2")) for i in range(9)])
    pages = await walk(client, limit=2, queue="q2")
    assert [len(p) for p in pages] == [2, 2, 1]
    assert {j["queue"] for p in pages for j in p} == {"q2"}


@pytest.fixture
async def scan3_client(pool):
    """A filtered listing examines at most 3 jobs per page."""
    async with api_client(pool, Settings(list_scan_limit=3)) as c:
        yield c


async def test_a_filter_matching_nothing_examines_a_bounded_number_of_jobs_per_page(
    scan3_client, pool
):
    await enqueue_many(pool, [JobSpec(type="a") for _ in range(7)])
    pages = await walk(scan3_client, queue="nope")
    # 3 + 3 + 1 jobs examined: each page short, the cursor carrying the walk to the end
    assert pages == [[], [], []]


async def test_a_bounded_walk_returns_every_match_once_newest_first(scan3_client, pool):
    ids = await enqueue_many(pool, [JobSpec(type="a", queue=f"q{i % 2}") for i in range(10)])
    pages = await walk(scan3_client, queue="q1", limit=2)
    # one batch shares its timestamp: the newest first is the id order
    assert [j["id"] for p in pages for j in p] == sorted(map(str, ids[1::2]), reverse=True)


async def test_a_bounded_page_that_fills_up_continues_after_its_last_job(scan3_client, pool):
    await enqueue_many(pool, [JobSpec(type="a") for _ in range(5)])
    first = (await scan3_client.get("/jobs", params={"type": "a", "limit": 2})).json()
    assert len(first["jobs"]) == 2
    assert first["next_cursor"] == first["jobs"][-1]["id"]


@pytest.mark.parametrize("status", ["DEAD", "CANCELLED", "RUNNING"])
async def test_rare_statuses_are_listed_through_an_index_without_a_scan_bound(
    scan3_client, pool, status
):
    [oldest, *_] = await enqueue_many(pool, [JobSpec(type="a") for _ in range(10)])
    lease = "gen_random_uuid()" if status == "RUNNING" else "NULL"
    await pool.execute(
        f"UPDATE jobs SET status = $1, lease_token = {lease}, lease_expires_at = "
        f"CASE WHEN {lease} IS NULL THEN NULL ELSE now() END WHERE id = $2",
        status,
        oldest,
    )
    r = await scan3_client.get("/jobs", params={"status": status})
    assert ([j["id"] for j in r.json()["jobs"]], r.json()["next_cursor"]) == ([str(oldest)], None)


async def test_last_full_page_has_no_next_cursor(client, pool):
    await enqueue_many(pool, [JobSpec(type="a") for _ in range(6)])
    pages = await walk(client, limit=3)
    assert [len(p) for p in pages] == [3, 3]


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


BAD_LIST_QUERIES = [
    pytest.param({"status": "nope"}, "status", id="bad-status"),
    pytest.param({"queue": "bad queue"}, "queue", id="bad-queue"),
    pytest.param({"queue": "default\n"}, "queue", id="queue-trailing-newline"),
    pytest.param({"type": "demo.echo\n"}, "type", id="type-trailing-newline"),
    pytest.param({"type": ""}, "type", id="empty-type"),
    pytest.param({"limit": "0"}, "limit", id="limit-0"),
    pytest.param({"limit": "501"}, "limit", id="limit-too-big"),
    pytest.param({"limit": "-1"}, "limit", id="limit-negative"),
    pytest.param({"limit": "ten"}, "limit", id="limit-word"),
    pytest.param({"limit": "²"}, "limit", id="limit-superscript-digit"),
    pytest.param({"cursor": "zzz"}, "cursor", id="cursor-garbage"),
    pytest.param({"cursor": cursor_of("yesterday|nope")}, "cursor", id="cursor-bad-parts"),
    pytest.param(
        {"cursor": cursor_of("9999-12-31T23:59:59-14:00|" + str(uuid.UUID(int=0)))},
        "cursor",
        id="cursor-out-of-range",
    ),
    pytest.param({"sort": "asc"}, "sort", id="unknown-parameter"),
]


@pytest.mark.parametrize(("params", "named"), BAD_LIST_QUERIES)
async def test_get_jobs_with_a_bad_query_is_400_naming_it(client, pool, params, named):
    await enqueue(pool, "a")
    r = await client.get("/jobs", params=params)
    assert r.status_code == 400, r.text
    assert_error(r, named)
    assert await count_jobs(pool) == 1


# --- GET /jobs/{id} ---------------------------------------------------------------------


async def test_get_job_includes_its_events(client):
    created = (await client.post("/jobs", json={"type": "a", "payload": {"n": 1}})).json()
    r = await client.get(f"/jobs/{created['id']}")
    assert r.status_code == 200
    job = r.json()
    assert {k: v for k, v in job.items() if k not in ("events", "depends_on")} == created
    assert job["depends_on"] == []
    assert [(e["status"], e["attempt"], e["error"]) for e in job["events"]] == [
        ("PENDING", 0, None)
    ]
    assert datetime.fromisoformat(job["events"][0]["at"]).tzinfo is not None


async def test_get_job_shows_a_claim_in_its_events(client, pool):
    job = await enqueue(pool, "a")
    await store.claim(pool, "default", 1, "worker-1", 30.0)
    r = await client.get(f"/jobs/{job.id}")
    assert r.json()["status"] == "RUNNING"
    assert [(e["status"], e["worker"]) for e in r.json()["events"]] == [
        ("PENDING", None),
        ("RUNNING", "worker-1"),
    ]


async def test_get_unknown_job_is_404_json(client):
    missing = uuid.uuid4()
    r = await client.get(f"/jobs/{missing}")
    assert r.status_code == 404
    assert_error(r, str(missing))


@pytest.mark.parametrize("path", ["/jobs/not-a-uuid", "/jobs/12345", "/job-status/xyz"])
async def test_bad_uuid_in_path_is_400_naming_it(client, pool, path):
    r = await client.get(path)
    assert r.status_code == 400
    assert_error(r, path.rsplit("/", 1)[1], "UUID")
    assert await count_jobs(pool) == 0


# --- compatibility routes ---------------------------------------------------------------


async def test_submit_job_returns_only_the_job_id(client, pool):
    r = await client.post("/submit-job", json={"task": "demo.echo"})
    assert r.status_code in (200, 201)
    assert set(r.json()) == {"job_id"}
    job = await store.get_job(pool, uuid.UUID(r.json()["job_id"]))
    assert job.type == "demo.echo"


async def test_job_status_uses_the_simple_clients_words(client):
    job_id = (await client.post("/submit-job", json={"task": "demo.echo"})).json()["job_id"]
    r = await client.get(f"/job-status/{job_id}")
    assert r.status_code == 200
    assert r.json() == {"job_id": job_id, "task": "demo.echo", "status": "pending", "retries": 0}


async def test_job_status_of_a_claimed_job_is_processing(client, pool):
    job = await enqueue(pool, "demo.echo")
    await store.claim(pool, "default", 1, "worker-1", 30.0)
    r = await client.get(f"/job-status/{job.id}")
    assert (r.json()["status"], r.json()["retries"]) == ("processing", 0)


async def test_job_status_of_an_unknown_job_is_404_json(client):
    r = await client.get(f"/job-status/{uuid.uuid4()}")
    assert r.status_code == 404
    assert_error(r, "no job")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        pytest.param({}, "task", id="missing-task"),
        pytest.param({"task": 5}, "task", id="task-not-string"),
        pytest.param({"task": "a", "type": "b"}, "task", id="task-and-type"),
        pytest.param({"task": "a", "colour": "red"}, "colour", id="unknown-field"),
        pytest.param(["demo.echo"], "JSON object", id="array-body"),
    ],
)
async def test_submit_job_with_bad_input_is_422_and_writes_nothing(client, pool, body, named):
    r = await client.post("/submit-job", json=body)
    assert r.status_code == 422
    assert_error(r, named)
    assert await count_jobs(pool) == 0


# --- routing, probes, description -------------------------------------------------------


async def test_unknown_route_is_404_json(client):
    r = await client.get("/no/such/route")
    assert r.status_code == 404
    assert_error(r, "not found")


async def test_wrong_method_is_405_json(client, pool):
    r = await client.delete("/jobs")
    assert r.status_code == 405
    assert_error(r, "method")
    assert await count_jobs(pool) == 0


async def test_healthz_is_200(client):
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


async def test_readyz_is_200_when_the_database_answers(client):
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready"


async def test_readyz_says_database_unreachable_and_logs_the_detail(caplog):
    # nothing listens on port 1: the driver's error names the address it tried
    unreachable = await asyncpg.create_pool(
        "postgresql://postgres@127.0.0.1:1/nowhere", min_size=0, max_size=1
    )
    try:
        with caplog.at_level(logging.WARNING, logger="aqueue.api"):
            async with api_client(unreachable, Settings()) as client:
                r = await client.get("/readyz")
    finally:
        await unreachable.close()
    assert r.status_code == 503
    assert r.json() == {"status": "unavailable", "error": "database unreachable"}
    assert "127.0.0.1" in caplog.text and "127.0.0.1" not in r.text


async def test_a_read_only_database_is_a_503_to_retry_not_a_500(db_url):
    # As after a failover: the server answers, but refuses writes (SQLSTATE 25006).
    read_only = await asyncpg.create_pool(
        db_url,
        min_size=0,
        max_size=1,
        init=db.init_connection,
        server_settings={"default_transaction_read_only": "on"},
    )
    try:
        async with api_client(read_only, Settings()) as client:
            r = await client.post("/jobs", json={"type": "demo.echo"})
    finally:
        await read_only.close()
    assert r.status_code == 503
    assert r.json()["error"] == "the database is unavailable; try again"


# --- Host header: DNS rebinding ---------------------------------------------------------


@asynccontextmanager
async def host_client(pool, host_header: str, **settings):
    async with api_client(pool, Settings(**settings)) as c:
        c.headers["host"] = host_header
        yield c


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST:8000"]
)
async def test_bound_to_loopback_the_local_names_are_answered(pool, host):
    async with host_client(pool, host) as client:
        r = await client.post("/jobs", json={"type": "demo.echo"})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "host", ["attacker.example", "attacker.example:8000", "localhost.attacker.example", "[::2]"]
)
async def test_bound_to_loopback_another_host_name_is_400_json_and_writes_nothing(pool, host):
    # a page on attacker.example whose name now resolves to 127.0.0.1 sends its own name
    async with host_client(pool, host) as client:
        posted = await client.post("/jobs", json={"type": "demo.echo"})
        listed = await client.get("/jobs")
    for r in (posted, listed):
        assert r.status_code == 400
        assert_error(r, host, "allowed", "--allowed-hosts")
    assert await count_jobs(pool) == 0


async def test_a_request_without_a_host_header_is_400_json(pool):
    app = create_app(pool, Settings())
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.0",
        "method": "GET",
        "scheme": "http",
        "path": "/jobs",
        "raw_path": b"/jobs",
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["error"].startswith("no Host header")


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_health_probes_answer_whatever_the_host(pool, path):
    # an orchestrator's probe names the pod's address, not a name in --allowed-hosts
    async with host_client(pool, "10.1.2.3:8000", allowed_hosts=("api.example.com",)) as c:
        r = await c.get(path)
    assert r.status_code == 200


async def test_bound_to_every_address_any_host_is_answered(pool):
    async with host_client(pool, "queue.internal:8000", host="0.0.0.0") as client:
        r = await client.get("/jobs")
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("api.example.com", 200),
        ("api.example.com:443", 200),
        ("eu.workers.internal", 200),
        ("workers.internal", 400),
        ("localhost", 400),
        ("example.com", 400),  # Starlette's own middleware would redirect to www.
    ],
)
async def test_allowed_hosts_setting_decides_which_hosts_are_answered(pool, host, status):
    allowed = ("api.example.com", "*.workers.internal", "www.example.com")
    async with host_client(pool, host, host="0.0.0.0", allowed_hosts=allowed) as client:
        r = await client.get("/jobs")
    assert r.status_code == status, r.text


async def test_openapi_describes_the_jobs_routes(client):
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] and doc["info"]["version"]
    assert {"get", "post"} <= set(doc["paths"]["/jobs"])
    assert "/jobs/{job_id}" in doc["paths"]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            assert operation["responses"], f"{method} {path} has no responses"


@pytest.mark.parametrize("path", ["/jobs", "/submit-job"])
async def test_openapi_documents_the_415_of_routes_that_read_json(client, path):
    doc = (await client.get("/openapi.json")).json()
    assert "415" in doc["paths"][path]["post"]["responses"]


async def test_openapi_documents_every_route_the_app_serves(pool):
    app = create_app(pool, Settings(), metrics=Metrics())
    doc = openapi_document()
    for route in app.routes:
        path = getattr(route, "path", "")
        if path == "/openapi.json":
            continue
        methods = {m.lower() for m in getattr(route, "methods", set())} - {"head"}
        assert path in doc["paths"], f"{path} is not in the OpenAPI document"
        assert methods <= set(doc["paths"][path]), (path, methods)
