"""The API's rate limit per client: a GCRA budget kept in PostgreSQL (one row per
client, one short statement at a time), so every API replica spends from the same
budget. Over budget: 429 with Retry-After and a JSON error.

Requests of one client that arrive while that client's statement runs wait for the next
one, which asks for all of them at once: under concurrency a busy client costs one
statement per round trip, not one per request queueing for its row lock, and the
database still decides every request. The client is the request's peer address (behind a
proxy that is the proxy: limit there, or give clients their own path to the API); with
authentication, the token's name, wherever its requests come from (a request without a
valid token spends its address's budget)."""

from __future__ import annotations

import asyncio
import math

import asyncpg
from starlette.types import ASGIApp, Receive, Scope, Send

from aqueue import db, store
from aqueue.api.auth import IDENTITY
from aqueue.api.errors import error_response
from aqueue.settings import RateLimit


class _Client:
    """The requests of one client waiting for a decision."""

    __slots__ = ("deciding", "waiting")

    def __init__(self) -> None:
        self.waiting: list[asyncio.Future[bool]] = []
        self.deciding = False


class RateLimiter:
    def __init__(
        self,
        app: ASGIApp,
        pool: asyncpg.Pool,
        limit: RateLimit,
        exempt_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.pool = pool
        self.limit = limit
        self.exempt_paths = exempt_paths
        self._clients: dict[str, _Client] = {}
        # the deciding tasks, held until done (the event loop keeps only weak references)
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        identity = scope.get(IDENTITY)
        if identity is not None:
            name = f"token:{identity.name}"
        else:
            peer = scope.get("client")
            name = peer[0] if peer else "unknown"
        try:
            allowed = await self._admit(name)
            retry_after = 0.0 if allowed else await self._retry_after(name)
        except Exception as exc:
            if not db.is_connection_error(exc):
                raise
            await error_response(503, "database unreachable")(scope, receive, send)
            return
        if allowed:
            await self.app(scope, receive, send)
            return
        seconds = max(1, math.ceil(retry_after))
        response = error_response(
            429, f"rate limit exceeded: {self.limit} per client; retry in {seconds}s"
        )
        response.headers["Retry-After"] = str(seconds)
        await response(scope, receive, send)

    async def _admit(self, name: str) -> bool:
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = _Client()
        decision: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        client.waiting.append(decision)
        if not client.deciding:
            client.deciding = True
            # a task of its own: a cancelled request must not strand the others; it ends
            # as soon as no request of this client waits
            task = asyncio.get_running_loop().create_task(self._decide(name, client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await decision

    async def _decide(self, name: str, client: _Client) -> None:
        try:
            while client.waiting:
                batch, client.waiting = client.waiting, []
                try:
                    granted = await store.take_rate_tokens(
                        self.pool, name, len(batch), self.limit.interval, self.limit.period
                    )
                except Exception as exc:
                    for future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for i, future in enumerate(batch):
                    if not future.done():
                        future.set_result(i < granted)
        finally:
            client.deciding = False
            if not client.waiting:
                self._clients.pop(name, None)

    async def _retry_after(self, name: str) -> float:
        limit = self.limit
        return await store.rate_retry_after(self.pool, name, limit.interval, limit.period)
