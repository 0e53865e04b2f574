"""A minimal HTTP/1.1 keep-alive load client for the http_enqueue scenario: a few
connections, each sending requests back to back. httpx in one Python process topped out
at ~460 requests/s on the 2-core machine, whatever the server did, so it measured the
client; this one reads just the status line, the headers and Content-Length bytes."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Iterator


async def post_all(
    host: str, port: int, path: str, bodies: Iterator[bytes], connections: int
) -> Counter[int]:
    """POST every body (shared among the connections); count the response statuses."""
    statuses: Counter[int] = Counter()

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        try:
            for body in bodies:
                writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
                statuses[await _read_response(reader)] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return statuses


async def _read_response(reader: asyncio.StreamReader) -> int:
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status
