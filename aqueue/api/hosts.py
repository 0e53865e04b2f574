"""Which Host headers the API answers: the defence against DNS rebinding, where a web page
points its own name at 127.0.0.1 and then reads the local API as same-origin (every
payload, every traceback in last_error)."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from aqueue.api.errors import error_response

# host [":" port], the host a name, an IPv4 address or a bracketed IPv6 address
_HOST_HEADER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:/@\s]+)(?::[0-9]*)?")


def host_of(header: str | None) -> str | None:
    """The host part of a Host header, lower-cased; None when there is none or it is
    malformed. Ports are ignored: the socket already chose the port."""
    if header is None:
        return None
    match = _HOST_HEADER.fullmatch(header)
    return match.group(1).lower() if match else None


class TrustedHosts(TrustedHostMiddleware):
    """Starlette's TrustedHostMiddleware (its allow-list and matching: a name, or
    `*.example.com` for subdomains, or `*` for any) with its own request check, because
    Starlette's answers in plain text where this API answers JSON, may redirect to a
    `www.` name, and before Starlette 1.0 split the Host on its first ":", so that
    `[::1]:8000` never matched. Paths in `exempt_paths` are answered whatever the Host."""

    def __init__(
        self, app: ASGIApp, allowed_hosts: Sequence[str], exempt_paths: Collection[str] = ()
    ) -> None:
        super().__init__(app, allowed_hosts=[h.lower() for h in allowed_hosts], www_redirect=False)
        self.exempt_paths = frozenset(exempt_paths)

    def is_allowed(self, host: str) -> bool:
        return any(
            host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))
            for pattern in self.allowed_hosts
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"host"), None)
        host = host_of(None if header is None else header.decode("latin-1"))
        if (host is not None and self.is_allowed(host)) or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation
            return
        shown = "no Host header" if header is None else f"Host {header.decode('latin-1')[:100]!r}"
        message = (
            f"{shown} is not allowed here; allowed hosts: {', '.join(self.allowed_hosts)}"
            " (aqueue serve --allowed-hosts sets them)"
        )
        await error_response(400, message)(scope, receive, send)
