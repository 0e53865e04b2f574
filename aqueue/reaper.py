"""The reaper: jobs whose lease expired (their worker was killed, lost the network or
hung) go back to RETRY after the retry backoff, or to DEAD when their attempts are used
up. One statement per round; each reclaim is recorded in job_events by that same
statement. It runs in every process with the reaper role and in every worker process (its
statement is cheap and SKIP LOCKED, so many reapers share the work without waiting): a
fleet of worker-only processes recovers a killed worker's jobs by itself.

In a process with the reaper role it also applies retention: jobs that finished longer
ago than `retention_seconds` are deleted from jobs_history with their events and
idempotency keys, in small batches, each statement its own short transaction.

Every reaper also keeps the hot table small: finished jobs leave it, so each job leaves
two dead tuples behind (its claim's and its move's), 20,000 a second at full drain. When
they pass `hot_vacuum_dead` (and a fifth of the live rows), it VACUUMs jobs itself,
SKIP_LOCKED so that reapers never queue behind each other: autovacuum may be off, and at
its default one-minute naptime it would let a minute of churn pile up between runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from aqueue import store
from aqueue.db import Outage, is_connection_error
from aqueue.metrics import Metrics
from aqueue.model import PROMOTED_PRIORITY, JobStatus
from aqueue.settings import Settings

log = logging.getLogger("aqueue.reaper")

# A stopped or lost process's row in the workers table is kept this long, then pruned.
WORKER_ROWS_KEPT_SECONDS = 24 * 3600.0


class Reaper:
    name = "reaper"
    stop_seconds = 5.0

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        process_id: str,
        *,
        retention: bool = True,
        metrics: Metrics | None = None,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.settings = settings
        self.id = "reaper:" + process_id
        self.reclaimed = 0
        # retention runs in processes with the reaper role only, not in every worker
        self.retention = retention and settings.retention_seconds is not None
        self.purged = 0
        self.vacuums = 0
        self._may_vacuum = True
        self._stopped = asyncio.Event()

    def stop(self, now: bool = False) -> None:
        self._stopped.set()

    async def run(self) -> None:
        """Reap every interval until stop(); a failed round is logged and retried."""
        outage = Outage(log, "reaping")
        while not self._stopped.is_set():
            try:
                await self.maintain()
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                outage.failed(exc)  # the next round is the retry
            else:
                outage.ended()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.settings.reaper_interval_seconds)

    async def maintain(self) -> None:
        """One round: expired leases, starving jobs, registry and rate-limit rows no longer
        needed, concurrency slots fitted to their caps, finished jobs past the retention
        (reaper role only), and the hot table's dead tuples."""
        await self.reap()
        await self.promote()
        await store.prune_workers(self.pool, WORKER_ROWS_KEPT_SECONDS)
        await store.prune_rate_limits(self.pool)
        await self.fit_slots()
        if self.retention:
            await self.purge()
        await self.vacuum_if_bloated()

    async def promote(self) -> int:
        """Priorities that cannot starve: jobs due for longer than --promote-after go
        first in their queue (see the statement)."""
        total = 0
        while True:
            promoted = await store.promote_starving(
                self.pool,
                self.settings.promote_after_seconds,
                self.settings.reaper_batch,
                PROMOTED_PRIORITY,
            )
            total += promoted
            if promoted < self.settings.reaper_batch:
                if total:
                    log.info(
                        "promoted %d jobs waiting longer than %gs",
                        total,
                        self.settings.promote_after_seconds,
                    )
                return total

    async def fit_slots(self) -> int:
        """Concurrency slot rows fitted to their keys' caps, and any slot held by a job
        that no longer runs freed (see the statement)."""
        changed = await store.fit_slots(self.pool)
        if changed:
            log.info("fitted %d concurrency slot rows to their caps", changed)
        return changed

    async def reap(self) -> int:
        """Reclaim every expired lease now; returns how many jobs were reclaimed."""
        total = 0
        while True:
            batch = await store.reclaim_expired(
                self.pool,
                self.settings.reaper_batch,
                self.id,
                self.settings.backoff_base_seconds,
                self.settings.backoff_cap_seconds,
            )
            for job in batch:
                log.warning(
                    "job %s: lease expired, now %s",
                    job.job_id,
                    "DEAD (no attempts left)" if job.status is JobStatus.DEAD else "RETRY",
                )
            total += len(batch)
            if self.metrics is not None:
                self.metrics.leases_reclaimed(batch)
            if len(batch) < self.settings.reaper_batch:
                self.reclaimed += total
                return total

    async def purge(self) -> int:
        """Delete finished jobs older than the retention, at most `retention_batches`
        batches this round (the rest next round: a first run on a long history must not
        hold up the lease reclaims); returns how many."""
        seconds = self.settings.retention_seconds
        if seconds is None:
            return 0
        deleted = await store.purge_history(
            self.pool,
            seconds,
            self.settings.retention_batch,
            max_batches=self.settings.retention_batches,
        )
        if deleted:
            log.info("retention: deleted %d jobs finished more than %gs ago", deleted, seconds)
        self.purged += deleted
        return deleted

    async def vacuum_if_bloated(self) -> bool:
        """VACUUM jobs when its dead tuples pass the threshold; returns whether it did."""
        if not self._may_vacuum:
            return False
        stats = await store.hot_table_stats(self.pool)
        if not stats.may_vacuum:
            self._may_vacuum = False
            log.info("not the owner of jobs: its dead tuples are left to autovacuum")
            return False
        threshold = max(self.settings.hot_vacuum_dead, self.settings.hot_vacuum_scale * stats.live)
        if stats.dead < threshold:
            return False
        await store.vacuum_jobs(self.pool)
        self.vacuums += 1
        log.debug("vacuumed jobs (%d dead tuples, %d live)", stats.dead, stats.live)
        return True
