"""The one LISTEN connection of a process, shared by everything in it that waits on the
database: the workers' claim loops (jobs inserted), their running jobs (job cancelled),
and the API's long-polls and `aqueue.wait` (job finished). Each kind of notification is a
topic, and every channel name aqueue uses is defined here, in `Topic`.

A pool must not own this connection (a pooled connection is reset and handed to others),
so it is opened apart. When it is lost (network, `pg_terminate_backend`, a PostgreSQL
restart), the notifier reconnects at once, listens again, and wakes every queue so that
jobs that arrived in between are claimed now, not at the next safety-net poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from aqueue import db
from aqueue.metrics import Metrics

log = logging.getLogger("aqueue.notifier")

KEEPALIVE_SECONDS = 5.0  # a half-open TCP connection is found within this
POOLER_PORTS = frozenset({6432})


class Topic(StrEnum):
    """The notification channels, and what each payload is."""

    JOBS = "aqueue_jobs"  # jobs became runnable; payload: the queue name
    CANCEL = "aqueue_cancel"  # a running job was cancelled; payload: the job id
    QUEUE = "aqueue_queue"  # a queue was paused or resumed; payload: the queue name
    FINISHED = "aqueue_finished"  # a watched job finished; payload: the job id
    SCHEDULES = "aqueue_schedules"  # a schedule was created or changed; payload: its id


Listener = Callable[[str], None]


class Notifier:
    name = "notifier"
    stop_seconds = 2.0

    def __init__(self, url: str, metrics: Metrics | None = None) -> None:
        self._url = url
        self._metrics = metrics
        self._wakers: dict[str, asyncio.Event] = {}
        self._listeners: dict[str, list[Listener]] = {topic: [] for topic in Topic}
        self._reconnect_listeners: list[Callable[[], None]] = []
        # job id -> the events of everyone waiting for that job to finish
        self._finish_waiters: dict[str, set[asyncio.Event]] = {}
        self.connected = asyncio.Event()
        self.connections_lost = 0
        self.backend_pid: int | None = None
        self._outage = db.Outage(log, "listening for notifications")
        self._stopped = asyncio.Event()
        self.on(Topic.JOBS, self._wake_queue)
        self.on(Topic.FINISHED, self._wake_finish_waiters)

    def on(self, topic: Topic, listener: Listener) -> None:
        """Call `listener(payload)` for every notification on `topic`, in the event loop."""
        self._listeners[topic].append(listener)

    def on_reconnect(self, listener: Callable[[], None]) -> None:
        """Call `listener()` each time listening starts again after a lost connection:
        whatever was notified in between was missed, so look again."""
        self._reconnect_listeners.append(listener)

    @contextlib.contextmanager
    def finished(self, job_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set when job `job_id` may have finished (it was notified, or the
        connection came back and anything may have happened): look at the job then. The
        job must be watched (store.watch_job) for its finish to be notified."""
        event = asyncio.Event()
        key = str(job_id)
        self._finish_waiters.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._finish_waiters.get(key)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._finish_waiters[key]

    def stop(self, now: bool = False) -> None:
        """Stop listening; run() then returns."""
        self._stopped.set()

    def subscribe(self, queue: str) -> asyncio.Event:
        """The event set whenever queue `queue` may have new work. Its owner clears it."""
        return self._wakers.setdefault(queue, asyncio.Event())

    def wake_all(self) -> None:
        for event in self._wakers.values():
            event.set()

    def _wake_queue(self, queue: str) -> None:
        event = self._wakers.get(queue)
        if event is not None:
            event.set()

    def _wake_finish_waiters(self, job_id: str) -> None:
        for event in self._finish_waiters.get(job_id, ()):
            event.set()

    def _reconnected(self) -> None:
        self.wake_all()
        for waiters in self._finish_waiters.values():
            for event in waiters:
                event.set()
        for listener in self._reconnect_listeners:
            listener()

    def _on_notification(self, _conn: Any, _pid: int, channel: str, payload: object) -> None:
        # a Topic is a str and hashes as one: no Topic(channel) call (an Enum lookup in
        # Python) on the way from a notification to the claim it starts
        for listener in self._listeners.get(channel, ()):
            try:
                listener(str(payload))
            except Exception:
                log.exception("a listener of %s failed", channel)

    async def run(self) -> None:
        """Listen until stop() or cancellation, reconnecting whenever the connection is
        lost."""
        stopped = asyncio.ensure_future(self._stopped.wait())
        listening = asyncio.ensure_future(self._listen())
        try:
            await asyncio.wait([stopped, listening], return_when=asyncio.FIRST_COMPLETED)
            if listening.done():
                listening.result()
        finally:
            stopped.cancel()
            listening.cancel()
            await asyncio.gather(stopped, listening, return_exceptions=True)

    async def _listen(self) -> None:
        warn_if_pooler(self._url)
        while True:
            try:
                await self._listen_until_lost()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not db.is_connection_error(exc):
                    raise
                # The first reconnect after a lost connection is immediate (every
                # millisecond without LISTEN is pickup latency); failed ones back off.
                await asyncio.sleep(self._outage.failed(exc))
            finally:
                self.connected.clear()

    async def _listen_until_lost(self) -> None:
        conn = await db.connect(self._url)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        try:
            for topic in Topic:
                await conn.add_listener(topic.value, self._on_notification)
            self.backend_pid = conn.get_server_pid()
            if self.connections_lost and self._metrics is not None:
                self._metrics.notifier_reconnects += 1
            self.connected.set()
            self._outage.ended()
            # Anything enqueued, cancelled or finished while we were not listening is
            # looked at now.
            self._reconnected()
            await self._watch(conn, lost)
        finally:
            self.connections_lost += 1
            if not conn.is_closed():
                conn.terminate()

    async def _watch(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Return when the connection is lost; probe it when it has been quiet a while."""
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), KEEPALIVE_SECONDS)
        log.warning("LISTEN connection lost; reconnecting")


def warn_if_pooler(url: str) -> bool:
    """LISTEN needs a session of its own: through a pooler in transaction mode
    (PgBouncer's usual setting) notifications never arrive. Say so at start."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    if port in POOLER_PORTS or "bouncer" in host or "pooler" in host:
        log.warning(
            "the database URL (%s:%s) looks like a connection pooler: LISTEN/NOTIFY does "
            "not work through a pooler in transaction mode, so workers would only find "
            "jobs at the safety-net poll. Point aqueue at PostgreSQL directly or at a "
            "session-mode pool.",
            host,
            port,
        )
        return True
    return False
