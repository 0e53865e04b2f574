"""The HTTP/1.1 protocol uvicorn runs for aqueue's servers: uvicorn's httptools protocol with
a bound on the request head. uvicorn bounds a head only with h11 (its
max_incomplete_event_size); with httptools, the parser it picks whenever httptools is
installed (aqueue depends on it: a third more requests per second), a client could send
headers of any size and the server would hold them all, and a URL up to 64 KiB.

Here the URL is held, while it arrives, to the limit the API's middleware
(aqueue/api/limits.py) answers for, and the whole head to those of the URL and the
headers together (`head_bound`), counted in the bytes received since the head began, so
that even one endless header is cut off. Past them the client gets a JSON 414 or 431 as
the middleware's, and what it sends on is read and dropped until it closes (at most
LINGER_SECONDS), rather than the connection reset under a client still sending, which
would lose the answer. A head within the bound reaches the middleware, which answers for
the exact header limit: one count of the headers, where counting them here too would
cost a call per header of every request."""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

from aqueue.api.limits import url_refusal

LINGER_SECONDS = 5.0
# the request line's method and version, the line ends and `: ` of the headers: what the
# limits do not count but a head carries
HEAD_SLACK = 4096

try:
    from uvicorn.protocols.http import httptools_impl
except ImportError:  # httptools missing: uvicorn uses h11, bounded by its own limit
    httptools_impl = None  # type: ignore[assignment]


def head_bound(max_url_bytes: int, max_header_bytes: int) -> int:
    """The most a request head may take on the wire under the limits: also h11's limit
    (h11_max_incomplete_event_size), so that h11 refuses no head the API would take."""
    return max_url_bytes + max_header_bytes + HEAD_SLACK


def config_options(max_url_bytes: int, max_header_bytes: int) -> dict[str, Any]:
    """uvicorn.Config's arguments for a server held to these limits."""
    options: dict[str, Any] = {
        "h11_max_incomplete_event_size": head_bound(max_url_bytes, max_header_bytes)
    }
    if httptools_impl is not None:
        options["http"] = bounded_httptools(max_url_bytes, max_header_bytes)
    return options


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; uvicorn then calls send_400_response."""


def bounded_httptools(max_url_bytes: int, max_header_bytes: int) -> type[asyncio.Protocol]:
    bound = head_bound(max_url_bytes, max_header_bytes)

    class BoundedHttpTools(httptools_impl.HttpToolsProtocol):
        _refusal: tuple[int, str] | None = None
        _in_head = False
        _head_bytes = 0

        def data_received(self, data: bytes) -> None:
            if self._refusal is not None:
                return  # answered already: dropped until the client closes
            was_in_head = self._in_head
            super().data_received(data)
            if not self._in_head or self._refusal is not None:
                return
            # The chunk the head began in is not counted (part of it may be the previous
            # request's body): the bound holds give or take one read.
            self._head_bytes = self._head_bytes + len(data) if was_in_head else 0
            if self._head_bytes > bound:
                message = (
                    f"the request's head passed {bound} bytes and goes on; the limit of its "
                    f"headers is {max_header_bytes}"
                )
                self._refusal = (431, message)
                self._answer()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._head_bytes = 0

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            if len(self.url) > max_url_bytes:
                self._refuse(414, url_refusal(len(self.url), max_url_bytes))

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def _refuse(self, status: int, message: str) -> None:
            """From a parser callback: stop parsing, answer from send_400_response."""
            self._refusal = (status, message)
            raise _Refused

        def send_400_response(self, msg: str) -> None:
            # uvicorn's answer to any parser error, a callback's exception included
            if self._refusal is None:
                super().send_400_response(msg)
            else:
                self._answer()

        def _answer(self) -> None:
            assert self._refusal is not None
            if self.cycle is not None and not self.cycle.response_complete:
                # a pipelined request's head, while the one before it is still being
                # answered: no room for a response of its own
                self.transport.close()
                return
            status, message = self._refusal
            body = json.dumps({"error": message, "status": status}).encode()
            head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
            head += [name + b": " + value + b"\r\n" for name, value in self._default_headers()]
            head.append(b"content-type: application/json\r\n")
            head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
            self.transport.write(b"".join(head) + body)
            if self.transport.can_write_eof():  # not over TLS
                self.transport.write_eof()
                self.loop.call_later(LINGER_SECONDS, self.transport.close)
            else:
                self.transport.close()

        def _default_headers(self) -> list[tuple[bytes, bytes]]:
            headers: list[tuple[bytes, bytes]] = self.server_state.default_headers
            return headers

    return BoundedHttpTools
