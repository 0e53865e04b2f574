"""Secrets kept out of sight: the database URL read from a file, as Kubernetes and Docker
mount secrets; and no password, payload or request header in what `aqueue serve` and the
commands print, in a debug log with jobs, failures, bad requests and a lost database, nor
in the one line of a failed start."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from aqueue.api.auth import TOKEN_COOKIE
from aqueue.model import JobStatus
from tests.acceptance.test_cli import one_line_error, run_cli
from tests.helpers import ServeProcess, as_role, free_port, subprocess_env, wait_status

pytestmark = pytest.mark.timeout(120)


def test_commands_read_the_database_url_from_the_file_named(db_url, tmp_path):
    secret = tmp_path / "database-url"
    secret.write_text(db_url + "\n")
    env = subprocess_env(AQUEUE_DATABASE_URL_FILE=str(secret))
    assert "DATABASE_URL" not in env
    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    enqueued = run_cli("enqueue", "demo.echo", "--payload", '{"n": 1}', env=env)
    assert enqueued.returncode == 0, enqueued.stderr
    job = json.loads(enqueued.stdout)
    shown = run_cli("status", job["id"], env=env)
    assert json.loads(shown.stdout)["payload"] == {"n": 1}


def test_a_missing_file_is_one_line_naming_the_variable_and_path(tmp_path: Path):
    missing = tmp_path / "nothing-here"
    result = run_cli("queues", env=subprocess_env(AQUEUE_DATABASE_URL_FILE=str(missing)))
    assert result.returncode == 2
    assert one_line_error(result) == (
        f"aqueue: error: --database-url: the file AQUEUE_DATABASE_URL_FILE names ({missing}) "
        "cannot be read: No such file or directory"
    )


# --- nothing secret in what aqueue prints ------------------------------------------------


@pytest.fixture
async def password_url(pg_url: str, db_url: str) -> AsyncIterator[tuple[str, str]]:
    """(the test database's URL as a role with a password, that password). The server
    trusts 127.0.0.1 and never asks for it: what is checked is that it is never shown."""
    name = f"aqueue_secret_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    password = f"pw-{uuid.uuid4().hex}"
    admin = await asyncpg.connect(pg_url)
    database = await asyncpg.connect(db_url)
    try:
        await admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        await database.execute(
            f"GRANT USAGE, CREATE ON SCHEMA public TO {name}; "
            f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {name}"
        )
        yield as_role(db_url, name, password), password
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", name
        )
        await database.execute(f"DROP OWNED BY {name}")
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
    finally:
        await database.close()
        await admin.close()


def leaks(text: str, *secrets: str) -> list[str]:
    return [secret for secret in secrets if secret in text]


async def test_a_debug_log_shows_no_password_payload_or_token(password_url, db_url, pg_url):
    url, password = password_url
    payload_secret = f"payload-secret-{uuid.uuid4().hex}"
    # authentication on, with a shared token (given in the environment, as a deployment
    # would) that the requests carry, and a wrong one some of them carry instead
    api_token = f"api-token-{uuid.uuid4().hex}"
    bearer = f"sekrit-{uuid.uuid4().hex}"
    port = free_port()
    server = ServeProcess(
        "--database-url", url, "--port", str(port), "--log-level", "DEBUG",
        "--reaper-interval", "0.2", "--backoff-base", "0.05", "--backoff-cap", "0.1",
        env=subprocess_env(AQUEUE_API_TOKEN=api_token),
        stdout=True,
    )  # fmt: skip
    await server.start()
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    try:
        auth = {"Authorization": f"Bearer {api_token}"}
        wrong = {"Authorization": f"Bearer {bearer}", "Cookie": f"{TOKEN_COOKIE}={bearer}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=auth) as http:
            secret = {"secret": payload_secret, "message": f"failed on {payload_secret}"}
            done = await http.post("/jobs", json={"type": "demo.echo", "payload": secret})
            failed = await http.post(
                "/jobs", json={"type": "demo.fail", "payload": secret, "max_attempts": 2}
            )
            assert done.status_code == failed.status_code == 201
            await wait_status(pool, uuid.UUID(done.json()["id"]), JobStatus.COMPLETED)
            dead = await wait_status(pool, uuid.UUID(failed.json()["id"]), JobStatus.DEAD)
            assert payload_secret in (dead.last_error or "")  # it is in the job, not the log
            # bad requests of every kind, each carrying the secrets
            as_json = {"content-type": "application/json"}
            as_text = {"content-type": "text/plain"}
            forged = {"Origin": f"https://{payload_secret}.example"}
            bad = [
                await http.post("/jobs", content=f'{{"x": "{payload_secret}', headers=as_json),
                await http.post("/jobs", json={"type": "demo.echo", payload_secret: 1}),
                await http.post("/jobs", content=payload_secret, headers=as_text),
                await http.get(f"/jobs/{payload_secret}"),
                await http.get("/jobs", params={"status": payload_secret, "token": bearer}),
                await http.get(f"/{payload_secret}"),
                await http.get("/queues", headers={"Host": f"{payload_secret}.example"}),
                await http.post("/queues/default/pause", headers=forged),
                await http.post("/jobs", content=b"x" * 2_000_000, headers=as_json),
                await http.get("/healthz", headers={"x-pad": payload_secret * 400}),
                await http.get("/jobs", headers=wrong),
                await http.post(
                    "/jobs", json={"type": "demo.echo", "payload": secret}, headers=wrong
                ),
            ]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as anonymous:
                # a cookie session that does not exist, on a route that changes something
                cookie = {"Cookie": wrong["Cookie"], "X-CSRF-Token": bearer}
                bad.append(await anonymous.post("/queues/default/pause", headers=cookie))
            for answer in bad:
                assert 400 <= answer.status_code < 500, (answer.request.url, answer.text)
            # the database drops aqueue's connections: the reconnects and the errors they
            # log (the API's, the LISTEN connection's, the worker's loops')
            await pool.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                urlsplit(url).username,
            )
            await server.wait_for_line("LISTEN connection lost")
            after = await http.post("/jobs", json={"type": "demo.echo", "payload": secret})
            assert after.status_code in (201, 503)
    finally:
        await pool.close()
        server.signal(signal.SIGTERM)
        assert await server.wait() == 0, "\n".join(server.lines[-30:])
    printed = "\n".join(server.lines + server.out_lines)
    assert any(" DEBUG " in line for line in server.lines), "not the debug log"
    assert "api listening" in printed and "scheduler running" in printed
    assert not leaks(printed, password, url, payload_secret, api_token, bearer), printed


def test_an_unreachable_database_at_start_is_one_line_without_the_password():
    password = f"pw-{uuid.uuid4().hex}"
    for url in (
        f"postgresql://aqueue:{password}@127.0.0.1:1/aqueue",  # nothing listens on port 1
        f"postgresql://aqueue:{password}@127.0.0.1:99999/aqueue",  # no such port
        f"postgresql://aqueue:{password}@127.0.0.1:notaport/aqueue",
        # a password with an unencoded @ and ?: read as the host, the port, a query
        f"postgresql://aqueue:{password}@x@127.0.0.1:5432/aqueue",
        f"postgresql://aqueue:{password}?x@127.0.0.1:5432/aqueue",
    ):
        for command in (["serve", "--roles", "api", "--port", "1"], ["queues"]):
            result = run_cli(*command, "--database-url", url)
            assert result.returncode == 1, result.stderr
            line = one_line_error(result)
            assert line.startswith(
                ("aqueue: error: cannot reach the database", "aqueue: error: the database URL")
            ), line
            assert not leaks(line, password, password[3:15], url), line
            assert result.stdout == ""


def test_the_password_from_the_url_file_is_not_shown_either(tmp_path):
    password = f"pw-{uuid.uuid4().hex}"
    secret = tmp_path / "database-url"
    secret.write_text(f"postgresql://aqueue:{password}@127.0.0.1:1/aqueue\n")
    result = run_cli("migrate", env=subprocess_env(AQUEUE_DATABASE_URL_FILE=str(secret)))
    assert result.returncode == 1
    assert password not in one_line_error(result)
