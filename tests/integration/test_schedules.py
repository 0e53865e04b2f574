"""Cron schedules and the scheduler role against a real PostgreSQL: the HTTP routes,
exactly-once ticks with two schedulers, the missed-tick policy, schedules declared in
code, and the notifier waking a sleeping scheduler."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import asyncpg
import pytest

from aqueue import Registry, schedules, store
from aqueue.model import ValidationError
from aqueue.notifier import Notifier
from aqueue.scheduler import Scheduler
from aqueue.settings import Settings
from tests.helpers import wait_for
from tests.integration.test_api import api_client

SEED_BODY = {"type": "demo.sleep", "payload": {"seconds": 1}, "cron": "*/5 * * * *"}


async def _scheduled_jobs(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT idempotency_key AS key, type FROM all_jobs WHERE idempotency_key LIKE "
        "'aqueue:schedule:%' ORDER BY idempotency_key"
    )


class RunningScheduler:
    def __init__(self, pool: asyncpg.Pool, url: str, registry: Registry | None = None):
        self.notifier = Notifier(url)
        self.scheduler = Scheduler(pool, Settings(), registry or Registry(), self.notifier)

    async def __aenter__(self) -> Scheduler:
        self.tasks = [
            asyncio.create_task(self.notifier.run()),
            asyncio.create_task(self.scheduler.run()),
        ]
        await asyncio.wait_for(self.notifier.connected.wait(), 10)
        return self.scheduler

    async def __aexit__(self, *exc: object) -> None:
        self.scheduler.stop()
        await self.tasks[1]
        self.notifier.stop()
        await self.tasks[0]


# --- the routes ----------------------------------------------------------------------------


async def test_the_seeds_body_creates_a_schedule_due_at_its_next_tick(pool):
    async with api_client(pool, Settings()) as client:
        created = await client.post("/schedules", json=SEED_BODY)
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["cron"] == "*/5 * * * *" and body["timezone"] == "UTC"
        assert body["enabled"] is True and body["name"].startswith("demo.sleep-")
        listed = (await client.get("/schedules")).json()["schedules"]
        assert [s["id"] for s in listed] == [body["id"]]
        shown = await client.get(f"/schedules/{body['id']}")
        assert shown.json()["next_run_at"] == body["next_run_at"]
    next_run = await pool.fetchval("SELECT next_run_at FROM schedules")
    now = await pool.fetchval("SELECT now()")
    assert timedelta(0) < next_run - now <= timedelta(minutes=5)
    assert next_run.minute % 5 == 0 and next_run.second == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**SEED_BODY, "cron": "61 * * * *"}, "not a valid cron expression"),
        ({**SEED_BODY, "cron": "* * *"}, "must have 5 fields"),
        ({**SEED_BODY, "cron": "0 0 31 11 *"}, "never fires"),
        ({**SEED_BODY, "timezone": "Mars/Olympus"}, "not a known IANA time zone"),
        ({**SEED_BODY, "timezone": "America"}, "not a known IANA time zone"),
        ({**SEED_BODY, "type": 5}, "'type' must be a non-empty string"),
        ({**SEED_BODY, "every": "day"}, "unknown field(s): every"),
        ({"type": "demo.sleep"}, "'cron' is required"),
        ({**SEED_BODY, "queue": "a b"}, "'queue'"),
        ({**SEED_BODY, "enabled": "yes"}, "'enabled' must be true or false"),
    ],
)
async def test_a_bad_schedule_is_a_422_saying_what_is_wrong(pool, body, message):
    async with api_client(pool, Settings()) as client:
        response = await client.post("/schedules", json=body)
    assert response.status_code == 422 and message in response.json()["error"]
    assert await pool.fetchval("SELECT count(*) FROM schedules") == 0


async def test_a_schedule_of_a_long_type_gets_a_name_within_the_limit(pool):
    job_type = "t" * 128
    async with api_client(pool, Settings()) as client:
        response = await client.post("/schedules", json={**SEED_BODY, "type": job_type})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["type"] == job_type and len(body["name"]) == 128
    assert body["name"].startswith("t" * 119 + "-")


async def test_patch_disables_and_retimes_and_delete_removes(pool):
    async with api_client(pool, Settings()) as client:
        sid = (await client.post("/schedules", json={**SEED_BODY, "name": "five"})).json()["id"]
        disabled = await client.patch(f"/schedules/{sid}", json={"enabled": False})
        assert disabled.status_code == 200 and disabled.json()["enabled"] is False
        retimed = await client.patch(f"/schedules/{sid}", json={"cron": "0 3 * * *"})
        assert retimed.json()["next_run_at"].endswith("03:00:00+00:00")
        bad = await client.patch(f"/schedules/{sid}", json={"timezone": "Nowhere/Land"})
        assert bad.status_code == 422
        taken = await client.post("/schedules", json={**SEED_BODY, "name": "five"})
        assert taken.status_code == 409
        assert (await client.delete(f"/schedules/{sid}")).status_code == 204
        assert (await client.get(f"/schedules/{sid}")).status_code == 404
        assert (await client.delete(f"/schedules/{sid}")).status_code == 404
        assert (await client.get("/schedules/nope")).status_code == 400


# --- the scheduler ---------------------------------------------------------------------------


async def test_two_schedulers_enqueue_each_tick_exactly_once(pool, db_url):
    schedule = await schedules.create(
        pool, {"name": "every-second", "type": "demo.echo", "cron": "* * * * * *"}
    )
    async with RunningScheduler(pool, db_url), RunningScheduler(pool, db_url):
        await asyncio.sleep(4.5)
    stopped = await pool.fetchval("SELECT now()")
    jobs = await _scheduled_jobs(pool)
    # about one a second; no more than the seconds from the schedule's creation to the
    # stop (ticks missed while the schedulers started run late, each once)
    assert 3 <= len(jobs) <= (stopped - schedule.created_at).total_seconds() + 1
    assert len({row["key"] for row in jobs}) == len(jobs)
    assert all(row["key"].split(":")[2] == str(schedule.id) for row in jobs)
    # each key ends with its tick: consecutive seconds, none lost, none twice
    ticks = sorted(
        int(datetime.fromisoformat(row["key"].split(":", 3)[3]).timestamp()) for row in jobs
    )
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))


async def test_after_downtime_one_catch_up_run_then_on_the_clock(pool, db_url):
    # daily: no tick on the clock falls in the test (one a minute would, now and then)
    caught = await schedules.create(pool, {"name": "c", "type": "demo.echo", "cron": "0 3 * * *"})
    skipped = await schedules.create(
        pool, {"name": "s", "type": "demo.echo", "cron": "0 3 * * *", "catch_up": False}
    )
    await pool.execute("UPDATE schedules SET next_run_at = now() - interval '3 days'")
    async with RunningScheduler(pool, db_url) as scheduler:
        await wait_for(lambda: scheduler.enqueued >= 1)
        await asyncio.sleep(0.3)
    jobs = await _scheduled_jobs(pool)
    assert [row["key"].split(":")[2] for row in jobs] == [str(caught.id)]
    now = await pool.fetchval("SELECT now()")
    for row in await pool.fetch("SELECT next_run_at FROM schedules"):
        assert timedelta(0) < row["next_run_at"] - now <= timedelta(days=1)
    assert skipped.catch_up is False


async def test_a_disabled_schedule_enqueues_nothing(pool, db_url):
    await schedules.create(
        pool, {"name": "off", "type": "demo.echo", "cron": "* * * * * *", "enabled": False}
    )
    async with RunningScheduler(pool, db_url):
        await asyncio.sleep(1.5)
    assert await _scheduled_jobs(pool) == []


async def test_a_new_schedule_wakes_a_sleeping_scheduler(pool, db_url):
    # With no schedule the scheduler sleeps up to a minute; the notification of a new
    # one wakes it, so a per-second schedule's first job comes within a couple of ticks.
    async with RunningScheduler(pool, db_url) as scheduler:
        await asyncio.sleep(0.3)
        await schedules.create(pool, {"name": "wake", "type": "demo.echo", "cron": "* * * * * *"})
        await wait_for(lambda: scheduler.enqueued >= 1, timeout=10)


async def test_schedules_declared_in_code_are_synced_never_duplicated(pool, db_url):
    registry = Registry()
    registry.schedule("nightly", "0 3 * * *", "demo.echo", {"n": 1}, timezone="Europe/Berlin")
    async with RunningScheduler(pool, db_url, registry):
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 1 FROM schedules"))
    changed = Registry()
    changed.schedule("nightly", "0 4 * * *", "demo.echo", {"n": 2}, timezone="Europe/Berlin")
    await schedules.sync_code_schedules(pool, changed.schedules)
    await schedules.sync_code_schedules(pool, changed.schedules)
    rows = await pool.fetch("SELECT name, cron, payload, source FROM schedules")
    assert [(r["name"], r["cron"], r["payload"], r["source"]) for r in rows] == [
        ("nightly", "0 4 * * *", {"n": 2}, "code")
    ]


def test_a_bad_schedule_in_code_fails_at_declaration():
    with pytest.raises(ValidationError, match="not a valid cron expression"):
        Registry().schedule("typo", "0 25 * * *", "demo.echo")


async def test_store_reports_when_the_next_schedule_is_due(pool):
    assert await store.seconds_until_next_schedule(pool) is None
    await schedules.create(pool, {"type": "demo.echo", "cron": "0 0 1 1 *"})
    assert await store.seconds_until_next_schedule(pool) > 0
