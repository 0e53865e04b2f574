"""The Starlette app: routes, error handlers (every error is JSON), health probes, and the
dashboard's page at `/`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from aqueue import store
from aqueue.api import dashboard, depth, jobs, queues, schedules, session, stats, workers
from aqueue.api import metrics as metrics_api
from aqueue.api.auth import Authenticate, Authenticator, public, requires, route_scopes
from aqueue.api.cors import Cors
from aqueue.api.errors import ApiError, allowed_methods, error_response
from aqueue.api.hosts import TrustedHosts
from aqueue.api.limits import RequestLimits
from aqueue.api.openapi import openapi_document, with_security
from aqueue.api.origin import SameOrigin
from aqueue.api.ratelimit import RateLimiter
from aqueue.db import is_connection_error
from aqueue.metrics import Metrics
from aqueue.notifier import Notifier
from aqueue.settings import Settings

log = logging.getLogger("aqueue.api")

READY_TIMEOUT_SECONDS = 2.0


@public
async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


@public
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database answers."""
    try:
        await asyncio.wait_for(store.ping(request.app.state.pool), READY_TIMEOUT_SECONDS)
    except Exception as exc:
        # The detail names internal addresses and users: it goes to the log, not to
        # whoever can reach the probe.
        log.warning("readiness check failed: %s", str(exc) or type(exc).__name__)
        return JSONResponse(
            {"status": "unavailable", "error": "database unreachable"}, status_code=503
        )
    return JSONResponse({"status": "ready"})


@requires("read")
async def openapi(request: Request) -> JSONResponse:
    document = openapi_document()
    if request.app.state.settings.auth_enabled:
        document = with_security(document, declared_scopes(request.app.routes))
    return JSONResponse(document)


def declared_scopes(routes: Sequence[BaseRoute]) -> dict[tuple[str, str], tuple[str, ...]]:
    """(path, method) -> the scopes its endpoint declared (empty: public)."""
    found = {}
    for route in routes:
        if isinstance(route, Route) and route.methods:
            scopes = route_scopes(route.endpoint)
            if scopes is not None:
                for method in route.methods - {"HEAD"}:
                    found[(route.path, method.lower())] = scopes
    return found


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    return error_response(exc.status_code, str(exc.detail), headers)


async def _database_error(request: Request, exc: Exception) -> Response:
    log.warning("database error on %s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "the database is unavailable; try again")


async def _refused_value(request: Request, exc: Exception) -> Response:
    # Validation should have caught it first; this keeps a refused value a 4xx, not a 500.
    return error_response(422, f"the database refused a value: {exc}")


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    if is_connection_error(exc):
        # A transient state of the database (down, restarting, read-only after a failover,
        # out of connections): the client may try again, unlike after a bug.
        return await _database_error(request, exc)
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal error")


# Answered whatever the Host header: an orchestrator's probe names the pod's address
# (Kubernetes sends Host: <pod IP>:<port>), not the public name --allowed-hosts lists, and
# neither probe says anything worth a DNS-rebinding attack.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
# Scraped by Prometheus, which names the target's address too; no rate limit either (a
# scrape is no client's request, and a refused scrape is a gap in every graph).
EXEMPT_PATHS = PROBE_PATHS | {metrics_api.PATH}
# the same for everyone: looking up the token of who asks would only cost a statement
UNGUARDED_PATHS = PROBE_PATHS | {"/"}
UNGUARDED_PREFIXES = ("/dashboard/",)


def create_app(
    pool: asyncpg.Pool,
    settings: Settings,
    notifier: Notifier | None = None,
    metrics: Metrics | None = None,
) -> Starlette:
    """The API. `notifier` is the process's one LISTEN connection, which long-polls wait
    on; without one (an app mounted on its own) they look at the job every poll
    interval instead. `metrics`: the process's, served at GET /metrics and counting
    the jobs enqueued here; without one there is no /metrics."""
    hosts = settings.api_allowed_hosts
    # outermost, where CORS is on: a preflight is answered before anything, and every
    # answer to an allowed origin's page (a 413, a 429) carries the headers it needs to
    # read it
    middleware = [Middleware(Cors, origins=settings.cors_origins)] if settings.cors_origins else []
    middleware += [
        # then nothing runs for a request past the limits, nor reads more of it
        Middleware(
            RequestLimits,
            max_url_bytes=settings.max_url_bytes,
            max_header_bytes=settings.max_header_bytes,
            max_body_bytes=settings.max_body_bytes,
        ),
        # then a forged cross-site request is refused before it reaches anything
        Middleware(SameOrigin, allowed_origins=settings.cors_origins),
    ]
    if "*" not in hosts:
        middleware.append(Middleware(TrustedHosts, allowed_hosts=hosts, exempt_paths=EXEMPT_PATHS))
    authenticator = Authenticator(pool, settings.api_token)
    if settings.auth_enabled:
        # before the rate limit, which keys on the token's name
        middleware.append(
            Middleware(
                Authenticate,
                authenticator=authenticator,
                skip_paths=UNGUARDED_PATHS,
                skip_prefixes=UNGUARDED_PREFIXES,
            )
        )
    if settings.rate_limit is not None:
        # after the Host check: a request refused for its Host spends no budget
        middleware.append(
            Middleware(RateLimiter, pool=pool, limit=settings.rate_limit, exempt_paths=EXEMPT_PATHS)
        )
    app = Starlette(
        middleware=middleware,
        routes=[
            *jobs.routes,
            *depth.routes,
            *queues.routes,
            *workers.routes,
            *schedules.routes,
            *stats.routes,
            *dashboard.routes,
            *session.routes,
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            *(metrics_api.routes if metrics is not None else []),
        ],
        exception_handlers={
            ApiError: api_error,
            HTTPException: _http_error,
            asyncpg.DataError: _refused_value,
            Exception: _unexpected_error,
        },
    )
    app.state.pool = pool
    app.state.settings = settings
    app.state.notifier = notifier
    app.state.metrics = metrics
    app.state.authenticator = authenticator
    return app
