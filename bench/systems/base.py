"""The interface every queue adapter implements."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import asyncpg

BENCH_ROOT = Path(__file__).resolve().parents[2]  # the directory holding bench/


def worker_env(record_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env["BENCH_RECORD_DIR"] = record_dir
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(BENCH_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class System:
    """A queue system (and one of its settings variants) under test."""

    system: str = ""  # aqueue | aqueue-base | pgqueuer | procrastinate | sql
    variant: str = "default"  # default | tuned | another way to drive it
    queue: bool = True  # False for the plain-SQL ceiling
    # the only scenarios this variant runs (None: every one of its family's, tuned ones
    # where the scenario runs tuned variants)
    scenarios: frozenset[str] | None = None

    @property
    def label(self) -> str:
        return self.system if self.variant == "default" else f"{self.system}:{self.variant}"

    @property
    def schema(self) -> str:
        """Names the schema its databases are made with: one template database each."""
        return self.system

    @property
    def family(self) -> str:
        """The system whose scenarios this one runs (an earlier aqueue runs aqueue's)."""
        return self.system

    # --- settings --------------------------------------------------------------------------

    def worker_settings(self, concurrency: int) -> dict[str, Any]:
        """The settings a worker process runs with, as written into the results."""
        raise NotImplementedError

    def settings_for(self, scenario: str, concurrency: int) -> dict[str, Any]:
        """The settings it runs a scenario with, as written into the results."""
        return self.worker_settings(concurrency)

    def honours_concurrency(self) -> bool:
        """False when the variant's settings fix the concurrency (the tuned peers)."""
        return True

    # --- schema and producer ---------------------------------------------------------------

    async def install(self, url: str) -> None:
        raise NotImplementedError

    async def open(self, url: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def enqueue_one(self, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    async def enqueue_many(self, payloads: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def producer_settings(self, kind: str, batch: int) -> dict[str, Any]:
        """What its enqueue loops call, as written into the results."""
        if kind == "enqueue_single":
            return {"api": "one call per job, sequential"}
        return {"api": f"batch enqueue, {batch} jobs per call"}

    async def produce(self, kind: str, **params: Any) -> dict[str, Any]:
        """Run one of bench.producers' loops on the open producer. In this process by
        default; a system whose code is not the bench process's runs it where its code is."""
        from bench.producers import PRODUCERS

        return await PRODUCERS[kind](self, **params)

    def cleanup(self) -> None:
        """Last resort at the end of a run (also on Ctrl-C): end what the system started."""

    # --- workers ---------------------------------------------------------------------------

    def worker_command(self, url: str, concurrency: int) -> list[str]:
        raise NotImplementedError

    def process_env(self, record_dir: str) -> dict[str, str]:
        """The environment of its worker (and API) processes."""
        return worker_env(record_dir)

    def verify_code(
        self, reports: list[dict[str, Any]], processes: int
    ) -> tuple[list[str], dict[str, Any] | None]:
        """Errors when the code that ran is not the code this system stands for, and the
        evidence for the results. ``reports``: what its ``processes`` worker/API processes
        said they loaded. Nothing to check by default: the installed library runs."""
        return [], None

    # --- what the database says ------------------------------------------------------------

    async def completed(self, conn: asyncpg.Connection) -> int:
        """Jobs the database shows as completed (polled to know when a drain is over)."""
        raise NotImplementedError

    async def stored(self, conn: asyncpg.Connection) -> int:
        """Jobs the database holds (after an enqueue-only scenario)."""
        raise NotImplementedError

    async def verify(self, conn: asyncpg.Connection) -> dict[str, Any]:
        """Database-side check after a drain: ``completed`` (count), ``completed_once``
        (completed on their first attempt), ``not_completed`` (still queued/running),
        ``first_claim`` / ``last_completion`` (epoch seconds)."""
        raise NotImplementedError


async def verify_jobs(conn: asyncpg.Connection, table: str, since: Any = None) -> dict[str, Any]:
    """The exactly-once check over a table with aqueue's job columns (status, attempts,
    started_at, finished_at): aqueue's own, and the SQL ceiling's, which mirrors them.
    `since`: only the jobs from that id on."""
    where, args = ("WHERE id >= $1", (since,)) if since is not None else ("", ())
    row = await conn.fetchrow(
        f"""SELECT count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
                   count(*) FILTER (WHERE status = 'COMPLETED' AND attempts = 1) AS once,
                   count(*) FILTER (WHERE status <> 'COMPLETED') AS not_completed,
                   extract(epoch FROM min(started_at)) AS first_claim,
                   extract(epoch FROM max(finished_at)) AS last_completion
            FROM {table} {where}""",
        *args,
    )
    return {
        "completed": row["completed"],
        "completed_once": row["once"],
        "not_completed": row["not_completed"],
        "first_claim": float(row["first_claim"] or 0),
        "last_completion": float(row["last_completion"] or 0),
    }


def python_module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
