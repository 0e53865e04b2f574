"""Who may call which route. With authentication on (`--auth on`, or an `--api-token`),
a request names its token in `Authorization: Bearer <token>` or, from the dashboard, in
the HTTP-only cookie that signing in set (see aqueue/api/session.py). Each route says
which scopes may call it (`requires`), next to its definition; a test holds every route of
the app to having said so.

- No token, a malformed header, or a token that is unknown, revoked or expired: 401 with
  `WWW-Authenticate: Bearer`. A valid token without the route's scope: 403.
- The middleware only finds out who is asking (one indexed lookup; the rate limiter keys
  on the answer: the token's name); the route's guard decides. So a route without a
  scope of its own cannot exist unnoticed, and a stale cookie does not keep anyone from
  the sign-in page.
- A request carried by the cookie that changes something must repeat the CSRF token
  (`X-CSRF-Token`, the `aqueue_csrf` cookie's value, derived from the session's token):
  a page of another site can make a browser send the cookie, never read it or set that
  header. Bearer requests need no such proof: no browser adds that header by itself."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from starlette.datastructures import Headers
from starlette.requests import Request, cookie_parser
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from aqueue import tokens
from aqueue.api.errors import ApiError
from aqueue.api.origin import SAFE_METHODS
from aqueue.settings import Settings
from aqueue.tokens import Identity

Endpoint = Callable[[Request], Awaitable[Response]]

IDENTITY = "aqueue.identity"
REFUSAL = "aqueue.refusal"
TOKEN_COOKIE = "aqueue_token"
CSRF_COOKIE = "aqueue_csrf"
CSRF_HEADER = "x-csrf-token"
# the --api-token's name in rate-limit budgets and refusals; no database token takes it
SIMPLE_TOKEN_NAME = next(iter(tokens.RESERVED_NAMES))
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="aqueue"'}


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


NO_TOKEN = Refusal(401, "this route needs a token: send Authorization: Bearer <token>")
BAD_TOKEN = Refusal(401, "the token is unknown, revoked or expired")


def csrf_token(secret: str) -> str:
    """The CSRF token of a session: derived from its secret, so that nothing is stored
    and no other site can plant one that matches."""
    mac = hmac.new(secret.encode("utf-8"), b"aqueue dashboard csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


class Authenticator:
    """Checks a secret: the shared --api-token, else the database's tokens."""

    def __init__(self, pool: asyncpg.Pool, api_token: str | None) -> None:
        self.pool = pool
        self.api_token = api_token

    async def identify(self, secret: str) -> Identity | None:
        if self.api_token is not None and tokens.same_secret(secret, self.api_token):
            return Identity(SIMPLE_TOKEN_NAME, tokens.granted(tokens.SCOPES))
        return await tokens.authenticate(self.pool, secret)


class Authenticate:
    """Puts the request's identity (or why it has none) in the ASGI scope. Paths in
    `skip_paths` and under `skip_prefixes` are not looked up: the probes, the dashboard's
    page and files, which are the same for everyone."""

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        skip_paths: frozenset[str] = frozenset(),
        skip_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.skip_paths = skip_paths
        self.skip_prefixes = skip_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path not in self.skip_paths and not path.startswith(self.skip_prefixes):
                identity, refusal = await self._identify(scope)
                scope[IDENTITY], scope[REFUSAL] = identity, refusal
        await self.app(scope, receive, send)

    async def _identify(self, scope: Scope) -> tuple[Identity | None, Refusal | None]:
        headers = Headers(scope=scope)
        authorization = headers.get("authorization")
        if authorization is not None:
            kind, _, secret = authorization.strip().partition(" ")
            if kind.lower() != "bearer" or not secret.strip():
                return None, Refusal(401, "the Authorization header must be: Bearer <token>")
            identity = await self.authenticator.identify(secret.strip())
            return identity, None if identity else BAD_TOKEN
        cookies = cookie_parser(headers.get("cookie", ""))
        session = cookies.get(TOKEN_COOKIE)
        if not session:
            return None, NO_TOKEN
        identity = await self.authenticator.identify(session)
        if identity is None:
            return None, Refusal(401, "the session's token is unknown, revoked or expired")
        if scope["method"] not in SAFE_METHODS:
            sent = headers.get(CSRF_HEADER, "")
            if not tokens.same_secret(sent, csrf_token(session)):
                message = f"the request lacks the session's CSRF token ({CSRF_HEADER} header)"
                return None, Refusal(403, message)
        return identity, None


def identity_of(request: Request) -> Identity | None:
    identity: Identity | None = request.scope.get(IDENTITY)
    return identity


def check(request: Request, scopes: tuple[str, ...]) -> None:
    """ApiError 401 or 403 unless the request may call a route that needs one of
    `scopes`; nothing when authentication is off."""
    settings: Settings = request.app.state.settings
    if not settings.auth_enabled:
        return
    identity = identity_of(request)
    if identity is None:
        refusal = request.scope.get(REFUSAL) or NO_TOKEN
        raise ApiError(
            refusal.status, refusal.message, CHALLENGE if refusal.status == 401 else None
        )
    if not identity.allows(scopes):
        raise ApiError(
            403,
            f"the token {identity.name!r} may not do this: it needs the "
            f"{' or '.join(scopes)} scope",
        )


def requires(*scopes: str) -> Callable[[Endpoint], Endpoint]:
    """The route needs a token with one of `scopes` (when authentication is on)."""
    unknown = [scope for scope in scopes if scope not in tokens.SCOPES]
    if not scopes or unknown:
        raise ValueError(f"scopes must be some of {tokens.SCOPES}, got {scopes}")

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            check(request, scopes)
            return await endpoint(request)

        guarded.aqueue_scopes = scopes  # type: ignore[attr-defined]
        return guarded

    return wrap


def public(endpoint: Endpoint) -> Endpoint:
    """The route answers anyone: the probes, the dashboard's files, signing in."""
    endpoint.aqueue_scopes = ()  # type: ignore[attr-defined]
    return endpoint


def route_scopes(endpoint: object) -> tuple[str, ...] | None:
    """The scopes a route's endpoint declared; None when it declared nothing."""
    scopes: tuple[str, ...] | None = getattr(endpoint, "aqueue_scopes", None)
    return scopes
