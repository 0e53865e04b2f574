"""aqueue through its public API: aqueue.enqueue / aqueue.enqueue_many on a pool from
aqueue.db.create_pool, and `aqueue serve --roles=worker` processes."""

from __future__ import annotations

import shutil
import sys
from typing import Any

import asyncpg

from bench.systems.base import System, verify_jobs

TASK = "bench.noop"


def aqueue_command() -> list[str]:
    exe = shutil.which("aqueue")
    if exe is None:
        # the console script next to this interpreter (a venv not on PATH)
        candidate = shutil.which("aqueue", path=str(sys.executable).rsplit("/", 1)[0])
        exe = candidate
    if exe is not None:
        return [exe]
    return [sys.executable, "-c", "import sys; from aqueue.cli import main; sys.exit(main())"]


async def has_history(conn: asyncpg.Connection) -> bool:
    """Whether this aqueue keeps finished jobs apart (jobs_history, migration 005); a
    --baseline revision may predate it."""
    return bool(await conn.fetchval("SELECT to_regclass('jobs_history') IS NOT NULL"))


async def all_jobs(conn: asyncpg.Connection) -> str:
    """Every job of either schema: finished jobs live in jobs_history (the view all_jobs
    reads both) since migration 005, in jobs before it."""
    return "all_jobs" if await has_history(conn) else "jobs"


class AqueueSystem(System):
    system = "aqueue"
    variant = "default"

    def __init__(self) -> None:
        self._pool: asyncpg.Pool | None = None

    def worker_settings(self, concurrency: int) -> dict[str, Any]:
        return {"concurrency": concurrency, "queues": "default"}

    def cli(self) -> list[str]:
        """The `aqueue` command its worker and API processes run."""
        return aqueue_command()

    async def install(self, url: str) -> None:
        import aqueue.db

        await aqueue.db.migrate_url(url)

    async def open(self, url: str) -> None:
        import aqueue.db

        self._pool = await aqueue.db.create_pool(url)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def enqueue_one(self, payload: dict[str, Any]) -> None:
        import aqueue

        await aqueue.enqueue(self._pool, TASK, payload)

    async def enqueue_many(self, payloads: list[dict[str, Any]]) -> None:
        import aqueue

        await aqueue.enqueue_many(
            self._pool, [aqueue.JobSpec(type=TASK, payload=p) for p in payloads]
        )

    def worker_command(self, url: str, concurrency: int) -> list[str]:
        return [
            *self.cli(),
            "serve",
            "--roles=worker",
            "--database-url",
            url,
            "--concurrency",
            str(concurrency),
            "--app",
            "bench.tasks:registry",
            "--queues",
            "default",
        ]

    def api_command(self, url: str, port: int) -> list[str]:
        return [
            *self.cli(),
            "serve",
            "--roles=api",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database-url",
            url,
        ]

    async def completed(self, conn: asyncpg.Connection) -> int:
        jobs = await all_jobs(conn)
        return await conn.fetchval(f"SELECT count(*) FROM {jobs} WHERE status = 'COMPLETED'")

    async def stored(self, conn: asyncpg.Connection) -> int:
        return await conn.fetchval(f"SELECT count(*) FROM {await all_jobs(conn)}")

    async def verify(self, conn: asyncpg.Connection) -> dict[str, Any]:
        return await verify_jobs(conn, await all_jobs(conn))


class AqueueConnectionSystem(AqueueSystem):
    """aqueue.enqueue on one connection taken from aqueue's pool (as inside a caller's own
    transaction): the like of the SQL ceiling's one connection, without the pool's acquire
    and release around every call."""

    variant = "connection"
    scenarios = frozenset({"enqueue_single"})

    def __init__(self) -> None:
        super().__init__()
        self._conn: Any = None

    async def open(self, url: str) -> None:
        await super().open(url)
        assert self._pool is not None
        self._conn = await self._pool.acquire()

    async def close(self) -> None:
        if self._conn is not None and self._pool is not None:
            await self._pool.release(self._conn)
            self._conn = None
        await super().close()

    def producer_settings(self, kind: str, batch: int) -> dict[str, Any]:
        return {"api": "one call per job, sequential, on one connection from the pool"}

    async def enqueue_one(self, payload: dict[str, Any]) -> None:
        import aqueue

        await aqueue.enqueue(self._conn, TASK, payload)
