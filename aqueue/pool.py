"""The pool aqueue.db.create_pool returns: asyncpg's pool plus one connection of its own
for the statements called on the pool itself (pool.fetchrow(...), as
aqueue.enqueue(pool, ...) does), taken whenever no other such statement holds it.

Why: asyncpg's acquire and release cost a fifth of an enqueue. The release runs in a
shielded task (so that a cancelled caller still returns the connection), two more turns
of the event loop; a sequential producer, the common one (one enqueue per request), paid
it on every job: enqueues timed one by one, interleaved, on a 2-core machine on asyncio's
loop took 432 us through asyncpg's pool against 346 on this connection (961 against 807
in a slower hour); a SELECT 1 on uvloop's, 200 against 93. On the direct connection the
call is the statement alone.
Concurrent calls beyond the first, pool.acquire() and transactions use the pool as before.
The direct connection is one more than max_size, so that it never takes a connection a
caller's acquire() waits for."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")
log = logging.getLogger("aqueue.pool")
DIRECT_RETRY_SECONDS = 1.0


class Pool(asyncpg.Pool):
    """Built by aqueue.db.create_pool; `open_direct` opens the direct connection with the
    pool's own settings and codecs."""

    def __init__(
        self, *args: Any, open_direct: Callable[[], Awaitable[asyncpg.Connection]], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._open_direct = open_direct
        self._direct: asyncpg.Connection | None = None
        # set while no statement holds the direct connection (a flag, not an asyncio.Lock:
        # the lock's acquire and release were a third of what the direct call costs)
        self._direct_idle = asyncio.Event()
        self._direct_idle.set()
        self._direct_stale = False
        self._direct_closed = False
        self._direct_retry_at = 0.0  # loop time before which no new one is tried

    async def open_direct(self) -> None:
        """Open the direct connection now (create_pool does), not on the first call. If the
        server refuses it (its connection table full, say), the pool works without it and
        tries again on a later call."""
        if self._direct is None and self._direct_idle.is_set() and not self._direct_closed:
            self._direct_idle.clear()
            try:
                await self._reopen()
            finally:
                self._direct_idle.set()

    async def _reopen(self) -> asyncpg.Connection | None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._direct_retry_at:
            return None
        try:
            self._direct = await self._open_direct()
        except Exception as exc:
            # a refused connection must not fail a statement the pool can run: the call
            # takes a pooled connection, and the next try waits a while
            self._direct_retry_at = loop.time() + DIRECT_RETRY_SECONDS
            log.debug(
                "no direct connection (%s: %s); statements use the pool", type(exc).__name__, exc
            )
            return None
        self._direct_stale = False
        return self._direct

    async def _on_direct(
        self, run: Callable[[asyncpg.Connection], Awaitable[T]], pooled: Callable[[], Awaitable[T]]
    ) -> T:
        # A call while another holds the direct connection goes to the pool instead of
        # queueing behind the statement in flight.
        if not self._direct_idle.is_set() or self._direct_closed:
            return await pooled()
        self._direct_idle.clear()
        try:
            conn = self._direct
            if conn is not None and (conn.is_closed() or self._direct_stale):
                self._direct = None
                conn.terminate()
                conn = None
            if conn is None:
                conn = await self._reopen()
                if conn is None:
                    return await pooled()
            try:
                result = await run(conn)
            except (asyncpg.PostgresError, asyncio.CancelledError, TimeoutError):
                # The server refused the statement, or asyncpg is cancelling it there (as
                # on a pooled connection, the next statement waits for that): the
                # connection is as it was.
                self._keep_out_of_transaction(conn)
                raise
            except BaseException:
                # Anything else (the connection cut, an argument that would not encode)
                # can leave the protocol mid-message, where asyncpg refuses the next
                # statement: start again on a new connection.
                self._direct = None
                conn.terminate()
                raise
            self._keep_out_of_transaction(conn)
            return result
        finally:
            self._direct_idle.set()

    def _keep_out_of_transaction(self, conn: asyncpg.Connection) -> None:
        # As asyncpg's release, a transaction a statement left open (a bare BEGIN) does
        # not reach the next caller: the connection goes, and the server rolls it back.
        if conn.is_in_transaction():
            self._direct = None
            conn.terminate()

    async def execute(self, query: str, *args: object, timeout: float | None = None) -> str:
        return await self._on_direct(
            lambda conn: conn.execute(query, *args, timeout=timeout),
            lambda: super(Pool, self).execute(query, *args, timeout=timeout),
        )

    async def fetch(
        self, query: str, *args: object, timeout: float | None = None, record_class: Any = None
    ) -> list[Any]:
        return await self._on_direct(
            lambda conn: conn.fetch(query, *args, timeout=timeout, record_class=record_class),
            lambda: super(Pool, self).fetch(
                query, *args, timeout=timeout, record_class=record_class
            ),
        )

    async def fetchval(
        self, query: str, *args: object, column: int = 0, timeout: float | None = None
    ) -> Any:
        return await self._on_direct(
            lambda conn: conn.fetchval(query, *args, column=column, timeout=timeout),
            lambda: super(Pool, self).fetchval(query, *args, column=column, timeout=timeout),
        )

    async def fetchrow(
        self, query: str, *args: object, timeout: float | None = None, record_class: Any = None
    ) -> Any:
        return await self._on_direct(
            lambda conn: conn.fetchrow(query, *args, timeout=timeout, record_class=record_class),
            lambda: super(Pool, self).fetchrow(
                query, *args, timeout=timeout, record_class=record_class
            ),
        )

    async def expire_connections(self) -> None:
        """As asyncpg's: every connection is replaced before its next use, the direct one too."""
        self._direct_stale = True
        await super().expire_connections()

    async def close(self) -> None:
        """Waits for the direct connection's statement in flight, as for acquired ones."""
        self._direct_closed = True
        await self._direct_idle.wait()
        conn, self._direct = self._direct, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:
                conn.terminate()
        await super().close()

    def terminate(self) -> None:
        self._direct_closed = True
        conn, self._direct = self._direct, None
        if conn is not None:
            conn.terminate()
        super().terminate()
