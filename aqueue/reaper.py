"""The reaper: jobs whose lease expired (their worker was killed, lost the network or
hung) go back to RETRY after the retry backoff, or to DEAD when their attempts are used
up. One statement per round; each reclaim is recorded in job_events by that same
statement. It runs in every process with the reaper role and in every worker process (its
statement is cheap and SKIP LOCKED, so many reapers share the work without waiting): a
fleet of worker-only processes recovers a killed worker's jobs by itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from aqueue import store
from aqueue.db import Outage, is_connection_error
from aqueue.model import PROMOTED_PRIORITY, JobStatus
from aqueue.settings import Settings

log = logging.getLogger("aqueue.reaper")

# A stopped or lost process's row in the workers table is kept this long, then pruned.
WORKER_ROWS_KEPT_SECONDS = 24 * 3600.0


class Reaper:
    name = "reaper"
    stop_seconds = 5.0

    def __init__(self, pool: asyncpg.Pool, settings: Settings, process_id: str) -> None:
        self.pool = pool
        self.settings = settings
        self.id = "reaper:" + process_id
        self.reclaimed = 0
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
        """One round: expired leases, starving jobs, and registry rows long gone."""
        await self.reap()
        await self.promote()
        await store.prune_workers(self.pool, WORKER_ROWS_KEPT_SECONDS)

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
