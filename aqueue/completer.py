"""The completer: handlers hand it their outcomes; it writes them in batches, one
lease-fenced statement per batch, so throughput is not bound by one commit per job.

Batching is group commit, not a timer: while one batch is being written, new outcomes
gather, and the next write takes them all. An idle worker writes a lone outcome at once;
a busy one writes hundreds per statement. It writes on a connection of its own (see
db.OwnConnection), so handlers holding every pooled connection cannot hold it up."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from aqueue import store
from aqueue.db import Outage, OwnConnection, is_connection_error
from aqueue.metrics import Metrics
from aqueue.model import JobStatus
from aqueue.store import Outcome

log = logging.getLogger("aqueue.completer")

# A deadlock or serialization failure aborts the whole statement; it is retried as a whole
# (never row by row) after this pause.
CONFLICT_RETRY_SECONDS = 0.01


@dataclass
class Written:
    """What became of a batch, by lease token: outcomes the database accepted, and
    outcomes it refused with an error. The rest lost their lease (fenced out by the token)."""

    accepted: set[uuid.UUID] = field(default_factory=set)
    failed: set[uuid.UUID] = field(default_factory=set)


class Completer:
    def __init__(
        self,
        url: str,
        worker_id: str,
        max_batch: int,
        lease_seconds: float,
        on_written: Callable[[Sequence[Outcome], Written], None],
        substitute: Callable[[Outcome, Exception], Outcome],
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._worker_id = worker_id
        self._max_batch = max_batch
        self._lease_seconds = lease_seconds
        self._on_written = on_written
        self._substitute = substitute
        self._pending: list[Outcome] = []
        self._writing: Sequence[Outcome] = ()
        self._has_work = asyncio.Event()
        self._closing = False
        # A statement that outlives a lease is moot (the lease fence refuses it anyway).
        self._conn = OwnConnection(url, timeout=lease_seconds)
        self._outage = Outage(log, "writing outcomes")
        # True while writes fail for want of the database: the claim loops hold off, so
        # that when it is back the outcomes (and forgotten claims) land before new claims.
        self.failing = False

    @property
    def backlog(self) -> int:
        return len(self._pending)

    @property
    def unwritten(self) -> int:
        """Outcomes handed over and not yet written (pending or in the statement now)."""
        return len(self._pending) + len(self._writing)

    def add(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        self._has_work.set()

    async def run(self) -> None:
        """Write outcomes until close() was called and nothing is left. Cancelling it
        abandons what is unwritten: those jobs' leases expire and the reaper hands them
        out again, so nothing is lost."""
        try:
            await self._connect()
            await self._write_until_closed()
        except asyncio.CancelledError:
            self._conn.discard()
            raise
        await self._conn.close()

    async def _connect(self) -> None:
        """Open the connection before the first outcome arrives, so that outcome does not
        wait for it; a failure here is retried by the first write."""
        try:
            await self._conn.get()
        except Exception as exc:
            if not is_connection_error(exc):
                raise

    async def _write_until_closed(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._has_work.clear()
                await self._has_work.wait()
                continue
            batch = self._writing = self._pending[: self._max_batch]
            del self._pending[: len(batch)]
            written = await self._write(batch)
            self._writing = ()
            self._on_written(batch, written)

    def close(self) -> None:
        """Finish what is pending, then let run() return."""
        self._closing = True
        self._has_work.set()

    async def _write(self, batch: Sequence[Outcome]) -> Written:
        # A write that failed for want of a connection is retried: the outcomes stay fenced
        # by their leases, so one that lands after the reaper reclaimed its job is refused.
        while True:
            try:
                conn = await self._conn.get()
                written = Written(await self._record(conn, batch))
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                await asyncio.sleep(CONFLICT_RETRY_SECONDS)
                continue
            except Exception as exc:
                if not is_connection_error(exc):
                    # the database answered: not an outage, whatever the batch's fate (the
                    # claim loops wait while `failing`; nothing else would clear it)
                    self.failing = False
                    return await self._write_one_by_one(batch, exc)
                self._conn.discard()
                self.failing = True
                await asyncio.sleep(self._outage.failed(exc))
                continue
            self._outage.ended()
            self.failing = False
            return written

    async def _record(self, conn: asyncpg.Connection, batch: Sequence[Outcome]) -> set[uuid.UUID]:
        started = time.perf_counter()
        accepted = await self._record_batch(conn, batch)
        if self._metrics is not None:
            # the outcomes as written: a substitute (see _write_one_by_one) as itself
            self._metrics.outcomes_written(batch, accepted, time.perf_counter() - started)
        return accepted

    async def _record_batch(
        self, conn: asyncpg.Connection, batch: Sequence[Outcome]
    ) -> set[uuid.UUID]:
        accepted = await store.record_outcomes(conn, batch, self._worker_id)
        if len(accepted) < len(batch):
            # Refused: jobs others depend on (written with their consequences here), lost
            # leases, or claims PostgreSQL forgot in a crash (written back).
            refused = [o for o in batch if o.job.lease_token not in accepted]
            accepted |= await store.finish_with_consequences(conn, refused, self._worker_id)
        if len(accepted) < len(batch):
            accepted |= await self._restore_forgotten(conn, batch, accepted)
        await self._wake_for_retries(conn, batch, accepted)
        return accepted

    async def _restore_forgotten(
        self, conn: asyncpg.Connection, batch: Sequence[Outcome], accepted: set[uuid.UUID]
    ) -> set[uuid.UUID]:
        """Outcomes refused: their lease was reclaimed, or PostgreSQL forgot the claim in a
        crash. The latter are written back here, so the attempt counts."""
        refused = [o for o in batch if o.job.lease_token not in accepted]
        restored = await store.restore_forgotten(
            conn, refused, self._worker_id, self._lease_seconds
        )
        for outcome in refused:
            if outcome.job.lease_token in restored:
                log.warning(
                    "job %s: PostgreSQL had forgotten this worker's claim (did it crash?);"
                    " attempt %d written back as %s",
                    outcome.job.id,
                    outcome.job.attempt,
                    outcome.status,
                )
        return restored

    async def _wake_for_retries(
        self, conn: asyncpg.Connection, batch: Sequence[Outcome], accepted: set[uuid.UUID]
    ) -> None:
        """A retry wakes the workers of its queue, so that an idle one sets its timer for
        the retry's due time instead of finding it at the safety-net poll. A statement of
        its own, run only then (inside the outcome statement it cost every batch); if it
        fails, the outcomes stand and the workers find the retry at their poll."""
        retry = JobStatus.RETRY
        queues = {o.job.queue for o in batch if o.status is retry and o.job.lease_token in accepted}
        if not queues:
            return
        try:
            await store.notify_queues(conn, queues)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            self._conn.discard()
            log.warning("could not wake the workers of %s for a retry: %s", sorted(queues), exc)

    async def _write_one_by_one(self, batch: Sequence[Outcome], cause: Exception) -> Written:
        """A statement error rejects the whole batch: isolate the outcome that causes it,
        and record that one as a failed attempt with the reason instead (its job retries
        after the backoff, or is DEAD), so that the job neither waits for its lease to
        expire nor repeats its effects without a backoff."""
        if len(batch) == 1:
            outcome = batch[0]
            substitute = self._substitute(outcome, cause)
            log.error(
                "cannot record the outcome %s of job %s (%s); recording %s instead",
                outcome.status,
                outcome.job_id,
                cause,
                substitute.status,
            )
            try:
                conn = await self._conn.get()
                return Written(await self._record(conn, [substitute]))
            except Exception as exc:
                if is_connection_error(exc):
                    self._conn.discard()
                    return await self._write([substitute])
                log.error(
                    "cannot record job %s's failure either (%s); it runs again once its "
                    "lease expires",
                    outcome.job_id,
                    exc,
                )
                return Written(failed={outcome.lease_token})
        written = Written()
        for outcome in batch:
            one = await self._write([outcome])
            written.accepted |= one.accepted
            written.failed |= one.failed
        return written
