"""The web dashboard: `GET /` serves its one page, `/dashboard/{asset}` its script, style
sheet and icon (plain files in aqueue/dashboard/, shipped in the wheel: no build step, no
CDN). The page reads and acts through the same JSON routes as any client.

Caching: the page names each asset with its content's digest (`app.js?v=1f2e...`); an
asset asked for with its current digest is cached for a year (`immutable`), anything else
(the page itself, an asset without a digest or with an old one) is revalidated on every
use with its ETag, so a new version of aqueue is seen at the next load of the page."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aqueue.api.auth import public
from aqueue.api.errors import ApiError

# The files the page loads, with their content types.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
PAGE = "index.html"
LONG_CACHE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# The page runs only its own script and style sheet and talks only to this origin: API
# data that slipped into markup still could not run. frame-ancestors: no other site can
# frame the page's buttons (clickjacking).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    digest: str  # of the content: the version in ?v= and the ETag


def _file(body: bytes, media_type: str) -> StaticFile:
    return StaticFile(body, media_type, hashlib.sha256(body).hexdigest()[:16])


@functools.cache
def files() -> dict[str, StaticFile]:
    """The assets and the page, read once from the package. The page's references to
    `dashboard/<asset>` get `?v=<digest>`."""
    package = resources.files("aqueue.dashboard")
    assets = {
        name: _file(package.joinpath(name).read_bytes(), media_type)
        for name, media_type in ASSETS.items()
    }
    page = package.joinpath(PAGE).read_text(encoding="utf-8")
    for name, asset in assets.items():
        reference = f'"dashboard/{name}"'
        if reference not in page:
            raise RuntimeError(f"{PAGE} does not reference dashboard/{name}")
        page = page.replace(reference, f'"dashboard/{name}?v={asset.digest}"')
    assets[PAGE] = _file(page.encode(), "text/html; charset=utf-8")
    return assets


def _respond(request: Request, file: StaticFile, cache_control: str) -> Response:
    etag = f'"{file.digest}"'
    headers = {**SECURITY_HEADERS, "Cache-Control": cache_control, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


@public
async def page(request: Request) -> Response:
    return _respond(request, files()[PAGE], REVALIDATE)


@public
async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    file = files().get(name) if name in ASSETS else None
    if file is None:
        raise ApiError(404, f"no dashboard file {name[:100]!r}")
    versioned = request.query_params.get("v") == file.digest
    return _respond(request, file, LONG_CACHE if versioned else REVALIDATE)


routes = [
    Route("/", page, methods=["GET"]),
    Route("/dashboard/{name}", asset, methods=["GET"]),
]
