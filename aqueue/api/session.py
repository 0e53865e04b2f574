"""The dashboard's sign-in: `POST /session` with `{"token": "..."}` checks the token and
keeps it in an HTTP-only, SameSite=Strict cookie (no script can read it, no other site's
request carries it), with the session's CSRF token in a second cookie the page's script
reads and repeats in `X-CSRF-Token`. `GET /session` says who is signed in (401 when no
one is), `DELETE /session` signs out. The token never appears in a URL.

The same routes serve any browser-based client; programs send `Authorization: Bearer`."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aqueue.api.auth import (
    CHALLENGE,
    CSRF_COOKIE,
    TOKEN_COOKIE,
    Authenticator,
    check,
    csrf_token,
    identity_of,
    public,
)
from aqueue.api.errors import ApiError, read_json
from aqueue.settings import Settings
from aqueue.tokens import SCOPES, Identity

# a signed-in browser asks for the token again after this long (or when it expires)
SESSION_SECONDS = 12 * 3600
# a body with a token in it, and nothing else
SIGN_IN_BODY_LIMIT = 4096


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _session(identity: Identity) -> dict[str, object]:
    return {"auth": True, "name": identity.name, "scopes": sorted(identity.scopes)}


@public
async def sign_in(request: Request) -> Response:
    if not _settings(request).auth_enabled:
        raise ApiError(409, "authentication is off on this server: no sign-in is needed")
    data = await read_json(request, SIGN_IN_BODY_LIMIT)
    given = data.get("token") if isinstance(data, dict) else None
    secret = given.strip() if isinstance(given, str) else ""
    if not secret:
        raise ApiError(422, 'send the token as {"token": "..."}')
    authenticator: Authenticator = request.app.state.authenticator
    identity = await authenticator.identify(secret)
    if identity is None:
        raise ApiError(401, "the token is unknown, revoked or expired", CHALLENGE)
    seconds = SESSION_SECONDS
    if identity.expires_at is not None:
        left = (identity.expires_at - datetime.now(UTC)).total_seconds()
        seconds = max(1, min(seconds, int(left)))
    response = JSONResponse(_session(identity))
    # Secure over HTTPS: then no plain-HTTP request to the same host carries the token
    secure = request.url.scheme == "https"
    response.set_cookie(
        TOKEN_COOKIE,
        secret,
        max_age=seconds,
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf_token(secret),
        max_age=seconds,
        path="/",
        secure=secure,
        httponly=False,  # the page's script repeats it in a header
        samesite="strict",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@public
async def current_session(request: Request) -> Response:
    if not _settings(request).auth_enabled:
        return JSONResponse({"auth": False, "name": None, "scopes": []})
    check(request, SCOPES)
    identity = identity_of(request)
    assert identity is not None  # check() let it through
    return JSONResponse(_session(identity))


@public
async def sign_out(request: Request) -> Response:
    response = Response(status_code=204)
    for name in (TOKEN_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/", samesite="strict")
    return response


routes = [
    Route("/session", sign_in, methods=["POST"]),
    Route("/session", current_session, methods=["GET"]),
    Route("/session", sign_out, methods=["DELETE"]),
]
