"""API tokens with scopes against a real PostgreSQL, through the ASGI app in process:
who may call which route, 401 against 403, revoked and expired tokens, the shared
--api-token, the dashboard's cookie session and its CSRF token, the rate limit per token."""

from __future__ import annotations

import hashlib
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.routing import Route

from aqueue import tokens
from aqueue.api.app import create_app
from aqueue.api.auth import CSRF_COOKIE, TOKEN_COOKIE, csrf_token, route_scopes
from aqueue.metrics import Metrics
from aqueue.metrics_server import create_metrics_app
from aqueue.model import ValidationError
from aqueue.settings import RateLimit, Settings

AUTH = Settings(auth=True)
JOB = {"type": "demo.echo", "payload": {"n": 1}}
SHARED = "a-shared-secret-of-some-length"


@asynccontextmanager
async def client_for(app):
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as c:
        yield c


@pytest.fixture
async def client(pool):
    async with client_for(create_app(pool, AUTH, metrics=Metrics())) as c:
        yield c


async def make(pool, name: str, *scopes: str, expires: float | None = None) -> dict[str, str]:
    _, secret = await tokens.create(pool, name, scopes, expires)
    return {"Authorization": f"Bearer {secret}"}


def test_every_route_says_who_may_call_it(pool):
    app = create_app(pool, AUTH, metrics=Metrics())
    undeclared = [
        route.path
        for route in app.routes
        if isinstance(route, Route) and route_scopes(route.endpoint) is None
    ]
    assert undeclared == []
    metrics_app = create_metrics_app(pool, Metrics(), AUTH)
    assert all(route_scopes(r.endpoint) is not None for r in metrics_app.routes)


async def test_no_token_is_401_with_a_bearer_challenge(client):
    for method, path in (("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/metrics")):
        response = await client.request(method, path, json=JOB if method == "POST" else None)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "needs a token" in response.json()["error"]


async def test_a_malformed_authorization_header_is_401(client):
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "token-without-scheme"):
        response = await client.get("/jobs", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert "Bearer <token>" in response.json()["error"]


async def test_an_unknown_token_is_401(client):
    for secret in ("aq_" + "x" * 43, "not-even-ours"):
        response = await client.get("/jobs", headers={"Authorization": f"Bearer {secret}"})
        assert response.status_code == 401
        assert response.json()["error"] == "the token is unknown, revoked or expired"


async def test_probes_and_the_dashboard_page_need_no_token(client):
    for path in ("/healthz", "/readyz", "/", "/dashboard/app.js"):
        assert (await client.get(path)).status_code == 200, path


async def test_a_read_token_reads_and_may_not_enqueue_or_act(pool, client):
    read = await make(pool, "reader", "read")
    for path in ("/jobs", "/queues", "/queues/depth", "/workers", "/schedules", "/stats"):
        assert (await client.get(path, headers=read)).status_code == 200, path
    assert (await client.get("/metrics", headers=read)).status_code == 200
    assert (await client.get("/openapi.json", headers=read)).status_code == 200
    refused = await client.post("/jobs", json=JOB, headers=read)
    assert refused.status_code == 403
    assert refused.json()["error"] == (
        "the token 'reader' may not do this: it needs the enqueue scope"
    )
    assert (await client.post("/queues/default/pause", headers=read)).status_code == 403
    assert (await client.get("/jobs", headers=read)).json()["jobs"] == []


async def test_an_enqueue_token_enqueues_through_every_producer_route(pool, client):
    enqueue = await make(pool, "producer", "enqueue")
    created = await client.post("/jobs", json=JOB, headers=enqueue)
    assert created.status_code == 201
    seed = await client.post(
        "/submit-job", json={"task": "demo.echo", "payload": {}}, headers=enqueue
    )
    assert seed.status_code == 201
    status = await client.get(f"/job-status/{seed.json()['job_id']}", headers=enqueue)
    assert status.status_code == 200 and status.json()["status"] == "pending"
    assert (await client.get("/jobs", headers=enqueue)).status_code == 403
    job_id = created.json()["id"]
    assert (await client.post(f"/jobs/{job_id}/cancel", headers=enqueue)).status_code == 403


async def test_an_admin_token_acts_and_reads(pool, client):
    admin = await make(pool, "operator", "admin")
    job = (await client.post("/jobs", json=JOB, headers=admin)).json()
    cancelled = await client.post(f"/jobs/{job['id']}/cancel", headers=admin)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    assert (await client.post("/queues/default/pause", headers=admin)).status_code == 200
    limits = await client.put("/queues/default/limits", json={"rate_limit": "5/s"}, headers=admin)
    assert limits.status_code == 200
    assert (await client.get(f"/jobs/{job['id']}", headers=admin)).status_code == 200


async def test_a_worker_token_may_not_touch_the_jobs_routes(pool, client):
    worker = await make(pool, "remote", "worker")
    assert (await client.get("/jobs", headers=worker)).status_code == 403
    assert (await client.post("/jobs", json=JOB, headers=worker)).status_code == 403


async def test_a_revoked_token_is_401_at_its_next_request(pool, client):
    headers = await make(pool, "short-lived", "read")
    assert (await client.get("/jobs", headers=headers)).status_code == 200
    await tokens.revoke(pool, "short-lived")
    response = await client.get("/jobs", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "the token is unknown, revoked or expired"


async def test_an_expired_token_is_401(pool, client):
    headers = await make(pool, "expiring", "read", expires=3600)
    assert (await client.get("/jobs", headers=headers)).status_code == 200
    await pool.execute(
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE name = 'expiring'"
    )
    assert (await client.get("/jobs", headers=headers)).status_code == 401
    [listed] = await tokens.list_all(pool)
    now = await pool.fetchval("SELECT now()")
    assert listed.state(now) == "expired"


async def test_the_database_keeps_only_the_tokens_digest(pool):
    _, secret = await tokens.create(pool, "stored", ["read"], None)
    row = await pool.fetchrow("SELECT * FROM api_tokens WHERE name = 'stored'")
    assert row["digest"] == hashlib.sha256(secret.encode()).digest()
    assert all(secret not in str(value) for value in row.values())
    assert secret.startswith("aq_") and len(secret) == 46


async def test_a_token_name_is_never_reused_and_bad_input_is_refused(pool):
    await tokens.create(pool, "ci", ["enqueue"], None)
    await tokens.revoke(pool, "ci")
    with pytest.raises(tokens.TokenNameTaken):
        await tokens.create(pool, "ci", ["enqueue"], None)
    with pytest.raises(ValidationError, match="unknown scope 'root'"):
        await tokens.create(pool, "other", ["root"], None)
    with pytest.raises(ValidationError, match="reserved"):
        await tokens.create(pool, "api-token", ["read"], None)
    with pytest.raises(ValidationError, match="not a valid name"):
        await tokens.create(pool, "two words", ["read"], None)
    with pytest.raises(tokens.TokenNotFound):
        await tokens.revoke(pool, "never-made")


async def test_use_is_noted_at_most_once_a_minute(pool, client):
    headers = await make(pool, "noted", "read")
    await client.get("/jobs", headers=headers)
    first = await pool.fetchval("SELECT last_used_at FROM api_tokens WHERE name = 'noted'")
    assert first is not None
    await client.get("/jobs", headers=headers)
    again = await pool.fetchval("SELECT last_used_at FROM api_tokens WHERE name = 'noted'")
    assert again == first


async def test_the_shared_api_token_has_every_scope(pool):
    settings = Settings(api_token=SHARED)
    assert settings.auth_enabled
    async with client_for(create_app(pool, settings)) as c:
        good = {"Authorization": f"Bearer {SHARED}"}
        assert (await c.post("/jobs", json=JOB, headers=good)).status_code == 201
        assert (await c.post("/queues/default/pause", headers=good)).status_code == 200
        wrong = {"Authorization": f"Bearer {SHARED[:-1]}x"}
        assert (await c.get("/jobs", headers=wrong)).status_code == 401
        # database tokens work beside it
        reader = await make(pool, "beside", "read")
        assert (await c.get("/jobs", headers=reader)).status_code == 200


async def test_with_auth_off_no_route_asks_for_a_token(pool):
    async with client_for(create_app(pool, Settings())) as c:
        assert (await c.post("/jobs", json=JOB)).status_code == 201
        assert (await c.get("/session")).json() == {"auth": False, "name": None, "scopes": []}


async def test_the_rate_limit_keys_on_the_tokens_name(pool):
    settings = Settings(auth=True, rate_limit=RateLimit(2, 60.0))
    async with client_for(create_app(pool, settings)) as c:
        busy = await make(pool, "busy", "read")
        quiet = await make(pool, "quiet", "read")
        assert [(await c.get("/jobs", headers=busy)).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]
        # the same address, another token: its own budget
        assert (await c.get("/jobs", headers=quiet)).status_code == 200
        clients = {r["client"] for r in await pool.fetch("SELECT client FROM api_rate_limits")}
        assert clients == {"token:busy", "token:quiet"}


async def test_the_openapi_document_names_each_operations_scope(pool, client):
    headers = await make(pool, "docs", "read")
    document = (await client.get("/openapi.json", headers=headers)).json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    create = document["paths"]["/jobs"]["post"]
    assert "Scope: enqueue." in create["description"] and "403" in create["responses"]
    assert document["paths"]["/healthz"]["get"]["security"] == []


async def test_the_metrics_port_asks_for_a_read_token_too(pool):
    async with client_for(create_metrics_app(pool, Metrics(), AUTH)) as c:
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/metrics")).status_code == 401
        reader = await make(pool, "scraper", "read")
        assert (await c.get("/metrics", headers=reader)).status_code == 200


# --- the dashboard's session --------------------------------------------------------------


async def sign_in(c: httpx.AsyncClient, secret: str) -> httpx.Response:
    return await c.post("/session", json={"token": secret})


async def test_signing_in_keeps_the_token_in_an_http_only_strict_cookie(pool, client):
    _, secret = await tokens.create(pool, "browser", ["admin"], None)
    response = await sign_in(client, secret)
    assert response.status_code == 200
    assert response.json() == {
        "auth": True,
        "name": "browser",
        "scopes": ["admin", "enqueue", "read"],
    }
    cookies = {c.split("=", 1)[0]: c for c in response.headers.get_list("set-cookie")}
    assert "HttpOnly" in cookies[TOKEN_COOKIE] and "SameSite=strict" in cookies[TOKEN_COOKIE]
    assert "HttpOnly" not in cookies[CSRF_COOKIE]
    assert secret not in cookies[CSRF_COOKIE]
    assert (await client.get("/session")).json()["name"] == "browser"
    assert (await client.get("/jobs")).status_code == 200


async def test_a_wrong_token_does_not_sign_in(client):
    response = await sign_in(client, "aq_" + "y" * 43)
    assert response.status_code == 401
    assert "set-cookie" not in response.headers
    assert (await client.get("/session")).status_code == 401


async def test_a_cookie_request_that_acts_needs_the_csrf_token(pool, client):
    _, secret = await tokens.create(pool, "clicker", ["admin"], None)
    await sign_in(client, secret)
    refused = await client.post("/queues/default/pause")
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    forged = await client.post("/queues/default/pause", headers={"X-CSRF-Token": "guess"})
    assert forged.status_code == 403
    assert await pool.fetchval("SELECT count(*) FROM queues WHERE paused") == 0
    csrf = client.cookies[CSRF_COOKIE]
    assert csrf == csrf_token(secret)
    done = await client.post("/queues/default/pause", headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200


async def test_signing_out_clears_the_cookies(pool, client):
    _, secret = await tokens.create(pool, "leaver", ["read"], None)
    await sign_in(client, secret)
    assert (await client.delete("/session")).status_code == 204
    assert TOKEN_COOKIE not in client.cookies
    assert (await client.get("/jobs")).status_code == 401


async def test_a_revoked_tokens_session_ends(pool, client):
    _, secret = await tokens.create(pool, "gone", ["read"], None)
    await sign_in(client, secret)
    await tokens.revoke(pool, "gone")
    response = await client.get("/jobs")
    assert response.status_code == 401 and "session" in response.json()["error"]


async def test_signing_in_is_refused_when_auth_is_off(pool):
    async with client_for(create_app(pool, Settings())) as c:
        assert (await sign_in(c, SHARED)).status_code == 409
