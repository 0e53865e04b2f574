"""A TCP proxy between aqueue and PostgreSQL that a test can break, to show how aqueue
behaves when the database goes away without stopping the real server (which other tests
share):

- refuse(): the database is down. Every connection through the proxy is cut and new ones
  are refused, as when PostgreSQL stops or restarts.
- blackhole(): the database stops answering (a network partition, a frozen host): the
  connections stay open and new ones are accepted, but nothing gets through.
- restore(): traffic flows again (bytes held back by a black hole are delivered).
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit


class DatabaseProxy:
    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        query = parse_qs(parts.query)
        socket_dir = query.pop("host", [None])[0]
        port = parts.port or int(query.pop("port", ["5432"])[0])
        self._unix_path = f"{socket_dir}/.s.PGSQL.{port}" if socket_dir else None
        self._tcp_target = (parts.hostname or "127.0.0.1", port)
        self._parts = parts._replace(query=urlencode(query, doseq=True))
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """The target URL with the proxy as its host."""
        user = self._parts.username or ""
        password = f":{self._parts.password}" if self._parts.password else ""
        netloc = f"{user}{password}@127.0.0.1:{self.port}"
        return urlunsplit(self._parts._replace(netloc=netloc))

    async def start(self) -> DatabaseProxy:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            if self._unix_path:
                server_r, server_w = await asyncio.open_unix_connection(self._unix_path)
            else:
                server_r, server_w = await asyncio.open_connection(*self._tcp_target)
        except OSError:
            client_w.transport.abort()
            return
        for writer in (client_w, server_w):
            self._transports.add(writer.transport)
        pumps = [
            asyncio.create_task(self._pump(client_r, server_w)),
            asyncio.create_task(self._pump(server_r, client_w)),
        ]
        self._pumps.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)
        self._pumps.difference_update(pumps)
        for writer in (client_w, server_w):
            self._transports.discard(writer.transport)
            writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    def refuse(self) -> None:
        """Cut every connection and refuse new ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()

    def blackhole(self) -> None:
        """Keep connections open but let nothing through."""
        self._flowing.clear()

    async def restore(self) -> None:
        self._flowing.set()
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        self.refuse()
        self._flowing.set()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
