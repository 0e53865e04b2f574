"""What one request may make the API hold: its URL, its headers, its body. Checked before
any route runs, on every route, so that no route (one that ignores its body included)
reads more than the limits, and answered in the API's JSON error shape: 414 for a URL
(path and query string) over `max_url_bytes`, 431 for headers over `max_header_bytes`,
413 for a body over `max_body_bytes`, whether declared by Content-Length or streamed
without one (chunked). uvicorn holds a request's head to the same limits while it reads
it (aqueue/protocol.py); this middleware is what answers for the app wherever it runs."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aqueue.api.errors import error_response


def url_size(scope: Scope) -> int:
    """Bytes of the request target as the client sent it: path, `?` and query string."""
    path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return len(path) + (len(query) + 1 if query else 0)


def url_refusal(size: int, limit: int) -> str:
    return f"the URL is {size} bytes long; the limit is {limit} (path and query string)"


def header_refusal(size: int, limit: int) -> str:
    """Headers are counted by their names and values (not the `: ` and line ends)."""
    return f"the request's headers are {size} bytes; the limit is {limit}"


class RequestLimits:
    def __init__(
        self, app: ASGIApp, max_url_bytes: int, max_header_bytes: int, max_body_bytes: int
    ) -> None:
        self.app = app
        self.max_url_bytes = max_url_bytes
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = url_size(scope)
        if size > self.max_url_bytes:
            await error_response(414, url_refusal(size, self.max_url_bytes))(scope, receive, send)
            return
        size, declared, chunked = 0, None, False
        for name, value in scope["headers"]:  # one pass: this runs for every request
            size += len(name) + len(value)
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if size > self.max_header_bytes:
            message = header_refusal(size, self.max_header_bytes)
            await error_response(431, message)(scope, receive, send)
            return
        if declared is not None:
            # The server delivers no more than a Content-Length it accepted.
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                message = f"the body is {int(declared)} bytes; the limit is {self.max_body_bytes}"
                await error_response(413, message)(scope, receive, send)
                return
        elif chunked:
            # No length given: read it here, up to the limit, before any route sees it.
            # A route that takes no body would otherwise act on a request whose body is
            # still arriving, and one that reads it whole (request.body()) would read any
            # amount.
            body = await self._read_body(receive)
            if body is None:
                message = f"the body is larger than the limit of {self.max_body_bytes} bytes"
                await error_response(413, message)(scope, receive, send)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit (the rest is left unread: the
        server discards it after the response)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                break
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, as one message; then whatever comes next (a disconnect)."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
