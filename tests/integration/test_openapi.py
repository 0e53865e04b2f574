"""The OpenAPI document against what the API answers, in process: each answer that
tests/acceptance/test_api_fuzz.py (schemathesis) found missing from the document, or
unlike it, is made here once and looked up in the document, its body validated against
the schema the document gives for it."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import jsonschema
import pytest

from aqueue.api.openapi import openapi_document
from aqueue.model import NAME_RE, ValidationError, check_name
from aqueue.settings import Settings
from tests.helpers import running_worker, wait_for
from tests.integration.test_api import api_client

DOCUMENT = openapi_document()
SCHEDULE = {"type": "demo.echo", "cron": "*/5 * * * *"}


def assert_documented(response: httpx.Response, method: str, path: str) -> None:
    """The document lists this answer of `method path`, and the body fits its schema."""
    responses = DOCUMENT["paths"][path][method.lower()]["responses"]
    status = str(response.status_code)
    assert status in responses, (
        f"{method} {path} answered {status}, which its document does not list "
        f"({', '.join(responses)}): {response.text[:200]}"
    )
    content = responses[status].get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is not None:
        assert response.headers["content-type"].startswith("application/json")
        # the components beside it: the schema's $refs point into the document
        jsonschema.validate(response.json(), {**schema, "components": DOCUMENT["components"]})


@pytest.fixture
async def client(pool):
    async with api_client(pool, Settings(max_payload_bytes=1000)) as c:
        yield c


NOT_AN_ID = "null,null"  # what schemathesis sent first


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("GET", f"/schedules/{NOT_AN_ID}", "/schedules/{schedule_id}"),
        ("DELETE", f"/schedules/{NOT_AN_ID}", "/schedules/{schedule_id}"),
        ("GET", f"/job-status/{NOT_AN_ID}", "/job-status/{job_id}"),
    ],
)
async def test_a_bad_id_is_a_documented_400(client, method, path, template):
    response = await client.request(method, path)
    assert response.status_code == 400
    assert_documented(response, method, template)


# (method, path, template) of each route that reads a JSON body
BODY_ROUTES = [
    ("POST", "/jobs", "/jobs"),
    ("POST", "/submit-job", "/submit-job"),
    ("POST", "/schedules", "/schedules"),
    ("PATCH", f"/schedules/{uuid.uuid4()}", "/schedules/{schedule_id}"),
    ("PUT", "/queues/default/limits", "/queues/{name}/limits"),
    ("POST", "/queues/default/retry-dead", "/queues/{name}/retry-dead"),
]
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(("method", "path", "template"), BODY_ROUTES)
@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"\x00", JSON, 400),  # what schemathesis sent: not JSON
        (b"\x87o", JSON, 400),  # not UTF-8
        (b"{}", {"content-type": "text/plain"}, 415),
        (b'{"payload": "' + b"x" * 1_100_000 + b'"}', JSON, 413),
    ],
    ids=["not-json", "not-utf8", "not-declared-json", "too-large"],
)
async def test_a_body_it_cannot_read_is_a_documented_4xx(
    client, method, path, template, body, headers, status
):
    response = await client.request(method, path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert_documented(response, method, template)


async def test_a_patch_without_a_content_type_is_a_documented_415(client):
    response = await client.patch(f"/schedules/{uuid.uuid4()}")
    assert response.status_code == 415
    assert_documented(response, "PATCH", "/schedules/{schedule_id}")


async def test_a_patch_to_a_taken_name_is_a_documented_409(client):
    for name in ("first", "second"):
        created = await client.post("/schedules", json={**SCHEDULE, "name": name})
        assert_documented(created, "POST", "/schedules")
    second = created.json()["id"]
    response = await client.patch(f"/schedules/{second}", json={"name": "first"})
    assert response.status_code == 409
    assert_documented(response, "PATCH", "/schedules/{schedule_id}")


async def test_a_repeated_submit_job_is_a_documented_200_with_the_same_id(client):
    body = {"task": "demo.echo", "idempotency_key": "once"}
    first = await client.post("/submit-job", json=body)
    again = await client.post("/submit-job", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert_documented(first, "POST", "/submit-job")
    assert_documented(again, "POST", "/submit-job")


@pytest.mark.parametrize("path", ["/jobs", "/submit-job"])
async def test_an_unknown_dependency_is_a_documented_400(client, path):
    field = "task" if path == "/submit-job" else "type"
    body = {field: "demo.echo", "depends_on": [str(uuid.uuid4())]}
    response = await client.post(path, json=body)
    assert response.status_code == 400
    assert_documented(response, "POST", path)


async def test_the_queue_actions_answer_as_documented(client):
    for action, body in [("pause", None), ("resume", None), ("retry-dead", {"type": None})]:
        response = await client.post(f"/queues/default/{action}", json=body)
        assert response.status_code == 200
        assert_documented(response, "POST", f"/queues/{{name}}/{action}")


async def test_the_schedules_list_and_the_probes_answer_as_documented(client):
    await client.post("/schedules", json=SCHEDULE)
    assert_documented(await client.get("/schedules"), "GET", "/schedules")
    assert_documented(await client.get("/healthz"), "GET", "/healthz")
    assert_documented(await client.get("/readyz"), "GET", "/readyz")


@pytest.mark.parametrize(("path", "template"), [("/", "/"), ("/dashboard/app.js", None)])
async def test_a_revalidation_is_a_documented_304(client, path, template):
    etag = (await client.get(path)).headers["etag"]
    response = await client.get(path, headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert_documented(response, "GET", template or "/dashboard/{name}")


def test_a_schedule_needs_type_and_cron_when_created_not_when_changed():
    post = DOCUMENT["paths"]["/schedules"]["post"]["requestBody"]
    patch = DOCUMENT["paths"]["/schedules/{schedule_id}"]["patch"]["requestBody"]
    assert post["content"]["application/json"]["schema"]["required"] == ["type", "cron"]
    assert "required" not in patch["content"]["application/json"]["schema"]


@pytest.mark.parametrize(
    "name",
    ["default", "a", "email.send", "x:1-2_3", "A" * 128, "A" * 129, "", "-a", "a b",
     "a\n", "\u00e9", "a/b", "a\x00"],
)  # fmt: skip
def test_the_documented_name_pattern_is_the_one_the_api_checks(name):
    # ECMA-262's $ (JSON Schema's) matches only at the very end, as fullmatch does
    parameters = DOCUMENT["paths"]["/jobs"]["get"]["parameters"]
    pattern = next(p for p in parameters if p["name"] == "queue")["schema"]["pattern"]
    assert pattern == f"^{NAME_RE.pattern}$"
    documented = re.search(pattern.removesuffix("$") + r"\Z", name) is not None
    try:
        check_name("queue", name)
        accepted = True
    except ValidationError:
        accepted = False
    assert documented == accepted


def _names(schema: Any) -> list[str]:
    return [p for p, v in schema.get("properties", {}).items() if "pattern" in v]


def test_every_queue_and_type_name_in_the_document_has_the_pattern():
    new_job = DOCUMENT["components"]["schemas"]["NewJob"]
    assert {"type", "queue"} <= set(_names(new_job))
    compat = DOCUMENT["paths"]["/submit-job"]["post"]["requestBody"]["content"]
    assert "task" in _names(compat["application/json"]["schema"])
    for path, operations in DOCUMENT["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] in {"queue", "type"} or (
                    parameter["name"] == "name" and path.startswith("/queues/")
                ):
                    if path == "/queues/depth":
                        continue  # a list: a,b
                    assert "pattern" in parameter["schema"], (path, parameter["name"])


@pytest.mark.parametrize("method", ["TRACE", "OPTIONS", "PUT"])
@pytest.mark.parametrize(
    ("path", "template"),
    [("/jobs", "/jobs"), (f"/schedules/{uuid.uuid4()}", "/schedules/{schedule_id}"),
     ("/healthz", "/healthz"), ("/queues/default/pause", "/queues/{name}/pause")],
)  # fmt: skip
async def test_a_method_a_path_does_not_take_is_a_405_that_names_every_one_it_does(
    client, method, path, template
):
    # /jobs and /schedules/{id} are a route per method: Starlette's own 405 named only the
    # first (and the error handler dropped even that), where RFC 9110 wants them all
    response = await client.request(method, path)
    assert response.status_code == 405
    allowed = {m.strip().lower() for m in response.headers["allow"].split(",")}
    assert allowed - {"head"} == set(DOCUMENT["paths"][template]), allowed
    assert response.json() == {"error": "Method Not Allowed", "status": 405}


async def test_the_documented_examples_are_taken(client):
    # schemathesis sends them first: a schedule it can create is one it can then read,
    # change and delete
    body = DOCUMENT["paths"]["/schedules"]["post"]["requestBody"]["content"]
    fields = body["application/json"]["schema"]["properties"]
    for cron in fields["cron"]["examples"]:
        for timezone in fields["timezone"]["examples"]:
            response = await client.post(
                "/schedules", json={**SCHEDULE, "cron": cron, "timezone": timezone}
            )
            assert response.status_code == 201, response.text
    limits = DOCUMENT["paths"]["/queues/{name}/limits"]["put"]["requestBody"]["content"]
    for rate in limits["application/json"]["schema"]["properties"]["rate_limit"]["examples"]:
        response = await client.put("/queues/default/limits", json={"rate_limit": rate})
        assert response.status_code == 200, response.text
        assert response.json()["limits"]["rate_limit"] == rate


async def test_the_queues_and_workers_lists_answer_as_documented(client, pool, db_url):
    await client.post("/jobs", json={"type": "demo.echo", "fair_key": "A"})
    await client.put("/queues/default/limits", json={"rate_limit": "20/s", "key_limits": {"k": 2}})
    async with running_worker(pool, db_url):
        queues = await client.get("/queues")

        async def listed() -> httpx.Response | None:
            # running_worker returns once its notifier listens; the worker's own row is
            # written by its first heartbeat, a moment later
            response = await client.get("/workers")
            return response if response.json()["workers"] else None

        workers = await wait_for(listed)
    assert queues.json()["queues"] and workers.json()["workers"]
    assert_documented(queues, "GET", "/queues")
    assert_documented(workers, "GET", "/workers")
    # a stopped worker (stopped_at set) too
    stopped = await client.get("/workers")
    assert [w["state"] for w in stopped.json()["workers"]] == ["stopped"]
    assert_documented(stopped, "GET", "/workers")


def _fits(instance: object, schema: dict[str, Any]) -> bool:
    validator = jsonschema.Draft202012Validator({**schema, "components": DOCUMENT["components"]})
    return validator.is_valid(instance)


@pytest.mark.parametrize("field", sorted(DOCUMENT["components"]["schemas"]["NewJob"]["properties"]))
async def test_a_null_field_is_taken_exactly_where_the_document_says(client, field):
    # schemathesis sent "fair_key": null, which the document refused and the API took
    body: dict[str, Any] = {"type": "demo.echo", field: None}
    response = await client.post("/jobs", json=body)
    new_job = {"$ref": "#/components/schemas/NewJob"}
    assert (response.status_code == 201) == _fits(body, new_job), response.text
