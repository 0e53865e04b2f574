"""The one LISTEN connection of a process: turns `aqueue_jobs` notifications into
per-queue wake events, and keeps listening when the connection drops.

A pool must not own this connection (a pooled connection is reset and handed to others),
so it is opened apart. When it is lost (network, `pg_terminate_backend`, a PostgreSQL
restart), the notifier reconnects at once, listens again, and wakes every queue so that
jobs that arrived in between are claimed now, not at the next safety-net poll."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from aqueue import db

log = logging.getLogger("aqueue.notifier")

CHANNEL = "aqueue_jobs"
KEEPALIVE_SECONDS = 5.0  # a half-open TCP connection is found within this
POOLER_PORTS = frozenset({6432})


class Notifier:
    def __init__(self, url: str) -> None:
        self._url = url
        self._wakers: dict[str, asyncio.Event] = {}
        self.connected = asyncio.Event()
        self.connections_lost = 0
        self.backend_pid: int | None = None
        self._outage = db.Outage(log, "listening for notifications")

    def subscribe(self, queue: str) -> asyncio.Event:
        """The event set whenever queue `queue` may have new work. Its owner clears it."""
        return self._wakers.setdefault(queue, asyncio.Event())

    def wake_all(self) -> None:
        for event in self._wakers.values():
            event.set()

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, queue: object) -> None:
        event = self._wakers.get(str(queue))
        if event is not None:
            event.set()

    async def run(self) -> None:
        """Listen until cancelled, reconnecting whenever the connection is lost."""
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
            await conn.add_listener(CHANNEL, self._on_notification)
            self.backend_pid = conn.get_server_pid()
            self.connected.set()
            self._outage.ended()
            # Anything enqueued while we were not listening is claimed now.
            self.wake_all()
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
