"""Task registries the acceptance tests load into `aqueue serve --app tests.apps:...`."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

from aqueue import JobContext, Registry

registry = Registry()
log = logging.getLogger("tests.apps")


@registry.task("test.record")
async def record(payload: Any, ctx: JobContext) -> None:
    """Count every execution (outside the completion transaction: at-least-once shows
    here), and record the effect inside it, where a unique constraint would catch a
    second commit (exactly-once effects show there)."""
    await ctx.pool.execute("INSERT INTO executions (job_id) VALUES ($1)", ctx.job_id)
    if payload.get("sleep"):
        await asyncio.sleep(payload["sleep"])
    conn = await ctx.transaction()
    await conn.execute("INSERT INTO processed (job_id) VALUES ($1)", ctx.job_id)


@registry.task("test.nap")
async def nap(payload: Any, ctx: JobContext) -> None:
    """Sleep, then say so in the log (tests wait for that line)."""
    await asyncio.sleep(payload["seconds"])
    log.info("napped %s", ctx.job_id)


@registry.task("test.crash_database")
async def crash_database(payload: Any, ctx: JobContext) -> None:
    """A poison job: SIGKILL its own PostgreSQL backend, which makes the server drop every
    connection and run crash recovery, as a backend crash or an OOM kill does."""
    async with ctx.pool.acquire() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        log.info("crashing the database (attempt %d)", ctx.attempt)
        os.kill(pid, signal.SIGKILL)
        await conn.fetchval("SELECT 1")  # fails for sure: its backend is gone


@registry.task("test.fail_once")
async def fail_once(payload: Any, ctx: JobContext) -> str:
    """Fail the first time a job runs, succeed after (its marker row says it ran)."""
    first = await ctx.pool.fetchval(
        "INSERT INTO ran_once (job_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING true",
        ctx.job_id,
    )
    if first:
        raise RuntimeError("fails the first time")
    return "second time lucky"


@registry.task("test.span")
async def span(payload: Any, ctx: JobContext) -> None:
    """Record when this attempt ran, on the database's clock, in `spans` (the key caps'
    fleet test computes from them how many jobs of a key ran at once; `span_caps` says
    which keys reached their cap)."""
    await ctx.pool.execute(
        "INSERT INTO spans (job_id, key, started) VALUES ($1, $2, clock_timestamp())",
        ctx.job_id,
        payload["key"],
    )
    # Until `cap` jobs of its key have run at once (as the spans say), a job keeps its
    # slot, up to 10 s: the cap is then reached however slowly a loaded machine starts
    # jobs, and missed only if the claims cannot give the slots.
    for _ in range(500):
        reached = await ctx.pool.fetchval(
            "SELECT reached FROM span_caps WHERE key = $1", payload["key"]
        )
        if reached:
            break
        running = await ctx.pool.fetchval(
            "SELECT count(*) FROM spans WHERE key = $1 AND ended IS NULL", payload["key"]
        )
        if running >= payload["cap"]:
            await ctx.pool.execute(
                "INSERT INTO span_caps (key, reached) VALUES ($1, true) ON CONFLICT DO NOTHING",
                payload["key"],
            )
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(payload["seconds"])
    await ctx.pool.execute(
        "UPDATE spans SET ended = clock_timestamp() WHERE job_id = $1 AND ended IS NULL",
        ctx.job_id,
    )


# The dashboard's browser tests (tests/acceptance/test_dashboard.py): a task that runs until
# cancelled, one that always fails (enqueued with max_attempts 1, it goes DEAD at once; its
# error carries markup the page must show as text), a quick one, and a schedule.
dashboard = Registry()


@dashboard.task("dash.long")
async def dash_long(payload: Any, ctx: JobContext) -> None:
    await asyncio.sleep(payload.get("seconds", 600))


@dashboard.task("dash.fail")
async def dash_fail(payload: Any, ctx: JobContext) -> None:
    raise RuntimeError(payload.get("message", "dash.fail always fails"))


@dashboard.task("dash.quick")
async def dash_quick(payload: Any, ctx: JobContext) -> dict[str, Any]:
    return {"ok": True, "payload": payload}


dashboard.schedule(
    "dash-every-5s", "*/5 * * * * *", "dash.quick", {"from": "schedule"}, queue="cron"
)
