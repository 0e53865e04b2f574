"""The reaper: jobs whose lease expired (their worker was killed, lost the network or
hung) go back to RETRY after the retry backoff, or to DEAD when their attempts are used
up. One statement per round; each reclaim is recorded in job_events by that same
statement. It runs in every process with the reaper role and in every worker process (its
statement is cheap and SKIP LOCKED, so many reapers share the work without waiting): a
fleet of worker-only processes recovers a killed worker's jobs by itself.

In a process with the reaper role it also applies retention: jobs that finished longer
ago than `retention_seconds` are deleted from jobs_history with their events and
idempotency keys, in small batches, each statement its own short transaction."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from aqueue import store
from aqueue.db import Outage, is_connection_error
from aqueue.model import JobStatus
from aqueue.settings import Settings
from aqueue.worker import new_worker_id

log = logging.getLogger("aqueue.reaper")


class Reaper:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, *, retention: bool = True) -> None:
        self.pool = pool
        self.settings = settings
        self.id = "reaper:" + new_worker_id()
        self.reclaimed = 0
        # retention runs in processes with the reaper role only, not in every worker
        self.retention = retention and settings.retention_seconds is not None
        self.purged = 0

    async def run(self) -> None:
        """Reap every interval until cancelled; a failed round is logged and retried."""
        outage = Outage(log, "reaping")
        while True:
            try:
                await self.reap()
                if self.retention:
                    await self.purge()
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                outage.failed(exc)  # the next round is the retry
            else:
                outage.ended()
            await asyncio.sleep(self.settings.reaper_interval_seconds)

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
