"""Cross-site requests refused: a web page on another site must not make an operator's
browser cancel, retry or pause through the API (cross-site request forgery). Routes such
as POST /queues/{name}/pause take no body, so requiring JSON bodies does not cover them.
A browser names the page's origin on every state-changing request (Origin, and
Sec-Fetch-Site in current browsers); one that names another site than the one it is
talking to is refused with a JSON 403, unless it is one of the origins `--cors-origins`
names. Clients that are not browsers (curl, SDKs, other services) send neither header and
are not affected."""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from aqueue.api.errors import error_response

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cross_site(headers: dict[bytes, bytes], allowed_origins: Collection[str] = ()) -> bool:
    """Whether a request's headers say a page of another site sent it, one of
    `allowed_origins` (the CORS origins, as browsers send them) excepted."""
    origin = headers.get(b"origin")
    if origin is not None and origin.decode("latin-1").strip() in allowed_origins:
        return False
    fetch_site = headers.get(b"sec-fetch-site")
    if fetch_site is not None and fetch_site.decode("latin-1").lower() == "cross-site":
        return True
    if origin is None:
        return False
    value = origin.decode("latin-1").strip()
    if value == "null":  # sandboxed frames, file: pages, some redirects
        return True
    host = headers.get(b"host")
    netloc = urlsplit(value).netloc.lower()
    return host is None or netloc != host.decode("latin-1").strip().lower()


class SameOrigin:
    """`allowed_origins`: the origins --cors-origins names, whose pages may act here too;
    exactly those, as a browser sends them (scheme://host[:port], lower case)."""

    def __init__(self, app: ASGIApp, allowed_origins: Collection[str] = ()) -> None:
        self.app = app
        self.allowed_origins = frozenset(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = dict(scope["headers"])
            if cross_site(headers, self.allowed_origins):
                message = "cross-site request refused: this API acts only for its own pages"
                await error_response(403, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)
