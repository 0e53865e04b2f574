"""Prometheus metrics of one process (the names, labels and meanings: README, Metrics).

One `Metrics` object per process, made by the server and handed to the roles that count
(producer gate, worker, completer, reaper, notifier) and to the apps that serve
`GET /metrics`; it owns its CollectorRegistry (with prometheus-client's process and
platform collectors), never the library's global one. Everything takes `metrics=None`:
an embedded worker or a test may run without one, at no cost.

What the roles count costs the hot path next to nothing: plain ints and bucket arrays
updated on the event loop (a bisect into fixed bounds per observation, counters by the
batch where a batch exists), turned into metric families only when scraped, by a custom
collector. No locks: everything is updated and read on the event loop (the scrape
renders the text in its handler, on the loop too).

The database-wide gauges (depths, live workers, bloat guardrails) come from one statement
(store.database_gauges), run by `refresh` before the text is rendered, at most once per
`cache_seconds`; concurrent scrapes share the statement in flight. When the database
does not answer, the gauges are left out of the text (never stale numbers that look
live) and the rest is served; the outage is logged once, and its end."""

from __future__ import annotations

import asyncio
import logging
import uuid
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from aqueue import store
from aqueue.control import LOST_AFTER_HEARTBEATS
from aqueue.db import Outage
from aqueue.model import JobStatus
from aqueue.settings import Settings
from aqueue.store import ClaimedJob, DatabaseGauges, Executor, Outcome

log = logging.getLogger("aqueue.metrics")

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# How long the gauges' statement may take (the pool included: handlers may hold every
# connection) before the scrape is answered without them; under Prometheus's default
# scrape timeout of 10 s.
GAUGES_TIMEOUT_SECONDS = 5.0
# Distinct (queue, type) pairs counted under their own labels; past that (types are any
# name a client sends), new pairs are counted under OVERFLOW, so that a flood of made-up
# job types cannot blow up the scrape and Prometheus.
MAX_LABEL_PAIRS = 1000
OVERFLOW = "_other"

# Bucket upper bounds (the +Inf bucket is implicit).
DURATION_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
PICKUP_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
STATEMENT_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)

_FAILED = (JobStatus.RETRY, JobStatus.DEAD)


class Histogram:
    """A histogram for one label set: counts per bucket (not cumulative), and the sum.
    Not thread-safe: updated and read on the event loop only."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le)
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative, as the exposition wants them, +Inf last."""
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append((floatToGoString(bound), total))
        return out


# the outcome statuses counted, each from 0 as soon as its (queue, type) is seen, so that
# rate() and increase() see the first one
OUTCOME_STATUSES = (JobStatus.COMPLETED, JobStatus.RETRY, JobStatus.DEAD)


class _Attempts:
    """The worker's count of finished attempts of one (queue, type), with their run time."""

    __slots__ = ("duration", "statuses")

    def __init__(self) -> None:
        self.duration = Histogram(DURATION_BUCKETS)
        self.statuses = dict.fromkeys(OUTCOME_STATUSES, 0)


class _Claims:
    """One queue's claim statements: their sizes and times, and the jobs' pickup latency."""

    __slots__ = ("batch", "duration", "pickup")

    def __init__(self) -> None:
        self.batch = Histogram(BATCH_BUCKETS)
        self.duration = Histogram(STATEMENT_BUCKETS)
        self.pickup = Histogram(PICKUP_BUCKETS)


class _Reclaimed(Protocol):
    @property
    def queue(self) -> str: ...


class Metrics:
    """The metrics of one process. The counting methods run on the event loop."""

    def __init__(self, *, cache_seconds: float = 2.0, lost_after_seconds: float = 30.0) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(_Collector(self))
        self.cache_seconds = cache_seconds
        self.lost_after_seconds = lost_after_seconds
        self._pairs: set[tuple[str, str]] = set()
        self.enqueued: dict[tuple[str, str], int] = {}
        # outcomes written by this process, by (queue, type), by status
        self.written: dict[tuple[str, str], dict[JobStatus, int]] = {}
        self.attempts: dict[tuple[str, str], _Attempts] = {}
        self.claims: dict[str, _Claims] = {}
        self.completer_batch = Histogram(BATCH_BUCKETS)
        self.completer_duration = Histogram(STATEMENT_BUCKETS)
        self.lease_reclaims: dict[str, int] = {}
        self.notifier_reconnects = 0
        # the database gauges: the last answer (None: none, or the database did not
        # answer the last time), when it was asked (event-loop time), the statement in
        # flight
        self.gauges: DatabaseGauges | None = None
        self._gauges_at: float | None = None
        self._refreshing: asyncio.Future[None] | None = None
        self._outage = Outage(log, "reading the database gauges for /metrics")

    @classmethod
    def for_settings(cls, settings: Settings) -> Metrics:
        """A served process's: its cache period, and workers lost as GET /queues says."""
        return cls(
            cache_seconds=settings.metrics_cache_seconds,
            lost_after_seconds=LOST_AFTER_HEARTBEATS * settings.heartbeat_seconds,
        )

    # --- counting (the roles) ---------------------------------------------------------

    def _pair(self, queue: str, type: str) -> tuple[str, str]:
        pair = (queue, type)
        if pair not in self._pairs:
            if len(self._pairs) >= MAX_LABEL_PAIRS:
                return (OVERFLOW, OVERFLOW)
            self._pairs.add(pair)
        return pair

    def count_enqueued(self, queue: str, type: str, n: int = 1) -> None:
        pair = self._pair(queue, type)
        self.enqueued[pair] = self.enqueued.get(pair, 0) + n

    # The per-job paths below (claimed, attempt_finished, outcomes_written) inline what
    # Histogram.observe does: a method call per job is a good part of their cost.

    def claimed(self, queue: str, jobs: Sequence[ClaimedJob], seconds: float) -> None:
        """One claim statement of `queue` took `seconds` and returned `jobs`."""
        claims = self.claims.get(queue)
        if claims is None:
            claims = self.claims[queue] = _Claims()
        claims.batch.observe(len(jobs))
        claims.duration.observe(seconds)
        if not jobs:
            return
        pickup = claims.pickup
        counts, total = pickup.counts, 0.0
        for job in jobs:
            # from when it was due to when the claim started it, on the database's clock
            due, created = job.run_after_epoch, job.created_epoch
            waited = job.started_epoch - (due if due > created else created)
            if waited < 0.0:
                waited = 0.0
            counts[bisect_left(PICKUP_BUCKETS, waited)] += 1
            total += waited
        pickup.sum += total

    def attempt_finished(self, job: ClaimedJob, status: JobStatus, seconds: float) -> None:
        """The worker ran a handler for `seconds`, to an outcome of `status`."""
        attempts = self.attempts.get((job.queue, job.type))
        if attempts is None:
            attempts = self._new_attempts(job.queue, job.type)
        duration = attempts.duration
        duration.counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        duration.sum += seconds
        attempts.statuses[status] += 1

    def _new_attempts(self, queue: str, type: str) -> _Attempts:
        pair = self._pair(queue, type)
        attempts = self.attempts.get(pair)
        if attempts is None:
            attempts = self.attempts[pair] = _Attempts()
        return attempts

    def outcomes_written(
        self,
        outcomes: Sequence[Outcome],
        accepted: AbstractSet[uuid.UUID],
        seconds: float | None = None,
    ) -> None:
        """A write of `outcomes` (one completion statement, when `seconds` is given: the
        completer's) stored those whose lease token is in `accepted`."""
        batch: dict[tuple[str, str, JobStatus], int] = {}
        n = len(outcomes)
        every = len(accepted) >= n  # the common case: no lease token to look up
        for outcome in outcomes:
            job = outcome.job
            if every or job.lease_token in accepted:
                key = (job.queue, job.type, outcome.status)
                batch[key] = batch.get(key, 0) + 1
        written = self.written
        for (queue, type, status), count in batch.items():
            statuses = written.get((queue, type))
            if statuses is None:
                statuses = self._new_written(queue, type)
            statuses[status] += count
        if seconds is not None:
            self.completer_batch.observe(n)
            self.completer_duration.observe(seconds)

    def _new_written(self, queue: str, type: str) -> dict[JobStatus, int]:
        pair = self._pair(queue, type)
        statuses = self.written.get(pair)
        if statuses is None:
            statuses = self.written[pair] = dict.fromkeys(OUTCOME_STATUSES, 0)
        return statuses

    def leases_reclaimed(self, reclaimed: Iterable[_Reclaimed]) -> None:
        counts = self.lease_reclaims
        for job in reclaimed:
            counts[job.queue] = counts.get(job.queue, 0) + 1

    # --- the database gauges ------------------------------------------------------------

    async def refresh(self, db: Executor) -> None:
        """Read the database gauges anew unless the last read is younger than
        `cache_seconds`; scrapes arriving meanwhile wait for the same statement. Never
        raises for want of the database: the gauges are then left out."""
        loop = asyncio.get_running_loop()
        if self._gauges_at is not None and loop.time() - self._gauges_at < self.cache_seconds:
            return
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._read_gauges(db))
        # shielded: a scrape whose client went away does not cancel the others' read
        await asyncio.shield(self._refreshing)

    async def _read_gauges(self, db: Executor) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(GAUGES_TIMEOUT_SECONDS):
                gauges = await store.database_gauges(db, self.lost_after_seconds)
        except Exception as exc:
            # Whatever the reason (down, timed out, refused), /metrics still answers.
            if isinstance(exc, TimeoutError):
                exc = TimeoutError(f"no answer within {GAUGES_TIMEOUT_SECONDS:g}s")
            self._outage.failed(exc)
            self.gauges = None
        else:
            self._outage.ended()
            self.gauges = gauges
        finally:
            # a failure is remembered as long as an answer: a database that does not
            # answer is not asked again by every scrape
            self._gauges_at = loop.time()
            self._refreshing = None

    async def exposition(self, db: Executor) -> bytes:
        """The text for GET /metrics: the gauges refreshed (see refresh), then rendered."""
        await self.refresh(db)
        return generate_latest(self.registry)

    # --- the families (scrape time) -----------------------------------------------------

    def families(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._histograms()
        if self.gauges is not None:
            yield from _gauge_families(self.gauges)

    def _counters(self) -> Iterator[Metric]:
        enqueued = CounterMetricFamily(
            "jobs_enqueued", "Jobs stored by this process.", labels=["queue", "type"]
        )
        for (queue, type), n in sorted(self.enqueued.items()):
            enqueued.add_metric([queue, type], n)
        yield enqueued
        written = {
            status: CounterMetricFamily(
                name, f"Outcomes {status.value} written by this process.", labels=["queue", "type"]
            )
            for status, name in (
                (JobStatus.COMPLETED, "jobs_completed"),
                (JobStatus.RETRY, "jobs_retried"),
                (JobStatus.DEAD, "jobs_dead"),
            )
        }
        failed = CounterMetricFamily(
            "jobs_failed",
            "Failed attempts (outcomes RETRY or DEAD) written by this process.",
            labels=["queue", "type"],
        )
        for (queue, type), statuses in sorted(self.written.items()):
            for status, family in written.items():
                family.add_metric([queue, type], statuses[status])
            failed.add_metric([queue, type], sum(statuses[s] for s in _FAILED))
        yield written[JobStatus.COMPLETED]
        yield failed
        yield written[JobStatus.RETRY]
        yield written[JobStatus.DEAD]
        finished = CounterMetricFamily(
            "worker_jobs_completed",
            "Attempts this process's worker finished, by outcome status.",
            labels=["queue", "type", "status"],
        )
        for (queue, type), attempts in sorted(self.attempts.items()):
            for status, n in attempts.statuses.items():
                finished.add_metric([queue, type, status.value], n)
        yield finished
        reclaims = CounterMetricFamily(
            "lease_reclaims",
            "Jobs whose lease expired, taken back by this process's reaper.",
            labels=["queue"],
        )
        for queue, n in sorted(self.lease_reclaims.items()):
            reclaims.add_metric([queue], n)
        yield reclaims
        yield CounterMetricFamily(
            "notifier_reconnects",
            "Times this process's LISTEN connection was re-established.",
            value=self.notifier_reconnects,
        )

    def _histograms(self) -> Iterator[Metric]:
        duration = HistogramMetricFamily(
            "worker_job_duration_seconds",
            "Handler run time of each attempt.",
            labels=["queue", "type"],
        )
        for labels, attempts in sorted(self.attempts.items()):
            _add(duration, list(labels), attempts.duration)
        yield duration
        pickup = HistogramMetricFamily(
            "job_pickup_latency_seconds",
            "From when a job was due (max(created, run_after)) to its claim.",
            labels=["queue"],
        )
        batch = HistogramMetricFamily(
            "worker_claim_batch_size", "Jobs per claim statement.", labels=["queue"]
        )
        claim_time = HistogramMetricFamily(
            "worker_claim_duration_seconds", "Claim statement time.", labels=["queue"]
        )
        for queue, claims in sorted(self.claims.items()):
            _add(pickup, [queue], claims.pickup)
            _add(batch, [queue], claims.batch)
            _add(claim_time, [queue], claims.duration)
        yield pickup
        yield batch
        yield claim_time
        completer_batch = HistogramMetricFamily(
            "completer_batch_size", "Outcomes per completion statement."
        )
        _add(completer_batch, [], self.completer_batch)
        yield completer_batch
        completer_time = HistogramMetricFamily(
            "completer_write_duration_seconds", "Completion statement time."
        )
        _add(completer_time, [], self.completer_duration)
        yield completer_time


def _add(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    family.add_metric(labels, histogram.buckets(), histogram.sum)


def _gauge_families(g: DatabaseGauges) -> Iterator[Metric]:
    pending = GaugeMetricFamily(
        "jobs_pending",
        "Due jobs waiting to start (PENDING or RETRY, run_after passed, not waiting on "
        "dependencies).",
        labels=["queue"],
    )
    depth = GaugeMetricFamily(
        "jobs_queue_depth", "Jobs in the queue by status.", labels=["queue", "status"]
    )
    running = GaugeMetricFamily("jobs_running", "RUNNING jobs.", labels=["queue"])
    oldest = GaugeMetricFamily(
        "jobs_oldest_pending_age_seconds",
        "Age of the oldest due job (0 when none).",
        labels=["queue"],
    )
    alive = GaugeMetricFamily(
        "workers_alive",
        "Live worker processes serving the queue (heartbeat within 3 intervals).",
        labels=["queue"],
    )
    for q in g.queues:
        pending.add_metric([q.queue], q.due)
        for status, n in q.depth.items():
            depth.add_metric([q.queue, status], n)
        running.add_metric([q.queue], q.depth["running"])
        oldest.add_metric([q.queue], q.oldest_due_seconds)
        alive.add_metric([q.queue], q.workers_alive)
    yield from (pending, depth, running, oldest, alive)
    for name, doc, value in (
        ("jobs_table_dead_tuples", "Dead tuples of the hot table jobs.", g.dead_tuples),
        ("jobs_table_live_tuples", "Live tuples of the hot table jobs.", g.live_tuples),
        ("jobs_table_size_bytes", "pg_total_relation_size of jobs.", g.jobs_bytes),
        ("jobs_history_size_bytes", "pg_total_relation_size of jobs_history.", g.history_bytes),
        (
            "jobs_table_last_autovacuum_timestamp_seconds",
            "When autovacuum last vacuumed jobs (0 when never).",
            g.last_autovacuum,
        ),
        (
            "jobs_table_last_vacuum_timestamp_seconds",
            "When jobs was last vacuumed by hand (the reapers; 0 when never).",
            g.last_vacuum,
        ),
        (
            "database_oldest_xmin_age_transactions",
            "Age of the oldest snapshot or transaction id held by a session of this "
            "database (what holds back vacuum).",
            g.oldest_xmin_age,
        ),
        (
            "database_oldest_transaction_age_seconds",
            "Age of the oldest open transaction in this database.",
            g.oldest_transaction_seconds,
        ),
        (
            "database_idle_in_transaction_sessions",
            "Sessions of this database idle in a transaction.",
            g.idle_in_transaction,
        ),
        (
            "database_idle_in_transaction_max_age_seconds",
            "Age of the oldest transaction of a session idle in transaction (0 when none).",
            g.idle_in_transaction_seconds,
        ),
    ):
        yield GaugeMetricFamily(name, doc, value=value)


class _Collector(Collector):
    """The families of one Metrics, built at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.families()
