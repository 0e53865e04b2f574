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
from dataclasses import dataclass, field

import asyncpg

from aqueue import store
from aqueue.db import HeldConnection, is_connection_error, retry_delay
from aqueue.store import Outcome

log = logging.getLogger("aqueue.completer")


@dataclass
class Written:
    """What became of a batch: outcomes the database accepted, and outcomes it refused
    with an error. The rest lost their lease (fenced out by the token)."""

    accepted: set[uuid.UUID] = field(default_factory=set)
    failed: set[uuid.UUID] = field(default_factory=set)


class Completer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        worker_id: str,
        max_batch: int,
        on_written: Callable[[Sequence[Outcome], Written], None],
    ) -> None:
        self._worker_id = worker_id
        self._max_batch = max_batch
        self._on_written = on_written
        self._pending: list[Outcome] = []
        self._has_work = asyncio.Event()
        self._closing = False
        self._held = HeldConnection(pool)

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def add(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        self._has_work.set()

    async def run(self) -> None:
        """Write outcomes until close() was called and nothing is left."""
        try:
            await self._write_until_closed()
        finally:
            await self._held.release()

    async def _write_until_closed(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._has_work.clear()
                await self._has_work.wait()
                continue
            batch = self._pending[: self._max_batch]
            del self._pending[: len(batch)]
            self._on_written(batch, await self._write(batch))

    def close(self) -> None:
        """Finish what is pending, then let run() return."""
        self._closing = True
        self._has_work.set()

    async def _write(self, batch: Sequence[Outcome]) -> Written:
        # A write that failed for want of a connection is retried: the outcomes stay fenced
        # by their leases, so one that lands after the reaper reclaimed its job is rejected.
        failures = 0
        while True:
            try:
                conn = await self._held.get()
                return Written(await store.record_outcomes(conn, batch, self._worker_id))
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

    async def _write_one_by_one(self, batch: Sequence[Outcome], cause: Exception) -> Written:
        """A statement error rejects the whole batch: isolate the outcome that causes it.
        One that cannot be written is dropped; its lease expires and the reaper hands the
        job out again, so the job is delayed, never lost."""
        if len(batch) == 1:
            log.error(
                "cannot record the outcome of job %s (it runs again once its lease expires): %s",
                batch[0].job_id,
                cause,
            )
            return Written(failed={batch[0].job_id})
        written = Written()
        for outcome in batch:
            one = await self._write([outcome])
            written.accepted |= one.accepted
            written.failed |= one.failed
        return written
