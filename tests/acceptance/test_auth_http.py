"""Tokens from a shell and the API checking them over real HTTP: `aqueue tokens
create|list|revoke`, then `aqueue serve --auth on`: no token 401, wrong scope 403, right
scope 2xx, a revoked token 401, the probes open; the shared --api-token; the warning of a
server that listens beyond loopback with authentication off."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.acceptance.test_cli import one_line_error, run_cli
from tests.helpers import api_server, subprocess_env

pytestmark = pytest.mark.timeout(120)

JOB = {"type": "demo.echo", "payload": {}}


def create(db_url: str, name: str, *flags: str) -> str:
    made = run_cli("tokens", "create", name, *flags, "--database-url", db_url)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("aq_") and "\n" not in secret
    assert "shown this once" in made.stderr and secret not in made.stderr
    return secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[str]:
    async with api_server(db_url, "--auth", "on") as server:
        yield server.url


async def test_no_token_401_wrong_scope_403_right_scope_2xx_revoked_401(db_url, api):
    producer = create(db_url, "producer", "--scopes", "enqueue")
    reader = create(db_url, "reader", "--scopes", "read", "--expires", "90d")
    async with httpx.AsyncClient(base_url=api) as http:
        assert (await http.post("/jobs", json=JOB)).status_code == 401
        assert (await http.get("/jobs")).status_code == 401
        assert (await http.post("/jobs", json=JOB, headers=bearer(reader))).status_code == 403
        created = await http.post("/jobs", json=JOB, headers=bearer(producer))
        assert created.status_code == 201
        listed = await http.get("/jobs", headers=bearer(reader))
        assert listed.status_code == 200 and len(listed.json()["jobs"]) == 1
        for probe in ("/healthz", "/readyz"):
            assert (await http.get(probe)).status_code == 200

        revoked = run_cli("tokens", "revoke", "producer", "--database-url", db_url)
        assert revoked.returncode == 0 and revoked.stdout.strip() == "token 'producer' revoked"
        refused = await http.post("/jobs", json=JOB, headers=bearer(producer))
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")


async def test_tokens_list_shows_every_token_and_no_secret(db_url):
    secret = create(db_url, "ci", "--scopes", "enqueue,read", "--expires", "12h")
    create(db_url, "ops", "--scopes", "admin")
    run_cli("tokens", "revoke", "ops", "--database-url", db_url)
    table = run_cli("tokens", "list", "--database-url", db_url)
    assert table.returncode == 0 and secret not in table.stdout
    header, *rows = table.stdout.splitlines()
    assert header.split() == [
        "name",
        "scopes",
        "state",
        "created_at",
        "expires_at",
        "last_used_at",
    ]
    assert [row.split()[:3] for row in rows] == [
        ["ci", "enqueue,read", "active"],
        ["ops", "admin", "revoked"],
    ]
    listed = json.loads(run_cli("tokens", "list", "--json", "--database-url", db_url).stdout)
    assert [(t["name"], t["state"]) for t in listed] == [("ci", "active"), ("ops", "revoked")]
    assert listed[0]["expires_at"] is not None and listed[1]["revoked_at"] is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "x", "--scopes", "root"), "unknown scope 'root'"),
        (("create", "x"), "needs --scopes"),
        (("create", "x", "--scopes", "read", "--expires", "soon"), "--expires must be"),
        (("create", "--scopes", "read"), "needs the token's name"),
        (("create", "bad name", "--scopes", "read"), "not a valid name"),
        (("create", "api-token", "--scopes", "read"), "reserved"),
        (("revoke", "nobody"), "no token named 'nobody'"),
        (("list", "extra"), "takes no name"),
        (("revoke", "x", "--scopes", "read"), "are for aqueue tokens create"),
    ],
)
def test_bad_token_commands_are_one_line_and_exit_1(db_url, args, message):
    result = run_cli("tokens", *args, "--database-url", db_url)
    assert result.returncode == 1
    assert message in one_line_error(result)
    assert result.stdout == ""


def test_a_token_name_is_taken_for_good(db_url):
    create(db_url, "once", "--scopes", "read")
    again = run_cli("tokens", "create", "once", "--scopes", "read", "--database-url", db_url)
    assert again.returncode == 1 and "exists" in one_line_error(again)


async def test_the_shared_api_token_from_the_environment(db_url):
    shared = "shared-token-for-the-test-0123456789"
    env = subprocess_env(AQUEUE_API_TOKEN=shared)
    async with (
        api_server(db_url, env=env) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        assert (await http.get("/jobs")).status_code == 401
        ok = await http.post("/jobs", json=JOB, headers=bearer(shared))
        assert ok.status_code == 201
        assert (await http.get("/jobs", headers=bearer(shared + "x"))).status_code == 401
    assert not any(shared in line for line in server.process.lines)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--api-token", "short"), "--api-token must be at least 16 characters"),
        (("--api-token", "x" * 20, "--auth", "off"), "--api-token needs authentication on"),
        (("--auth", "maybe"), "--auth must be on or off"),
    ],
)
def test_bad_auth_settings_are_one_line_and_exit_2(flags, message):
    result = run_cli("serve", *flags)
    assert result.returncode == 2
    assert message in one_line_error(result)


async def test_a_server_beyond_loopback_with_auth_off_warns(db_url):
    async with api_server(db_url, "--host", "0.0.0.0") as server:
        line = await server.process.wait_for_line("authentication off")
        assert "WARNING" in line and "--auth on" in line


async def test_a_server_beyond_loopback_with_auth_on_does_not_warn(db_url):
    async with api_server(db_url, "--host", "0.0.0.0", "--auth", "on") as server:
        pass
    assert server.process.count("authentication off") == 0
