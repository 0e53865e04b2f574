"""pgqueuer through its public API: Queries.enqueue (one, or lists for a batch) and
PgQueuer(...).run(batch_size=..., max_concurrent_tasks=...) in a worker process."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from bench.systems.base import System, python_module_command

ENTRYPOINT = "bench.noop"

# pgqueuer 1.6 QueueManager.run defaults: batch_size=10, max_concurrent_tasks=None
# (unlimited), dequeue_timeout=30s, heartbeat_timeout=30s. It requires
# max_concurrent_tasks >= 2 * batch_size.
DEFAULT_BATCH_SIZE = 10
TUNED = {"batch_size": 100, "max_concurrent_tasks": 200}


class PgqueuerSystem(System):
    system = "pgqueuer"

    def __init__(self, variant: str = "default") -> None:
        self.variant = variant
        self._pool: asyncpg.Pool | None = None
        self._queries: Any = None

    def honours_concurrency(self) -> bool:
        return self.variant == "default"

    def worker_settings(self, concurrency: int) -> dict[str, Any]:
        if self.variant == "tuned":
            return dict(TUNED)
        # Library defaults, with the scenario's concurrency as the cap on in-flight jobs
        # (the batch shrinks only where the library requires it: cap >= 2 * batch).
        return {
            "batch_size": min(DEFAULT_BATCH_SIZE, max(1, concurrency // 2)),
            "max_concurrent_tasks": concurrency,
        }

    async def install(self, url: str) -> None:
        from pgqueuer import Queries

        conn = await asyncpg.connect(url)
        try:
            await Queries.from_asyncpg_connection(conn).install()
        finally:
            await conn.close()

    async def open(self, url: str) -> None:
        from pgqueuer import Queries

        self._pool = await asyncpg.create_pool(url, min_size=2, max_size=10)
        self._queries = Queries.from_asyncpg_pool(self._pool)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def enqueue_one(self, payload: dict[str, Any]) -> None:
        await self._queries.enqueue(ENTRYPOINT, json.dumps(payload).encode())

    async def enqueue_many(self, payloads: list[dict[str, Any]]) -> None:
        n = len(payloads)
        await self._queries.enqueue(
            [ENTRYPOINT] * n, [json.dumps(p).encode() for p in payloads], [0] * n
        )

    def worker_command(self, url: str, concurrency: int) -> list[str]:
        settings = json.dumps(self.worker_settings(concurrency))
        return python_module_command(
            "bench.peer_worker", "pgqueuer", "--database-url", url, "--settings", settings
        )

    async def completed(self, conn: asyncpg.Connection) -> int:
        return await conn.fetchval("SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'")

    async def stored(self, conn: asyncpg.Connection) -> int:
        return await conn.fetchval("SELECT count(*) FROM pgqueuer")

    async def verify(self, conn: asyncpg.Connection) -> dict[str, Any]:
        # pgqueuer deletes a finished job from its queue table and logs each transition
        # (queued, picked, successful) in pgqueuer_log.
        row = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE status = 'successful') AS completed,
                      count(DISTINCT job_id) FILTER (WHERE status = 'successful') AS distinct_ok,
                      count(*) FILTER (WHERE status = 'picked') AS picked,
                      extract(epoch FROM min(created) FILTER (WHERE status = 'picked'))
                          AS first_claim,
                      extract(epoch FROM max(created) FILTER (WHERE status = 'successful'))
                          AS last_completion
               FROM pgqueuer_log"""
        )
        remaining = await conn.fetchval("SELECT count(*) FROM pgqueuer")
        completed = row["completed"]
        # A job picked twice (a lost heartbeat) is logged as two picks.
        once = row["distinct_ok"] if row["picked"] == completed else 0
        return {
            "completed": completed,
            "completed_once": once,
            "not_completed": remaining,
            "first_claim": float(row["first_claim"] or 0),
            "last_completion": float(row["last_completion"] or 0),
        }
