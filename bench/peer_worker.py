"""One worker process of a peer system, used through its public API:

    python -m bench.peer_worker pgqueuer|procrastinate|sql|sql-aqueue-claim \
        --database-url URL --settings JSON

SIGTERM stops it gracefully (each library's own shutdown path), then it exits 0."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from bench.recorder import record


async def run_pgqueuer(url: str, settings: dict[str, Any]) -> None:
    import asyncpg
    from pgqueuer import PgQueuer
    from pgqueuer.models import Job

    conn = await asyncpg.connect(url)
    pgq = PgQueuer.from_asyncpg_connection(conn)

    @pgq.entrypoint("bench.noop")
    async def noop(job: Job) -> None:
        record(json.loads(job.payload) if job.payload else {})

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, pgq.shutdown.set)
    try:
        await pgq.run(**settings)
    finally:
        await conn.close()


async def run_procrastinate(url: str, settings: dict[str, Any]) -> None:
    from bench.systems.procrastinate_app import make_app

    settings = dict(settings)
    pool = settings.pop("pool", None) or {}
    app = make_app(url, pool)
    # procrastinate installs its own SIGTERM/SIGINT handlers (install_signal_handlers=True
    # by default) and stops gracefully on them.
    async with app.open_async():
        await app.run_worker_async(**settings)


# The database's own pickup: a notification on one connection, then one bare claim (the
# drain ceiling's pick, as aqueue's first claim: no wait for its WAL flush) on another.
SQL_CLAIM = """\
UPDATE jobs SET status = 'RUNNING', attempts = attempts + 1, started_at = clock_timestamp()
WHERE id = ANY(ARRAY(SELECT id FROM jobs WHERE status = 'PENDING' AND queue = 'default'
                     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED))
RETURNING id, payload"""
SQL_COMPLETE = """\
UPDATE jobs SET status = 'COMPLETED', finished_at = clock_timestamp()
WHERE id = ANY($1::bigint[]) AND status = 'RUNNING'"""


async def run_sql(url: str, settings: dict[str, Any]) -> None:
    """Not a queue: LISTEN, and on each notification claim until nothing is left, recording
    each job as it is claimed (no task, no handler: what is left is the database's)."""
    import asyncpg

    conn = await asyncpg.connect(url, server_settings={"synchronous_commit": "off"})
    complete = await asyncpg.connect(url)

    async def claim() -> bool:
        rows = await conn.fetch(SQL_CLAIM, settings["batch"])
        for row in rows:
            record(json.loads(row["payload"]))
        if rows:
            await complete.execute(SQL_COMPLETE, [row["id"] for row in rows])
        return bool(rows)

    try:
        await _claim_when_notified(await asyncpg.connect(url), settings["channel"], claim)
    finally:
        for c in (conn, complete):
            await c.close()


async def run_sql_aqueue_claim(url: str, settings: dict[str, Any]) -> None:
    """run_sql with aqueue's statements on aqueue's schema: its claim on a connection set
    up as its claim loop's, its completion (record_outcomes); still no task, no handler."""
    from aqueue import db, store
    from aqueue.model import JobStatus
    from aqueue.notifier import Topic

    queue, batch = settings["queue"], settings["batch"]
    worker_id = f"bench-sql-{os.getpid()}"
    conn = await db.connect(url, server_settings=db.CLAIM_SERVER_SETTINGS)
    complete = await db.connect(url)

    async def claim() -> bool:
        jobs = await store.claim(conn, queue, batch, worker_id, 60.0)
        for job in jobs:
            record(job.payload)
        if jobs:
            outcomes = [store.Outcome(job, JobStatus.COMPLETED) for job in jobs]
            await store.record_outcomes(complete, outcomes, worker_id)
        return bool(jobs)

    try:
        await _claim_when_notified(await db.connect(url), Topic.JOBS.value, claim)
    finally:
        for c in (conn, complete):
            await c.close()


async def _claim_when_notified(
    listener: Any, channel: str, claim: Callable[[], Awaitable[bool]]
) -> None:
    """The plain-SQL floors' loop: on each notification on `channel` (or a second without
    one), `claim()` until it claims nothing; until SIGTERM or SIGINT. Closes `listener`."""
    wake = asyncio.Event()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await listener.add_listener(channel, lambda *_: wake.set())
    stopping = asyncio.ensure_future(stop.wait())
    wake.set()  # what was enqueued before the LISTEN; after it, notifications (or a poll)
    try:
        while not stop.is_set():
            woken = asyncio.ensure_future(wake.wait())
            await asyncio.wait({woken, stopping}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
            wake.clear()
            while await claim():
                pass
    finally:
        stopping.cancel()
        await listener.close()


RUNNERS = {
    "pgqueuer": run_pgqueuer,
    "procrastinate": run_procrastinate,
    "sql": run_sql,
    "sql-aqueue-claim": run_sql_aqueue_claim,
}
UVLOOP_SYSTEMS = frozenset({"pgqueuer", "sql", "sql-aqueue-claim"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("system", choices=sorted(RUNNERS))
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--settings", default="{}")
    args = parser.parse_args()
    settings = json.loads(args.settings)
    runner = RUNNERS[args.system]
    # Each on the event loop its own command line runs it on: pgqueuer's CLI takes uvloop
    # where installed (a dependency of it), procrastinate's runs asyncio's own; the plain
    # SQL pickup floors take uvloop as aqueue serve does, so that they stay the floor.
    if args.system in UVLOOP_SYSTEMS:
        import uvloop

        uvloop.run(runner(args.database_url, settings))
    else:
        asyncio.run(runner(args.database_url, settings))


if __name__ == "__main__":
    main()
