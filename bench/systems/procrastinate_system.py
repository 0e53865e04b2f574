"""procrastinate through its public API: task.defer_async / task.batch_defer_async and
App.run_worker_async(concurrency=...) in a worker process."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from bench.systems.base import System, python_module_command

# procrastinate 3.x worker defaults: concurrency=1, fetch_job_polling_interval=5s (LISTEN/
# NOTIFY wakes it first), listen_notify=True, delete_jobs="never"; the psycopg pool keeps
# psycopg_pool's default of 4 connections.
# Tuned: a sweep here (4,000-job drain, concurrency 5/10/20/50, pool 4/10/20 connections)
# found no setting clearly better: procrastinate fetches and finishes one job per round trip,
# so throughput sits near 450-550 jobs/s on this 2-core machine whatever the settings; the
# best of the sweep was concurrency 20 on the default pool.
TUNED_CONCURRENCY = 20
TUNED_POOL: dict[str, int] = {}


class ProcrastinateSystem(System):
    system = "procrastinate"

    def __init__(self, variant: str = "default") -> None:
        self.variant = variant
        self._app: Any = None
        self._task: Any = None

    def honours_concurrency(self) -> bool:
        return self.variant == "default"

    def worker_settings(self, concurrency: int) -> dict[str, Any]:
        if self.variant == "tuned":
            settings: dict[str, Any] = {"concurrency": TUNED_CONCURRENCY}
            if TUNED_POOL:
                settings["pool"] = dict(TUNED_POOL)
            return settings
        # Library defaults, with the scenario's concurrency (its default is 1).
        return {"concurrency": concurrency}

    async def install(self, url: str) -> None:
        from bench.systems.procrastinate_app import make_app

        app = make_app(url)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    async def open(self, url: str) -> None:
        from bench.systems.procrastinate_app import make_app

        self._app = make_app(url)
        await self._app.open_async()
        self._task = self._app.tasks["bench.noop"]

    async def close(self) -> None:
        if self._app is not None:
            await self._app.close_async()
            self._app = None

    async def enqueue_one(self, payload: dict[str, Any]) -> None:
        await self._task.defer_async(**payload)

    async def enqueue_many(self, payloads: list[dict[str, Any]]) -> None:
        await self._task.batch_defer_async(*payloads)

    def worker_command(self, url: str, concurrency: int) -> list[str]:
        settings = json.dumps(self.worker_settings(concurrency))
        return python_module_command(
            "bench.peer_worker", "procrastinate", "--database-url", url, "--settings", settings
        )

    async def completed(self, conn: asyncpg.Connection) -> int:
        return await conn.fetchval(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        )

    async def stored(self, conn: asyncpg.Connection) -> int:
        return await conn.fetchval("SELECT count(*) FROM procrastinate_jobs")

    async def verify(self, conn: asyncpg.Connection) -> dict[str, Any]:
        # A job that succeeds on its first try ends with attempts = 1 and one 'started' event.
        row = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE status = 'succeeded') AS completed,
                      count(*) FILTER (WHERE status = 'succeeded' AND attempts = 1) AS once,
                      count(*) FILTER (WHERE status NOT IN ('succeeded')) AS not_completed
               FROM procrastinate_jobs"""
        )
        ev = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE type = 'started') AS started,
                      extract(epoch FROM min(at) FILTER (WHERE type = 'started')) AS first_claim,
                      extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded'))
                          AS last_completion
               FROM procrastinate_events"""
        )
        once = row["once"] if ev["started"] == row["completed"] else 0
        return {
            "completed": row["completed"],
            "completed_once": once,
            "not_completed": row["not_completed"],
            "first_claim": float(ev["first_claim"] or 0),
            "last_completion": float(ev["last_completion"] or 0),
        }
