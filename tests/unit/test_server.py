"""The API's listening socket."""

from __future__ import annotations

import asyncio
import socket

from aqueue.server import bind_socket


async def test_accepted_connections_send_without_nagle_delay():
    # Without TCP_NODELAY a response written in two parts waited ~40 ms for a delayed ACK.
    sock = bind_socket("127.0.0.1", 0)
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted = writer.get_extra_info("socket")
        seen.append(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(handle, sock=sock)
    async with server:
        _reader, writer = await asyncio.open_connection(*sock.getsockname())
        await asyncio.sleep(0.05)
        writer.close()
    assert seen and seen[0] != 0
