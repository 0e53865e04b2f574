"""The completer: handlers hand it their outcomes; it writes them in batches, one
lease-fenced statement per batch, so throughput is not bound by one commit per job.

Batching is group commit, not a timer: while one batch is being written, new outcomes
gather, and the next write takes them all. An idle worker writes a lone outcome at once;
a busy one writes hundreds per statement."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence

import asyncpg

from aqueue import store
from aqueue.db import HeldConnection, is_connection_error, retry_delay
from aqueue.store import Outcome

log = logging.getLogger("aqueue.completer")


class Completer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        worker_id: str,
        max_batch: int,
        on_written: Callable[[Sequence[Outcome], set[uuid.UUID]], None],
    ) -> None:
        self._worker_id = worker_id
        self._max_batch = max_batch
        self._on_written = on_written
        self._pending: list[Outcome] = []
        self._has_work = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        self._held = HeldConnection(pool)

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def add(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        self._drained.clear()
        self._has_work.set()

    async def wait_drained(self) -> None:
        await self._drained.wait()

    async def run(self) -> None:
        """Write outcomes until close() was called and nothing is left."""
        try:
            await self._write_until_closed()
        finally:
            await self._held.release()

    async def _write_until_closed(self) -> None:
        while True:
            if not self._pending:
                self._drained.set()
                if self._closing:
                    return
                self._has_work.clear()
                await self._has_work.wait()
                continue
            batch = self._pending[: self._max_batch]
            del self._pending[: len(batch)]
            accepted = await self._write(batch)
            self._on_written(batch, accepted)

    def close(self) -> None:
        """Finish what is pending, then let run() return."""
        self._closing = True
        self._has_work.set()

    async def _write(self, batch: Sequence[Outcome]) -> set[uuid.UUID]:
        # A write that failed for want of a connection is retried: the outcomes stay fenced
        # by their leases, so one that lands after the reaper reclaimed its job is rejected.
        failures = 0
        while True:
            try:
                conn = await self._held.get()
                return await store.record_outcomes(conn, batch, self._worker_id)
            except Exception as exc:
                if not is_connection_error(exc):
                    return await self._write_one_by_one(batch, exc)
                await self._held.release()
                failures += 1
                delay = retry_delay(failures)
                log.warning(
                    "writing %d outcomes failed (%s); retrying in %.2fs", len(batch), exc, delay
                )
                await asyncio.sleep(delay)

    async def _write_one_by_one(self, batch: Sequence[Outcome], cause: Exception) -> set[uuid.UUID]:
        """A statement error rejects the whole batch: isolate the outcome that causes it.
        One that cannot be written is dropped; its lease expires and the reaper hands the
        job out again, so the job is delayed, never lost."""
        if len(batch) == 1:
            log.error("cannot record the outcome of job %s: %s", batch[0].job_id, cause)
            return set()
        accepted: set[uuid.UUID] = set()
        for outcome in batch:
            accepted |= await self._write([outcome])
        return accepted
