"""The worker role: for each of its queues, wake -> claim a batch sized to the free
slots -> run a handler per job; outcomes go to the completer; a heartbeat renews the
leases of every job still held. SQL stays in store.py.

A job's life in this process:
  1. claimed by `_claim_loop` (one statement for the batch), its lease held;
  2. run by `_run_job`: the handler's return value or exception becomes an Outcome;
  3. the Outcome is written by the completer (or, when the handler used the completion
     transaction, in that transaction), fenced by the lease token;
  4. its lease is let go when the outcome is written; at shutdown, unfinished jobs are
     released for other workers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import traceback
import uuid
from collections.abc import Sequence

import asyncpg

from aqueue import store
from aqueue.completer import Completer, Written
from aqueue.db import HeldConnection, is_connection_error, retry_delay
from aqueue.model import JobStatus, backoff_seconds
from aqueue.notifier import Notifier
from aqueue.registry import JobContext, Registry
from aqueue.settings import Settings
from aqueue.store import ClaimedJob, Outcome

log = logging.getLogger("aqueue.worker")

MAX_ERROR_CHARS = 8000
# How long to wait before claiming again when due jobs are all locked by other workers.
LOCKED_RETRY_SECONDS = 0.005
# How long a stopping claim loop may take to finish the statement it is in.
CLAIM_STOP_SECONDS = 5.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        notifier: Notifier,
        registry: Registry,
        settings: Settings,
        worker_id: str | None = None,
    ) -> None:
        self.pool = pool
        self.notifier = notifier
        self.registry = registry
        self.settings = settings
        self.id = worker_id or new_worker_id()
        self.completer = Completer(pool, self.id, settings.completer_max_batch, self._written)
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()
        # every job whose lease this worker holds: job id -> lease token
        self._held: dict[uuid.UUID, uuid.UUID] = {}
        # handlers still running: job id -> task
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._slot_freed = {queue: asyncio.Event() for queue in settings.queues}
        self._in_flight = dict.fromkeys(settings.queues, 0)

    def stop(self, now: bool = False) -> None:
        """Stop claiming; run() then lets in-flight jobs finish and returns. With now=True
        (a second signal) the grace period ends at once: running handlers are cancelled
        and their jobs released."""
        self._stopping.set()
        self.notifier.wake_all()  # an idle claim loop sleeps on its wake event
        self._wake_claimers()
        if now:
            self._hurry.set()

    async def run(self) -> None:
        """Work until stop() (or cancellation), then shut down gracefully: wait up to the
        grace period for in-flight jobs, cancel the rest, write every outcome, and release
        the jobs that did not finish."""
        log.info(
            "worker %s serving %s",
            self.id,
            ", ".join(f"{q} (x{n})" for q, n in self.settings.queues.items()),
        )
        completer = asyncio.create_task(self.completer.run(), name="aqueue-completer")
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="aqueue-heartbeat")
        claimers = [
            asyncio.create_task(self._claim_loop(q, n), name=f"aqueue-claim-{q}")
            for q, n in self.settings.queues.items()
        ]
        stop = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait([stop, *claimers], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop:
                    task.result()  # a claim loop only ends by raising
            # Let each claim loop see the stop between statements rather than cancel one
            # mid-claim: a claim cancelled in flight may commit with nobody holding its jobs.
            self.stop()
            await asyncio.wait(claimers, timeout=CLAIM_STOP_SECONDS)
        finally:
            self._stopping.set()
            for task in (stop, *claimers):
                task.cancel()
            await asyncio.gather(stop, *claimers, return_exceptions=True)
            await asyncio.shield(self._shutdown(completer, heartbeat))

    async def _shutdown(self, completer: asyncio.Task[None], heartbeat: asyncio.Task[None]) -> None:
        if self._running:
            log.info(
                "waiting up to %.0fs for %d running jobs",
                self.settings.shutdown_grace_seconds,
                len(self._running),
            )
            hurry = asyncio.create_task(self._hurry.wait())
            all_done = asyncio.create_task(asyncio.wait(list(self._running.values())))
            await asyncio.wait(
                [hurry, all_done],
                timeout=self.settings.shutdown_grace_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            all_done.cancel()  # cancels the waiting, not the jobs
            hurry.cancel()
            late = list(self._running.values())
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        self.completer.close()
        await completer
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        if self._held:
            released = await store.release_jobs(
                self.pool, list(self._held.items()), f"released by {self.id} at shutdown", self.id
            )
            log.info("released %d unfinished jobs", len(released))
            self._held.clear()

    # --- claiming -----------------------------------------------------------------------

    async def _claim_loop(self, queue: str, concurrency: int) -> None:
        held = HeldConnection(self.pool)
        try:
            await self._claim_until_stopped(queue, concurrency, held)
        finally:
            await held.release()

    async def _claim_until_stopped(
        self, queue: str, concurrency: int, held: HeldConnection
    ) -> None:
        wake = self.notifier.subscribe(queue)
        slot_freed = self._slot_freed[queue]
        settings = self.settings
        failures = 0
        while not self._stopping.is_set():
            free = concurrency - self._in_flight[queue]
            # Back-pressure: outcomes are written in batches, but never pile up unbounded.
            if free <= 0 or self.completer.backlog >= settings.completer_max_batch:
                slot_freed.clear()
                await slot_freed.wait()
                continue
            wake.clear()  # before the claim: a notification during it is not lost
            try:
                conn = await held.get()
                jobs = await store.claim(conn, queue, free, self.id, settings.lease_seconds)
                for job in jobs:
                    self._start(job)
                if jobs:
                    await asyncio.sleep(0)  # let the new handlers start before the next query
                if len(jobs) == free:
                    continue
                due_in = await store.seconds_until_next_job(conn, queue)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                # The database is away (restart, network): keep trying, a little slower
                # each time; the notifier wakes us as soon as it is listening again.
                await held.release()
                failures += 1
                delay = retry_delay(failures)
                log.warning("claiming from %r failed (%s); retrying in %.2fs", queue, exc, delay)
                await _wait(wake, delay)
                continue
            failures = 0
            # Nothing more is due: sleep until a notification, the next delayed job, the
            # safety-net poll or shutdown, whichever comes first.
            if due_in is None:
                timeout = settings.poll_seconds
            elif due_in > 0:
                timeout = min(due_in, settings.poll_seconds)
            else:
                # Due but not claimable: another worker's claim holds it for a moment.
                # Try again soon rather than spin on it.
                timeout = 0.0 if jobs else LOCKED_RETRY_SECONDS
            if timeout > 0:
                await _wait(wake, timeout)

    def _start(self, job: ClaimedJob) -> None:
        self._held[job.id] = job.lease_token
        self._in_flight[job.queue] += 1
        task = asyncio.create_task(self._run_job(job), name=f"aqueue-job-{job.id}")
        self._running[job.id] = task

    # --- running ------------------------------------------------------------------------

    async def _run_job(self, job: ClaimedJob) -> None:
        ctx = JobContext(self.pool, job.id, job.type, job.queue, job.attempt, job.max_attempts)
        try:
            outcome: Outcome | None = await self._call_handler(job, ctx)
            if ctx.connection is not None:
                outcome = await self._complete_in_transaction(job, ctx, outcome)
            if outcome is not None:
                self.completer.add(outcome)
        except Exception:
            # Only the completion transaction's commit gets here (the handler's own errors
            # are outcomes). Whether it committed is unknown: stop renewing the lease and
            # let the reaper decide, which leaves a COMPLETED job alone.
            log.exception("job %s: completing in its transaction failed", job.id)
            self._held.pop(job.id, None)
        finally:
            try:
                await ctx.close()
            finally:
                del self._running[job.id]
                self._in_flight[job.queue] -= 1
                self._slot_freed[job.queue].set()

    async def _call_handler(self, job: ClaimedJob, ctx: JobContext) -> Outcome:
        handler = self.registry.get(job.type)
        try:
            if handler is None:
                raise LookupError(
                    f"no handler for job type {job.type!r} on worker {self.id} "
                    f"(known: {', '.join(self.registry)}); start the worker with --app"
                )
            result = await handler(job.payload, ctx)
            if result is not None:
                json.dumps(result)  # a result that cannot be stored is the handler's failure
        except Exception as exc:
            return self._failure(job, exc)
        return Outcome(job.id, job.lease_token, JobStatus.COMPLETED, result=result)

    def _failure(self, job: ClaimedJob, exc: BaseException) -> Outcome:
        error = "".join(traceback.format_exception(exc))[-MAX_ERROR_CHARS:]
        if job.attempt >= job.max_attempts:
            return Outcome(job.id, job.lease_token, JobStatus.DEAD, error=error)
        delay = backoff_seconds(
            job.attempt, self.settings.backoff_base_seconds, self.settings.backoff_cap_seconds
        )
        return Outcome(job.id, job.lease_token, JobStatus.RETRY, error=error, retry_in=delay)

    async def _complete_in_transaction(
        self, job: ClaimedJob, ctx: JobContext, outcome: Outcome | None
    ) -> Outcome | None:
        """The handler wrote through the completion transaction: on success, the job's
        completion joins that transaction and both commit together, or neither does (the
        lease was lost). On failure the handler's writes are rolled back with it."""
        if outcome is None or outcome.status is not JobStatus.COMPLETED:
            return outcome  # ctx.close() rolls the handler's writes back
        conn = ctx.connection
        assert conn is not None
        accepted = await store.record_outcomes(conn, [outcome], self.id)
        if job.id not in accepted:
            log.warning("job %s: lease lost before completion; its writes are rolled back", job.id)
            self._held.pop(job.id, None)
            return None
        await ctx.commit()
        self._written([outcome], Written(accepted))
        return None

    def _written(self, outcomes: Sequence[Outcome], written: Written) -> None:
        for outcome in outcomes:
            self._held.pop(outcome.job_id, None)
            if outcome.job_id not in written.accepted and outcome.job_id not in written.failed:
                log.warning(
                    "job %s: outcome %s rejected, the lease had been reclaimed",
                    outcome.job_id,
                    outcome.status,
                )
        self._wake_claimers()

    def _wake_claimers(self) -> None:
        for event in self._slot_freed.values():
            event.set()

    # --- heartbeat ----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                await self._renew_leases()
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _renew_leases(self) -> None:
        leases = list(self._held.items())
        kept = await store.extend_leases(self.pool, leases, self.settings.lease_seconds)
        for job_id, _token in leases:
            task = self._running.get(job_id)
            if job_id not in kept and task is not None:
                # Reclaimed by the reaper (we were silent too long): another worker may be
                # running it now, and our outcome would be rejected. Stop the duplicate.
                log.warning("job %s: lease lost; cancelling its handler here", job_id)
                self._held.pop(job_id, None)
                task.cancel()


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Until the event is set or the timeout passes; no task is created, so a notification
    reaches the claim loop in one step of the event loop."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass
