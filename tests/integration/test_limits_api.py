"""Flow control as users reach it: PUT /queues/{name}/limits and GET /queues, the jobs'
concurrency and fair keys over HTTP and from Python, and limits declared in code beside
the tasks (registry.limits, set at the scheduler's start). What the claim does with them
is tested elsewhere (test_flow_control)."""

from __future__ import annotations

import asyncio
import json
import math
import uuid

import httpx
import pytest

import aqueue
from aqueue import Registry, control, store
from aqueue.model import JobSpec, ValidationError
from aqueue.settings import Settings
from tests.helpers import wait_for
from tests.integration.test_api import api_client, assert_error
from tests.integration.test_schedules import RunningScheduler

NO_LIMITS = {"rate_limit": None, "key_concurrency": None, "key_limits": None, "fair_weights": None}
EVERY_FIELD = {
    "rate_limit": "20/s",
    "key_concurrency": 2,
    "key_limits": {"customer:vip": 5, "customer:slow": 1},
    "fair_weights": {"A": 3, "B": 0.5},
}


@pytest.fixture
async def client(pool):
    async with api_client(pool, Settings()) as c:
        yield c


async def put(client: httpx.AsyncClient, body: object, queue: str = "email") -> httpx.Response:
    # not json=: httpx sends no body at all for json=None
    return await client.put(
        f"/queues/{queue}/limits",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )


async def listed(client: httpx.AsyncClient, queue: str) -> dict:
    queues = (await client.get("/queues")).json()["queues"]
    return next(q for q in queues if q["name"] == queue)


# --- PUT /queues/{name}/limits --------------------------------------------------------------


async def test_put_every_field_answers_the_limits_and_get_queues_shows_them(client):
    r = await put(client, EVERY_FIELD)
    assert r.status_code == 200, r.text
    expected = {**EVERY_FIELD, "fair_weights": {"A": 3.0, "B": 0.5}}
    assert r.json() == {"name": "email", "limits": expected}
    shown = await listed(client, "email")
    assert shown["limits"] == expected
    assert shown["fair"] is False  # no job with a fair key was enqueued yet
    assert shown["paused"] is False


async def test_a_partial_update_keeps_the_other_fields(client):
    await put(client, EVERY_FIELD)
    r = await put(client, {"key_concurrency": 4})
    assert r.status_code == 200
    assert r.json()["limits"] == {
        **EVERY_FIELD,
        "key_concurrency": 4,
        "fair_weights": {"A": 3.0, "B": 0.5},
    }
    # a map is set whole, not merged into the one before
    r = await put(client, {"key_limits": {"customer:new": 7}})
    assert r.json()["limits"]["key_limits"] == {"customer:new": 7}
    assert r.json()["limits"]["rate_limit"] == "20/s"


async def test_null_removes_one_field_and_keeps_the_others(client):
    await put(client, EVERY_FIELD)
    r = await put(client, {"rate_limit": None, "fair_weights": None})
    assert r.status_code == 200
    assert r.json()["limits"] == {
        **NO_LIMITS,
        "key_concurrency": 2,
        "key_limits": EVERY_FIELD["key_limits"],
    }
    r = await put(client, {"key_concurrency": None, "key_limits": None})
    assert r.json()["limits"] == NO_LIMITS
    assert (await listed(client, "email"))["limits"] == NO_LIMITS


async def test_an_empty_map_is_the_same_as_null(client):
    r = await put(client, {"key_limits": {}, "fair_weights": {}, "key_concurrency": 3})
    assert r.status_code == 200
    assert r.json()["limits"] == {**NO_LIMITS, "key_concurrency": 3}


async def test_a_queue_without_limits_shows_every_field_as_null(client, pool):
    await aqueue.enqueue(pool, "demo.echo", queue="plain")
    shown = await listed(client, "plain")
    assert shown["limits"] == NO_LIMITS and shown["fair"] is False


async def test_get_queues_says_a_queue_is_fair_once_a_job_with_a_fair_key_came(client, pool):
    await aqueue.enqueue(pool, "demo.echo", queue="tenants", fair_key="A")
    assert (await listed(client, "tenants"))["fair"] is True


LONG_KEY = "k" * 201


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"key_concurrency": "2"}, ["key_concurrency", "whole number"]),
        ({"key_concurrency": 2.5}, ["key_concurrency", "whole number"]),
        ({"key_concurrency": True}, ["key_concurrency", "whole number"]),
        ({"key_concurrency": 0}, ["key_concurrency", "between 1 and 10000"]),
        ({"key_concurrency": -1}, ["key_concurrency", "between 1 and 10000"]),
        ({"key_concurrency": 10001}, ["key_concurrency", "between 1 and 10000"]),
        ({"key_limits": [["vip", 5]]}, ["key_limits", "object"]),
        ({"key_limits": "vip=5"}, ["key_limits", "object"]),
        ({"key_limits": 5}, ["key_limits", "object"]),
        ({"key_limits": {"": 5}}, ["key_limits", "bad key", "1 to 200 characters"]),
        ({"key_limits": {LONG_KEY: 5}}, ["key_limits", "bad key", "1 to 200 characters"]),
        ({"key_limits": {"a\u0000b": 5}}, ["key_limits", "bad key", "NUL"]),
        ({"key_limits": {"vip": 0}}, ["key_limits.vip", "between 1 and 10000"]),
        ({"key_limits": {"vip": 10001}}, ["key_limits.vip", "between 1 and 10000"]),
        ({"key_limits": {"vip": "5"}}, ["key_limits.vip", "whole number"]),
        ({"key_limits": {"vip": None}}, ["key_limits.vip", "whole number"]),
        ({"key_limits": {"vip": False}}, ["key_limits.vip", "whole number"]),
        ({"fair_weights": {"A": 0}}, ["fair_weights.A", "at least 0.001"]),
        ({"fair_weights": {"A": -1}}, ["fair_weights.A", "at least 0.001"]),
        ({"fair_weights": {"A": 1e-320}}, ["fair_weights.A", "at least 0.001"]),
        ({"fair_weights": {"A": 1001}}, ["fair_weights.A", "at most 1000"]),
        ({"fair_weights": {"A": "NaN"}}, ["fair_weights.A", "must be a number"]),
        ({"fair_weights": {"A": "Infinity"}}, ["fair_weights.A", "must be a number"]),
        ({"fair_weights": {"A": "3"}}, ["fair_weights.A", "must be a number"]),
        ({"fair_weights": {"A": True}}, ["fair_weights.A", "must be a number"]),
        ({"fair_weights": {"A": None}}, ["fair_weights.A", "must be a number"]),
        ({"fair_weights": [3, 1]}, ["fair_weights", "object"]),
        ({"fair_weights": {"": 1}}, ["fair_weights", "bad key"]),
        ({"rate_limit": 20}, ["rate_limit", "string"]),
        ({"rate_limit": "fast"}, ["rate_limit", "must be a rate"]),
        ({"rate_limit": "0/s"}, ["rate_limit", "must be a rate"]),
        ({"burst": 3}, ["unknown field", "burst", "allowed: rate_limit"]),
        ({"rate_limit": "5/s", "keyconcurrency": 2}, ["unknown field", "keyconcurrency"]),
        ({}, ["at least one of", "rate_limit", "key_concurrency", "fair_weights"]),
        ([], ["body must be a JSON object"]),
        ([{"rate_limit": "5/s"}], ["body must be a JSON object"]),
        ("20/s", ["body must be a JSON object"]),
        (None, ["body must be a JSON object"]),
    ],
)
async def test_a_bad_limit_is_a_422_naming_it_and_changes_nothing(client, body, words):
    await put(client, EVERY_FIELD)
    before = (await listed(client, "email"))["limits"]
    r = await put(client, body)
    assert r.status_code == 422, r.text
    assert_error(r, *words)
    assert r.json()["status"] == 422
    assert (await listed(client, "email"))["limits"] == before


async def test_one_bad_field_among_good_ones_changes_nothing(client):
    await put(client, EVERY_FIELD)
    before = (await listed(client, "email"))["limits"]
    r = await put(client, {"rate_limit": "1/h", "key_concurrency": 9, "fair_weights": {"A": 0}})
    assert_error(r, "fair_weights.A")
    assert (await listed(client, "email"))["limits"] == before


async def test_bodies_that_are_not_json_objects_get_the_usual_400_and_415(client):
    empty = await client.put(
        "/queues/email/limits", content=b"", headers={"content-type": "application/json"}
    )
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    # JSON has no NaN or infinity: a weight that would be one is malformed JSON
    huge = await client.put(
        "/queues/email/limits",
        content=b'{"fair_weights": {"A": 1e400}}',
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 400 and "out of range" in huge.json()["error"]
    nan = await client.put(
        "/queues/email/limits",
        content=b'{"fair_weights": {"A": NaN}}',
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 400 and "NaN" in nan.json()["error"]
    form = await client.put("/queues/email/limits", content=b"rate_limit=5/s")
    assert form.status_code == 415
    bad_name = await put(client, {"rate_limit": "5/s"}, queue="bad queue!")
    assert bad_name.status_code == 400 and "queue" in bad_name.json()["error"]


# --- from Python ----------------------------------------------------------------------------


async def test_set_limits_and_limits_from_python(pool):
    assert aqueue.set_limits is control.set_limits and aqueue.limits is control.limits
    await aqueue.set_limits(pool, "email", **EVERY_FIELD)
    await aqueue.set_limits(pool, "email", rate_limit=None)
    assert await aqueue.limits(pool, "email") == {
        **EVERY_FIELD,
        "rate_limit": None,
        "fair_weights": {"A": 3.0, "B": 0.5},
    }
    assert await aqueue.limits(pool, "never-seen") == NO_LIMITS


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"fair_weights": {"A": math.nan}}, "fair_weights.A"),
        ({"fair_weights": {"A": math.inf}}, "fair_weights.A"),
        ({"key_concurrency": 1.0}, "key_concurrency"),
        ({"key_limits": {"vip": 5, 7: 1}}, "key_limits"),
    ],
)
async def test_set_limits_refuses_what_json_cannot_send_too(pool, fields, named):
    with pytest.raises(ValidationError, match=named.replace(".", r"\.")):
        await aqueue.set_limits(pool, "email", **fields)
    assert await aqueue.limits(pool, "email") == NO_LIMITS


async def test_enqueue_and_enqueue_many_carry_the_keys(pool):
    job = await aqueue.enqueue(
        pool, "demo.echo", queue="flow", concurrency_key="customer:1", fair_key="A"
    )
    assert (job.concurrency_key, job.fair_key) == ("customer:1", "A")
    stored = await store.get_job(pool, job.id)
    assert stored is not None and (stored.concurrency_key, stored.fair_key) == ("customer:1", "A")
    ids = await aqueue.enqueue_many(
        pool,
        [
            JobSpec(type="demo.echo", queue="flow", concurrency_key="customer:2"),
            JobSpec(type="demo.echo", queue="flow", fair_key="B"),
            JobSpec(type="demo.echo", queue="flow"),
        ],
    )
    jobs = [await store.get_job(pool, i) for i in ids]
    assert [(j.concurrency_key, j.fair_key) for j in jobs if j is not None] == [
        ("customer:2", None),
        (None, "B"),
        (None, None),
    ]


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"concurrency_key": ""}, "concurrency_key"),
        ({"concurrency_key": "k" * 201}, "concurrency_key"),
        ({"fair_key": 7}, "fair_key"),
        ({"fair_key": "a\u0000"}, "fair_key"),
    ],
)
async def test_enqueue_refuses_a_bad_key(pool, keys, named):
    with pytest.raises(ValidationError, match=named):
        await aqueue.enqueue(pool, "demo.echo", **keys)


async def test_enqueue_refuses_a_fair_key_with_dependencies(pool):
    parent = await aqueue.enqueue(pool, "demo.echo")
    with pytest.raises(ValidationError, match="'fair_key' cannot be combined with 'depends_on'"):
        await aqueue.enqueue(pool, "demo.echo", fair_key="A", depends_on=[parent.id])


async def test_a_concurrency_key_may_wait_on_dependencies(pool):
    parent = await aqueue.enqueue(pool, "demo.echo")
    child = await aqueue.enqueue(
        pool, "demo.echo", concurrency_key="customer:1", depends_on=[parent.id]
    )
    assert child.waiting_for == 1 and child.concurrency_key == "customer:1"


# --- POST /jobs -----------------------------------------------------------------------------


async def test_post_jobs_round_trips_the_keys(client):
    body = {"type": "demo.echo", "queue": "flow", "concurrency_key": "customer:1", "fair_key": "A"}
    created = await client.post("/jobs", json=body)
    assert created.status_code == 201, created.text
    job = created.json()
    assert (job["concurrency_key"], job["fair_key"]) == ("customer:1", "A")
    shown = (await client.get(f"/jobs/{job['id']}")).json()
    assert (shown["concurrency_key"], shown["fair_key"]) == ("customer:1", "A")
    page = (await client.get("/jobs", params={"queue": "flow"})).json()["jobs"]
    assert [(j["concurrency_key"], j["fair_key"]) for j in page] == [("customer:1", "A")]
    plain = (await client.post("/jobs", json={"type": "demo.echo"})).json()
    assert plain["concurrency_key"] is None and plain["fair_key"] is None


async def test_an_idempotent_repeat_with_keys_returns_the_first_job(client):
    body = {"type": "demo.echo", "concurrency_key": "c", "fair_key": "A", "idempotency_key": "k1"}
    first = await client.post("/jobs", json=body)
    again = await client.post("/jobs", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["fair_key"] == "A"


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"concurrency_key": ""}, "concurrency_key"),
        ({"concurrency_key": "k" * 201}, "concurrency_key"),
        ({"concurrency_key": 42}, "concurrency_key"),
        ({"concurrency_key": ["a"]}, "concurrency_key"),
        ({"fair_key": ""}, "fair_key"),
        ({"fair_key": {"tenant": "A"}}, "fair_key"),
        ({"fair_key": "a\u0000b"}, "fair_key"),
        ({"fair_key": True}, "fair_key"),
    ],
)
async def test_post_jobs_refuses_a_bad_key_with_a_422_naming_it(client, pool, keys, named):
    r = await client.post("/jobs", json={"type": "demo.echo", **keys})
    assert r.status_code == 422
    assert_error(r, named)
    assert await pool.fetchval("SELECT count(*) FROM all_jobs") == 0


async def test_post_jobs_refuses_a_fair_key_with_depends_on(client, pool):
    parent = (await client.post("/jobs", json={"type": "demo.echo"})).json()
    r = await client.post(
        "/jobs", json={"type": "demo.echo", "fair_key": "A", "depends_on": [parent["id"]]}
    )
    assert r.status_code == 422
    assert_error(r, "'fair_key' cannot be combined with 'depends_on'")
    assert await pool.fetchval("SELECT count(*) FROM all_jobs") == 1


async def test_submit_job_takes_the_keys_too(client, pool):
    r = await client.post(
        "/submit-job", json={"task": "demo.echo", "concurrency_key": "c", "fair_key": "A"}
    )
    assert r.status_code == 201
    job = await store.get_job(pool, uuid.UUID(r.json()["job_id"]))
    assert job is not None and (job.concurrency_key, job.fair_key) == ("c", "A")
    bad = await client.post("/submit-job", json={"task": "demo.echo", "fair_key": ""})
    assert bad.status_code == 422 and "fair_key" in bad.json()["error"]


# --- declared in code -----------------------------------------------------------------------


def test_registry_limits_are_checked_and_kept_at_declaration():
    registry = Registry()
    declared = registry.limits("email", rate_limit="50 / S", key_limits={"vip": 5})
    assert declared == {"rate_limit": "50/s", "key_limits": {"vip": 5}}
    # declaring the queue again adds to it; None is kept: it removes that limit at start
    registry.limits("email", key_concurrency=2, fair_weights=None)
    registry.limits("bulk", fair_weights={"A": 3})
    assert registry.queue_limits == {
        "email": {
            "rate_limit": "50/s",
            "key_limits": {"vip": 5},
            "key_concurrency": 2,
            "fair_weights": None,
        },
        "bulk": {"fair_weights": {"A": 3.0}},
    }


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.limits("email", rate_limit="50 per second"), "'rate_limit' must be a rate"),
        (lambda r: r.limits("email", key_concurrency=0), "'key_concurrency' must be between"),
        (lambda r: r.limits("email", key_limits={"vip": "5"}), "'key_limits.vip'"),
        (lambda r: r.limits("email", fair_weights={"A": -1}), "'fair_weights.A'"),
        (lambda r: r.limits("bad queue!", key_concurrency=2), "queue"),
        (lambda r: r.limits("email"), "names none of: rate_limit"),
    ],
)
def test_a_bad_limit_in_code_fails_at_declaration(call, message):
    registry = Registry()
    with pytest.raises(ValidationError, match=message):
        call(registry)
    assert registry.queue_limits == {}


def test_include_merges_the_declared_limits():
    app, part = Registry(), Registry()
    app.limits("email", rate_limit="10/s", key_concurrency=1)
    part.limits("email", key_concurrency=3)
    part.limits("bulk", key_concurrency=4)
    app.include(part)
    assert app.queue_limits == {
        "email": {"rate_limit": "10/s", "key_concurrency": 3},
        "bulk": {"key_concurrency": 4},
    }


async def test_sync_sets_only_the_fields_declared_in_code(pool):
    await aqueue.set_limits(pool, "email", rate_limit="5/s", fair_weights={"A": 2})
    registry = Registry()
    registry.limits("email", key_concurrency=2, key_limits={"vip": 5}, fair_weights=None)
    registry.limits("bulk", rate_limit="100/min")
    await control.sync_code_limits(pool, registry.queue_limits)
    await control.sync_code_limits(pool, registry.queue_limits)  # again: the same
    assert await aqueue.limits(pool, "email") == {
        "rate_limit": "5/s",  # set by an operator, not named in code: kept
        "key_concurrency": 2,
        "key_limits": {"vip": 5},
        "fair_weights": None,
    }
    assert await aqueue.limits(pool, "bulk") == {**NO_LIMITS, "rate_limit": "100/min"}


async def test_the_scheduler_sets_the_declared_limits_at_its_start(pool, db_url):
    registry = Registry()
    registry.limits("email", rate_limit="50/s", key_concurrency=2, fair_weights={"A": 3})
    expected = {"rate_limit": "50/s", "key_concurrency": 2, "key_limits": None}
    expected["fair_weights"] = {"A": 3.0}

    async def applied() -> bool:
        return await aqueue.limits(pool, "email") == expected

    async with RunningScheduler(pool, db_url, registry):
        await wait_for(applied, timeout=10)
    # an operator's change stands until the next start
    await aqueue.set_limits(pool, "email", key_concurrency=8)
    await asyncio.sleep(0)
    assert (await aqueue.limits(pool, "email"))["key_concurrency"] == 8
    async with RunningScheduler(pool, db_url, registry):
        await wait_for(applied, timeout=10)


def test_the_limits_body_in_the_openapi_document_lists_every_field():
    from aqueue.api.openapi import openapi_document

    path = openapi_document()["paths"]["/queues/{name}/limits"]["put"]
    schema = path["requestBody"]["content"]["application/json"]["schema"]
    assert tuple(schema["properties"]) == control.LIMIT_FIELDS
    new_job = openapi_document()["components"]["schemas"]["NewJob"]["properties"]
    assert {"concurrency_key", "fair_key"} <= set(new_job)
