"""The scheduler role: enqueues one job per tick of every enabled schedule, exactly once
however many schedulers run. Each round is one transaction: lock the due schedules
(SKIP LOCKED: another scheduler takes the others, or finds them moved on), enqueue each
tick's job with an idempotency key made of the schedule and the tick (a second line of
defence), and advance next_run_at. Between rounds it sleeps until the next tick is due,
or until the notifier says a schedule was created or changed: no busy poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from aqueue import control, producer, schedules, store
from aqueue.cron import Schedule, fire
from aqueue.db import Outage, is_connection_error
from aqueue.metrics import Metrics
from aqueue.notifier import Notifier, Topic
from aqueue.registry import Registry
from aqueue.settings import Settings

log = logging.getLogger("aqueue.scheduler")

# At most this many schedules per round (the rest in the next one, at once).
ROUND_LIMIT = 100
# The longest sleep without a look at the schedules: the safety net under the notifier.
MAX_SLEEP_SECONDS = 60.0


def tick_key(schedule: Schedule, tick_iso: str) -> str:
    return f"aqueue:schedule:{schedule.id}:{tick_iso}"


class Scheduler:
    name = "scheduler"
    stop_seconds = 5.0

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        registry: Registry,
        notifier: Notifier,
        metrics: Metrics | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.enqueued = 0
        self._stopped = asyncio.Event()
        self._wake = asyncio.Event()
        notifier.on(Topic.SCHEDULES, lambda _payload: self._wake.set())
        notifier.on_reconnect(self._wake.set)

    def stop(self, now: bool = False) -> None:
        self._stopped.set()
        self._wake.set()

    async def run(self) -> None:
        log.info(
            "scheduler running (%d schedules and %d queues' limits declared in code)",
            len(self.registry.schedules),
            len(self.registry.queue_limits),
        )
        outage = Outage(log, "scheduling")
        synced = False
        while not self._stopped.is_set():
            self._wake.clear()
            try:
                if not synced:
                    await schedules.sync_code_schedules(
                        self.pool, self.registry.schedules, self.settings.max_payload_bytes
                    )
                    await control.sync_code_limits(self.pool, self.registry.queue_limits)
                    synced = True
                while await self.fire_due() == ROUND_LIMIT:
                    pass
                due_in = await store.seconds_until_next_schedule(self.pool)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                await self._sleep(outage.failed(exc))
                continue
            outage.ended()
            await self._sleep(
                MAX_SLEEP_SECONDS if due_in is None else min(due_in, MAX_SLEEP_SECONDS)
            )

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def fire_due(self) -> int:
        """One round: every due schedule (up to ROUND_LIMIT) enqueues its tick's job and
        moves on, in one transaction. Returns how many schedules it handled."""
        async with store.transaction(self.pool) as conn:
            now = await store.database_now(conn)
            due = await store.lock_due_schedules(conn, ROUND_LIMIT)
            for schedule in due:
                firing = fire(
                    schedule.cron, schedule.timezone, schedule.next_run_at, now, schedule.catch_up
                )
                if firing.missed:
                    log.warning(
                        "schedule %s missed ticks since %s (schedulers down?): %s",
                        schedule.name,
                        schedule.next_run_at.isoformat(),
                        "one catch-up run" if firing.run else "skipped",
                    )
                if firing.run is not None:
                    await producer.submit(
                        conn,
                        schedule.spec().job(tick_key(schedule, firing.run.isoformat())),
                        self.metrics,
                    )
                    self.enqueued += 1
                await store.advance_schedule(
                    conn, schedule.id, firing.next_at, now if firing.run else None
                )
            return len(due)
