"""Two `aqueue serve --roles scheduler` processes on one database: a per-second
schedule yields exactly one job per tick; the schedules CLI and a bad cron over HTTP."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import datetime

import httpx
import pytest

from tests.acceptance.test_cli import one_line_error, run_cli
from tests.helpers import ServeProcess, free_port

pytestmark = pytest.mark.timeout(120)


async def test_two_schedulers_make_one_job_per_tick(db_url, pool):
    port = free_port()
    api = await ServeProcess("--roles", "api", "--database-url", db_url, "--port", str(port)).start(
        marker="api listening"
    )
    schedulers = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            bad = await http.post("/schedules", json={"type": "demo.echo", "cron": "*/5 * * *"})
            assert bad.status_code == 422 and "5 fields" in bad.json()["error"]
            created = await http.post(
                "/schedules",
                json={"name": "tick", "type": "demo.echo", "cron": "* * * * * *"},
            )
            assert created.status_code == 201
        for _ in range(2):
            schedulers.append(
                await ServeProcess("--roles", "scheduler", "--database-url", db_url).start(
                    marker="scheduler"
                )
            )
        await asyncio.sleep(20)
    finally:
        for process in (*schedulers, api):
            process.signal(signal.SIGTERM)
        for process in (*schedulers, api):
            assert await process.wait() == 0
    keys = [
        r["idempotency_key"]
        for r in await pool.fetch(
            "SELECT idempotency_key FROM all_jobs WHERE idempotency_key IS NOT NULL"
        )
    ]
    ticks = sorted(int(datetime.fromisoformat(k.split(":", 3)[3]).timestamp()) for k in keys)
    assert len(ticks) >= 15  # about one a second over 20 s
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))  # each tick exactly once


def test_the_schedules_commands(db_url):
    added = run_cli(
        "schedules", "add", "demo.echo", "0 3 * * *", "--name", "nightly",
        "--timezone", "Europe/Berlin", "--database-url", db_url,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    schedule = json.loads(added.stdout)
    assert schedule["name"] == "nightly" and schedule["timezone"] == "Europe/Berlin"
    listed = run_cli("schedules", "--database-url", db_url)
    assert "nightly" in listed.stdout and "0 3 * * *" in listed.stdout
    disabled = run_cli("schedules", "disable", schedule["id"], "--database-url", db_url)
    assert json.loads(disabled.stdout)["enabled"] is False
    deleted = run_cli("schedules", "delete", schedule["id"], "--database-url", db_url)
    assert deleted.returncode == 0
    again = run_cli("schedules", "delete", schedule["id"], "--database-url", db_url)
    assert again.returncode == 1 and "no schedule with id" in one_line_error(again)
    bad = run_cli("schedules", "add", "demo.echo", "0 25 * * *", "--database-url", db_url)
    assert bad.returncode == 1 and "not a valid cron expression" in one_line_error(bad)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0 0 31 11 *"], "never fires"),
        (["0 3 * * *", "--timezone", "America"], "not a known IANA time zone"),
        (["0 3 * * *", "--payload", "[" * 5000], "--payload is nested too deeply"),
    ],
)
def test_a_bad_schedule_on_the_command_line_is_one_line(db_url, args, message):
    bad = run_cli("schedules", "add", "demo.echo", *args, "--database-url", db_url)
    assert bad.returncode == 1 and message in one_line_error(bad)
