"""The worker role: for each of its queues, wake -> claim a batch sized to the free
slots -> run a handler per job; outcomes go to the completer; a heartbeat renews the
leases of every job still held. SQL stays in store.py.

A job's life in this process (an Attempt, keyed by its lease token):
  1. claimed by `_claim_loop` (one statement for the batch), its lease held;
  2. run by `_run_job`: the handler's return value or exception becomes an Outcome;
  3. the Outcome is written by the completer (or, when the handler used the completion
     transaction, in that transaction), fenced by the lease token;
  4. its lease is let go when the outcome is written, when the heartbeat finds it lost
     (its handler is then cancelled), or at shutdown, when unfinished jobs are released
     for other workers.
The claim loops, the completer and the heartbeat each use a connection of their own
(db.OwnConnection), never the pool the handlers draw from.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import asyncpg

from aqueue import store
from aqueue.completer import Completer, Written
from aqueue.db import CLAIM_SERVER_SETTINGS, Outage, OwnConnection, connect, is_connection_error
from aqueue.metrics import Metrics
from aqueue.model import JobStatus, backoff_seconds, check_result, storable_text
from aqueue.notifier import Notifier, Topic
from aqueue.registry import JobContext, Registry, Task
from aqueue.settings import Settings
from aqueue.store import ClaimedJob, Outcome

log = logging.getLogger("aqueue.worker")

MAX_ERROR_CHARS = 8000
# How long to wait before claiming again when due jobs are all locked by other workers.
LOCKED_RETRY_SECONDS = 0.005
# How long a flow-controlled queue's claim loop sleeps when due jobs could not be claimed
# and its bucket is not the reason: every due job's key is at its cap (a freed slot
# NOTIFYs, so this is the fallback) or another claim holds them. Each try scans the
# blocked jobs, so not a spin.
FLOW_RETRY_SECONDS = 0.1
# How long a stopping claim loop may take to finish the statement it is in.
CLAIM_STOP_SECONDS = 5.0
# How long cancelled handlers get to unwind at shutdown before they are left behind.
CANCEL_SECONDS = 5.0
# After a second signal: how long the outcomes and releases still get to reach the
# database before they are left to their leases.
HURRY_SECONDS = 1.0
# At shutdown, after the grace period: how long unwritten outcomes may wait for a
# database that does not answer.
OUTCOME_SECONDS = 10.0
HEARTBEAT_TIMEOUT_FLOOR = 0.5
# A handler whose lease could not be renewed is stopped this share of the lease before
# the database's lease can run out (the reaper may hand the job out from then on): room
# for a busy event loop, so that the two runs never overlap.
LEASE_MARGIN = 0.1


@functools.cache
def aqueue_version() -> str:
    """The installed aqueue's version (read once: the registry row repeats it)."""
    try:
        return version("aqueue")
    except PackageNotFoundError:
        return "unknown"


@dataclass(eq=False, slots=True)
class Attempt:
    """One attempt of a job that this worker holds the lease of, from its claim until its
    outcome is written or the lease is let go."""

    job: ClaimedJob
    # event-loop time when the lease was last known renewed (sent: the database's expiry
    # is later still), so that a worker cut off from the database knows when it lost it
    renewed_at: float
    task: asyncio.Task[None] | None = None
    # set once the handler is done: its outcome is the completer's to write
    done: bool = False


class Worker:
    """The worker role: claims jobs of its queues, runs their handlers, writes outcomes."""

    name = "worker"

    def __init__(
        self,
        pool: asyncpg.Pool,
        url: str,
        notifier: Notifier,
        registry: Registry,
        settings: Settings,
        *,
        worker_id: str,
        metrics: Metrics | None = None,
    ) -> None:
        self.pool = pool
        self.url = url
        self.notifier = notifier
        self.registry = registry
        self.settings = settings
        self.id = worker_id
        # None: nothing is counted (an embedded worker or a test without metrics)
        self.metrics = metrics
        self.completer = Completer(
            url,
            self.id,
            settings.completer_max_batch,
            settings.lease_seconds,
            self._written,
            self._substitute,
            metrics=metrics,
        )
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()
        # every attempt whose lease this worker holds, by job id: one per job, for a second
        # claim of the same job (PostgreSQL forgot the first in a crash) supersedes the
        # first, whose run is then stopped; only the attempt whose lease token an outcome
        # carries is let go by that outcome
        self._held: dict[uuid.UUID, Attempt] = {}
        self._slot_freed = {queue: asyncio.Event() for queue in settings.queues}
        self._in_flight = dict.fromkeys(settings.queues, 0)
        # plain `def` handlers run here, so that blocking code never blocks the event loop
        # (and with it every other job's heartbeat); made on first use
        self._threads: ThreadPoolExecutor | None = None
        # lease token -> the thread of a blocking handler whose task ended before it did (a
        # timeout, a cancel at shutdown): a thread cannot be stopped
        self._outliving: dict[uuid.UUID, Future[object]] = {}
        notifier.on(Topic.CANCEL, self._cancel_notified)
        notifier.on(Topic.QUEUE, self._queue_changed)
        notifier.on_reconnect(self._forget_flows)
        self._flow_known: dict[str, bool] = {}

    @property
    def stop_seconds(self) -> float:
        """run() bounds its own shutdown (grace, then each step with a timeout); this is
        the margin past which the server cancels it anyway."""
        return (
            self.settings.shutdown_grace_seconds
            + CLAIM_STOP_SECONDS
            + CANCEL_SECONDS
            + OUTCOME_SECONDS
            + CLAIM_STOP_SECONDS  # the release
        )

    @property
    def in_flight(self) -> dict[str, int]:
        """Handlers running now, by queue."""
        return dict(self._in_flight)

    def stop(self, now: bool = False) -> None:
        """Stop claiming; run() then lets in-flight jobs finish and returns. With now=True
        (a second signal) the grace period ends at once: running handlers are cancelled,
        their jobs released, and the database gets only a moment more."""
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
            await self._until_hurried(claimers, CLAIM_STOP_SECONDS)
        finally:
            self._stopping.set()
            for task in (stop, *claimers):
                task.cancel()
            await asyncio.gather(stop, *claimers, return_exceptions=True)
            await asyncio.shield(self._shutdown(completer, heartbeat))
            if self._threads is not None:
                # A thread cannot be stopped: one still running keeps its job's outcome
                # to itself (it is discarded) and may delay the exit of the process.
                self._threads.shutdown(wait=False, cancel_futures=True)

    async def _until_hurried(self, tasks: Sequence[asyncio.Future[None]], timeout: float) -> None:
        """Wait for the tasks, at most `timeout` seconds, and not past a second signal."""
        if not tasks:
            return
        hurry = asyncio.ensure_future(self._hurry.wait())
        everything = asyncio.ensure_future(asyncio.wait(tasks))
        try:
            await asyncio.wait(
                [hurry, everything], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            hurry.cancel()
            everything.cancel()  # cancels the waiting, not the tasks

    async def _shutdown(self, completer: asyncio.Task[None], heartbeat: asyncio.Task[None]) -> None:
        running = self._running_tasks()
        if running:
            log.info(
                "waiting up to %.0fs for %d running jobs",
                self.settings.shutdown_grace_seconds,
                len(running),
            )
            await self._until_hurried(running, self.settings.shutdown_grace_seconds)
        late = self._running_tasks()
        for task in late:
            task.cancel()
        await self._wait_then_hurry(late, CANCEL_SECONDS)
        self.completer.close()
        await self._wait_then_hurry([completer], OUTCOME_SECONDS)
        if not completer.done():
            if self.completer.unwritten:
                log.warning(
                    "left %d outcomes unwritten (the database does not answer); their jobs "
                    "run again once their leases expire",
                    self.completer.unwritten,
                )
            completer.cancel()
        heartbeat.cancel()
        await asyncio.gather(completer, heartbeat, return_exceptions=True)
        await self._say_goodbye()

    async def _wait_then_hurry(self, tasks: Sequence[asyncio.Future[None]], timeout: float) -> None:
        """Wait for the tasks up to `timeout`; after a second signal, only a moment more."""
        await self._until_hurried(tasks, timeout)
        pending = [t for t in tasks if not t.done()]
        if pending and self._hurry.is_set():
            await asyncio.wait(pending, timeout=HURRY_SECONDS)

    def _running_tasks(self) -> list[asyncio.Task[None]]:
        return [a.task for a in self._held.values() if a.task is not None and not a.task.done()]

    async def _say_goodbye(self) -> None:
        """On one connection, in the release's time budget: hand back the jobs whose
        handlers did not finish, for other workers, and mark this worker stopped (GET
        /workers). A finished job whose outcome could not be written is left to its lease
        (see _shutdown), and so is one whose handler still runs (it ignored its
        cancellation, or its thread cannot be stopped): released now, it would run twice
        at once."""
        running: list[Attempt] = []
        leases: list[tuple[uuid.UUID, uuid.UUID]] = []
        for a in self._held.values():
            if a.done:
                continue
            if self._still_runs(a):
                running.append(a)
            else:
                leases.append((a.job.id, a.job.lease_token))
        if running:
            log.warning(
                "%d handlers still run (they ignored their cancellation, or their threads "
                "cannot be stopped): their jobs are not released; they run again once "
                "their leases expire",
                len(running),
            )
        self._held.clear()
        settings = self.settings
        timeout = HURRY_SECONDS if self._hurry.is_set() else CLAIM_STOP_SECONDS
        released = False
        try:
            async with asyncio.timeout(timeout):
                conn = await connect(self.url, timeout)
                try:
                    if leases:
                        handed_back = await store.release_jobs(
                            conn,
                            leases,
                            f"released by {self.id} at shutdown",
                            self.id,
                            free_releases=settings.free_releases,
                            backoff_base=settings.backoff_base_seconds,
                            backoff_cap=settings.backoff_cap_seconds,
                        )
                        released = True
                        log.info("released %d unfinished jobs", len(handed_back))
                    await store.worker_stopped(conn, self.id)
                finally:
                    conn.terminate()
        except Exception as exc:
            if not (is_connection_error(exc) or isinstance(exc, TimeoutError)):
                raise
            if leases and not released:
                log.warning(
                    "could not release %d unfinished jobs (%s); they run again once their "
                    "leases expire",
                    len(leases),
                    exc,
                )
            log.info("could not mark this worker stopped (%s); it shows as lost", exc)

    def _still_runs(self, attempt: Attempt) -> bool:
        if attempt.task is not None and not attempt.task.done():
            return True
        thread = self._outliving.get(attempt.job.lease_token)
        return thread is not None and not thread.done()

    # --- claiming -----------------------------------------------------------------------

    async def _claim_loop(self, queue: str, concurrency: int) -> None:
        conn = OwnConnection(
            self.url, timeout=self.settings.lease_seconds, server_settings=CLAIM_SERVER_SETTINGS
        )
        try:
            await self._claim_until_stopped(queue, concurrency, conn)
        finally:
            conn.discard()

    async def _claim_until_stopped(self, queue: str, concurrency: int, own: OwnConnection) -> None:
        wake = self.notifier.subscribe(queue)
        slot_freed = self._slot_freed[queue]
        settings = self.settings
        loop = asyncio.get_running_loop()
        outage = Outage(log, f"claiming from {queue!r}")
        metrics = self.metrics
        # the queue's flow control (None: none, the plain claim; else claim_flow or
        # claim_fair), looked up again whenever _flow_known says so: at start, when the
        # notifier says the queue changed, after a reconnect
        self._flow_known[queue] = False
        flow: store.QueueFlow | None = None
        while not self._stopping.is_set():
            free = concurrency - self._in_flight[queue]
            # Back-pressure: outcomes are written in batches, but never pile up unbounded,
            # and after an outage they (and claims PostgreSQL forgot) land before new claims.
            completer = self.completer
            if free <= 0 or completer.backlog >= settings.completer_max_batch or completer.failing:
                slot_freed.clear()
                await slot_freed.wait()
                continue
            wake.clear()  # before the claim: a notification during it is not lost
            try:
                conn = await own.get()
                if not self._flow_known[queue]:
                    flow = await store.queue_flow(conn, queue)
                    self._flow_known[queue] = True
                sent = loop.time()
                claim = store.claim if flow is None else flow.claim
                jobs = await claim(conn, queue, free, self.id, settings.lease_seconds)
                claimed = loop.time()
                for job in jobs:
                    self._start(job, sent)
                if metrics is not None:  # counted once the handlers are on their way
                    metrics.claimed(queue, jobs, claimed - sent)
                if jobs:
                    await asyncio.sleep(0)  # let the new handlers start before the next query
                if len(jobs) == free:
                    continue
                due_in = await store.seconds_until_next_job(conn, queue)
                if due_in is not None and due_in <= 0 and not jobs and flow is not None:
                    # Due but nothing claimed from a flow-controlled queue: its bucket is
                    # spent, or every due job's key is at its cap (a slot freed wakes us:
                    # the release NOTIFYs), or another worker's claim holds the jobs.
                    # Sleep rather than spin: until the bucket allows one more job, else
                    # a short while. (A change of limits is learnt from the notifier;
                    # the plain claim pays nothing here.)
                    flow = await store.queue_flow(conn, queue)
                    if flow is not None:
                        due_in = flow.wait if flow.wait > 0 else FLOW_RETRY_SECONDS
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                # The database is away (restart, network): keep trying, a little slower
                # each time; the notifier wakes us as soon as it is listening again.
                own.discard()
                await _wait(wake, outage.failed(exc))
                continue
            outage.ended()
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

    def _start(self, job: ClaimedJob, sent: float) -> None:
        earlier = self._held.get(job.id)
        if earlier is not None:
            # We hold an earlier attempt of this very job: PostgreSQL forgot that claim in a
            # crash and the job came round again. That run's outcome would be refused.
            log.warning(
                "job %s: claimed again while its forgotten earlier claim still ran here; "
                "stopping that run",
                job.id,
            )
            self._let_go(earlier)
        attempt = Attempt(job, sent)
        self._held[job.id] = attempt
        self._in_flight[job.queue] += 1
        attempt.task = asyncio.create_task(self._run_job(attempt), name=f"aqueue-job-{job.id}")

    def _cancel_notified(self, payload: str) -> None:
        """An operator cancelled a job: if it runs here, stop its handler now. (The lease
        went with the cancel, so its outcome would be refused anyway; a worker that misses
        this notification finds the lease gone at its next heartbeat.)"""
        try:
            job_id = uuid.UUID(payload)
        except ValueError:
            return
        attempt = self._held.get(job_id)
        if attempt is not None and not attempt.done:
            log.info("job %s: cancelled; stopping its handler", job_id)
            self._let_go(attempt)

    def _queue_changed(self, queue: str) -> None:
        """A queue was paused, resumed, given limits or its first fair job: its claim loop
        looks again (pause and limits are enforced by the claim statements, so a worker
        that has not heard yet claims nothing it should not)."""
        if queue in self._slot_freed:
            self._flow_known[queue] = False
            self.notifier.subscribe(queue).set()

    def _forget_flows(self) -> None:
        for queue in self._flow_known:
            self._flow_known[queue] = False

    def _holds(self, attempt: Attempt) -> bool:
        return self._held.get(attempt.job.id) is attempt

    def _let_go(self, attempt: Attempt) -> None:
        """Stop holding this attempt's lease; cancel its handler if it still runs."""
        if self._held.get(attempt.job.id) is attempt:
            del self._held[attempt.job.id]
        task = attempt.task
        if task is not None and not task.done():
            coro = task.get_coro()
            if (
                isinstance(coro, Coroutine)
                and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED
            ):
                # Cancelled before its first step (a cancel notification handled between
                # the claim and the task's start): the coroutine never runs, not even its
                # finally, so its slot is given back here.
                self._ended(attempt)
            task.cancel()

    # --- running ------------------------------------------------------------------------

    async def _run_job(self, attempt: Attempt) -> None:
        job = attempt.job
        ctx = JobContext(self.pool, job)
        metrics = self.metrics
        try:
            if metrics is None:
                outcome: Outcome | None = await self._call_handler(job, ctx)
            else:
                started = time.perf_counter()
                outcome = await self._call_handler(job, ctx)
                metrics.attempt_finished(job, outcome.status, time.perf_counter() - started)
            if ctx.connection is not None:
                outcome = await self._complete_in_transaction(attempt, ctx, outcome)
            attempt.done = True
            if outcome is not None:
                self.completer.add(outcome)
        except asyncio.CancelledError:
            if self._holds(attempt) and not self._stopping.is_set() and not attempt.done:
                # Not aqueue's doing (it lets an attempt go before it cancels one, and
                # stops only when stopping): the handler cancelled its own task. Its
                # attempt failed; left held, the job would stay RUNNING, renewed for ever.
                attempt.done = True
                self.completer.add(
                    self._failed(job, "CancelledError: the handler cancelled its own task")
                )
            raise
        except Exception:
            # Only the completion transaction's commit gets here (the handler's own errors
            # and those before the commit are outcomes). Whether it committed is unknown:
            # stop renewing the lease and let the reaper decide, which leaves a COMPLETED
            # job alone.
            log.exception("job %s: completing in its transaction failed", job.id)
            self._let_go(attempt)
        finally:
            try:
                await ctx.close()
            finally:
                self._ended(attempt)

    def _ended(self, attempt: Attempt) -> None:
        """The attempt's handler is over (or will never start): its slot is free."""
        # Let the finished task go now rather than when the outcome is written: the
        # objects it holds would otherwise pile up and trigger the garbage collector three
        # times as often.
        attempt.task = None
        queue = attempt.job.queue
        self._in_flight[queue] -= 1
        self._slot_freed[queue].set()

    async def _call_handler(self, job: ClaimedJob, ctx: JobContext) -> Outcome:
        registered = self.registry.get(job.type)
        limit: asyncio.Timeout | None = None
        try:
            if registered is None:
                raise LookupError(
                    f"no handler for job type {job.type!r} on worker {self.id} "
                    f"(known: {', '.join(self.registry)}); start the worker with --app"
                )
            seconds = job.timeout_seconds
            if seconds is None:
                seconds = registered.timeout
            if seconds is None and not registered.blocking:
                # the common case, with no frame or context manager more than it needs
                result = await registered.fn(job.payload, ctx)
            else:
                limit = asyncio.timeout(seconds)
                async with limit:
                    result = await self._invoke(registered, job, ctx)
            if result is not None:
                check_result(result, self.settings.max_payload_bytes)
        except TimeoutError as exc:
            if limit is None or not limit.expired() or registered is None:
                return self._failure(job, exc)
            return self._failed(
                job,
                f"JobTimeout: the attempt ran longer than its limit of {seconds:g}s and was "
                "cancelled"
                + (
                    " (its thread cannot be stopped: it may still run; its result is discarded)"
                    if registered.blocking
                    else ""
                ),
            )
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # aqueue stopped this attempt (shutdown, lease lost, superseded)
            # The handler awaited something cancelled elsewhere: its attempt failed.
            return self._failure(job, exc)
        except (KeyboardInterrupt, SystemExit):
            raise  # the process is to stop: its leases run out and the jobs run again
        except BaseException as exc:
            # A library's own BaseException from a handler is its attempt's failure too:
            # let through, it would end the task with no outcome, leaving the job RUNNING
            # under a lease the heartbeat renews for ever (and asyncio re-raises it).
            return self._failure(job, exc)
        return Outcome(job, JobStatus.COMPLETED, result=result)

    async def _invoke(self, task: Task, job: ClaimedJob, ctx: JobContext) -> object:
        if not task.blocking:
            return await task.fn(job.payload, ctx)
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                self.settings.threads, thread_name_prefix="aqueue-handler"
            )
        if self._outliving:
            self._outliving = {t: f for t, f in self._outliving.items() if not f.done()}
        running = self._threads.submit(task.fn, job.payload, ctx)
        try:
            return await asyncio.wrap_future(running)
        finally:
            if not running.done():
                self._outliving[job.lease_token] = running

    def _failure(self, job: ClaimedJob, exc: BaseException) -> Outcome:
        error = "".join(traceback.format_exception(exc))
        return self._failed(job, error)

    def _failed(self, job: ClaimedJob, error: str) -> Outcome:
        error = storable_text(error, MAX_ERROR_CHARS)
        if job.attempt >= job.max_attempts:
            return Outcome(job, JobStatus.DEAD, error=error)
        delay = backoff_seconds(
            job.attempt, self.settings.backoff_base_seconds, self.settings.backoff_cap_seconds
        )
        return Outcome(job, JobStatus.RETRY, error=error, retry_in=delay)

    def _substitute(self, outcome: Outcome, cause: Exception) -> Outcome:
        """What the completer records when the database refuses an outcome: the attempt
        failed, with the reason."""
        return self._failed(
            outcome.job,
            f"aqueue could not store this attempt's outcome ({outcome.status}): {cause}",
        )

    async def _complete_in_transaction(
        self, attempt: Attempt, ctx: JobContext, outcome: Outcome | None
    ) -> Outcome | None:
        """The handler wrote through the completion transaction: on success, the job's
        completion joins that transaction and both commit together, or neither does (the
        lease was lost). On failure the handler's writes are rolled back with it."""
        if outcome is None or outcome.status is not JobStatus.COMPLETED:
            return outcome  # ctx.close() rolls the handler's writes back
        conn = ctx.connection
        assert conn is not None
        try:
            accepted = await store.record_outcomes(conn, [outcome], self.id)
            if not accepted:  # perhaps a job others depend on or wait for: see the statement
                accepted = await store.finish_with_consequences(conn, [outcome], self.id)
        except Exception as exc:
            # Nothing committed (the handler left its transaction aborted, the connection
            # went): its writes roll back, and the attempt failed. The completer writes
            # that now, fenced by the lease, rather than leaving the job to its lease.
            log.warning("job %s: completing in its transaction failed: %s", ctx.job_id, exc)
            return self._failed(
                outcome.job, f"completing the job in the handler's transaction failed: {exc!r}"
            )
        if not accepted:
            log.warning(
                "job %s: lease lost before completion; its writes are rolled back", ctx.job_id
            )
            self._let_go(attempt)
            return None
        await ctx.commit()
        if self.metrics is not None:
            self.metrics.outcomes_written([outcome], accepted)  # not the completer's batch
        self._written([outcome], Written(accepted))
        return None

    def _written(self, outcomes: Sequence[Outcome], written: Written) -> None:
        held = self._held
        for outcome in outcomes:
            job = outcome.job
            attempt = held.pop(job.id, None)
            if attempt is not None and attempt.job is not job:
                held[job.id] = attempt  # a newer claim of this job: not this outcome's
        if len(written.accepted) + len(written.failed) < len(outcomes):
            settled = written.accepted | written.failed
            for outcome in outcomes:
                if outcome.job.lease_token not in settled:
                    log.warning(
                        "job %s: outcome %s refused: the lease had been reclaimed",
                        outcome.job.id,
                        outcome.status,
                    )
        self._wake_claimers()

    def _wake_claimers(self) -> None:
        for event in self._slot_freed.values():
            event.set()

    # --- heartbeat ----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        # Timeouts well under the interval: a renewal that cannot get through in time is
        # given up and tried again next round, never left to hang while leases run out.
        # (The floor matters only for leases of a few seconds, as in tests: connecting
        # alone can take a good part of a tenth of a second on a loaded machine.)
        interval = self.settings.heartbeat_seconds
        own = OwnConnection(self.url, timeout=max(interval / 2, HEARTBEAT_TIMEOUT_FLOOR))
        watchdog = asyncio.create_task(self._lease_watchdog(), name="aqueue-lease-watchdog")
        try:
            await self._say_alive(own)
            while True:
                await asyncio.sleep(interval)
                try:
                    await self._renew_leases(own)
                    await self._say_alive(own)
                except Exception as exc:
                    # Never fatal: a heartbeat that stopped would lose every lease.
                    own.discard()
                    if is_connection_error(exc):
                        log.warning("heartbeat failed: %s", exc)
                    else:
                        log.exception("heartbeat failed")
        finally:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
            own.discard()

    async def _lease_watchdog(self) -> None:
        """Stop each running handler whose lease went unrenewed when it may run out, on
        time: a round of the heartbeat can be late by its own timeout, and the reaper of
        another process does not wait for it."""
        loop = asyncio.get_running_loop()
        keep = self.settings.lease_seconds * (1 - LEASE_MARGIN)
        while True:
            self._let_go_unrenewed(keep)
            renewed = [a.renewed_at for a in self._held.values() if not a.done]
            # a later claim or renewal only moves a deadline later: waking early is harmless
            due = min(renewed) + keep if renewed else loop.time() + keep
            await asyncio.sleep(max(due - loop.time(), 0.001))

    async def _renew_leases(self, own: OwnConnection) -> None:
        held = list(self._held.values())
        if not held:
            return
        loop = asyncio.get_running_loop()
        conn = await own.get()
        sent = loop.time()
        renewal = await store.extend_leases(
            conn, [(a.job.id, a.job.lease_token) for a in held], self.settings.lease_seconds
        )
        lost = []
        for attempt in held:
            token = attempt.job.lease_token
            if token in renewal.renewed:
                attempt.renewed_at = sent
            elif token not in renewal.busy and not attempt.done and self._holds(attempt):
                # A finished attempt's loss is the completer's to find (its outcome is
                # fenced); a running one is stopped, unless PostgreSQL merely forgot its
                # claim in a crash: then the claim is written back and the handler goes on.
                lost.append(attempt)
        if not lost:
            return
        restored = await store.restore_forgotten(
            conn,
            [Outcome(a.job, JobStatus.RUNNING) for a in lost],
            self.id,
            self.settings.lease_seconds,
        )
        for attempt in lost:
            if attempt.job.lease_token in restored:
                log.warning(
                    "job %s: PostgreSQL had forgotten this worker's claim (did it crash?); "
                    "claim written back, the handler goes on",
                    attempt.job.id,
                )
                attempt.renewed_at = sent
            elif self._holds(attempt):
                # Reclaimed by the reaper (we were silent too long) or taken by an
                # operator: another worker may be running it now, and our outcome would be
                # refused. Stop the duplicate.
                log.warning("job %s: lease lost; cancelling its handler here", attempt.job.id)
                self._let_go(attempt)

    async def _say_alive(self, own: OwnConnection) -> None:
        """This process's row in the workers table (GET /workers, GET /queues): one
        statement per heartbeat, never one per job. A failure is only logged."""
        try:
            await store.worker_heartbeat(
                await own.get(),
                self.id,
                host=socket.gethostname(),
                pid=os.getpid(),
                version=aqueue_version(),
                roles=self.settings.roles,
                queues=self.settings.queues,
                running=sum(self._in_flight.values()),
            )
        except Exception as exc:
            own.discard()
            if not is_connection_error(exc):
                log.exception("writing this worker's registry row failed")

    def _let_go_unrenewed(self, keep: float) -> None:
        """A handler whose lease went `keep` seconds (almost a whole lease) without a
        renewal reaching the database has lost it, as far as this worker can know: the
        reaper may hand the job to another worker. Stop it here rather than run it twice
        at once."""
        now = asyncio.get_running_loop().time()
        for attempt in list(self._held.values()):
            if not attempt.done and now - attempt.renewed_at >= keep:
                log.warning(
                    "job %s: lease not renewed for %.1fs (the database does not answer); "
                    "cancelling its handler here",
                    attempt.job.id,
                    now - attempt.renewed_at,
                )
                self._let_go(attempt)


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Until the event is set or the timeout passes; no task is created, so a notification
    reaches the claim loop in one step of the event loop."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass
