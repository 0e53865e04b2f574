"""The metrics role: GET /metrics (and GET /healthz) on a port of its own
(`--metrics-port`, on `--host`), for processes that run no api role, such as a fleet of
`--roles worker` processes. A minimal Starlette app under uvicorn (server.HttpRole), on
the process's event loop; the same Metrics object as everything else in the process.

With the api role too, both answer /metrics (the same registry): scrape one of them."""

from __future__ import annotations

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from aqueue.api import metrics as metrics_api
from aqueue.api.app import PROBE_PATHS, api_error, healthz
from aqueue.api.auth import Authenticate, Authenticator
from aqueue.api.errors import ApiError
from aqueue.metrics import Metrics
from aqueue.settings import Settings


def create_metrics_app(pool: asyncpg.Pool, metrics: Metrics, settings: Settings) -> Starlette:
    """No Host check and no rate limit: it serves nothing but the process's metrics. With
    authentication on, /metrics needs a token with the read scope, as on the api."""
    middleware = []
    if settings.auth_enabled:
        authenticator = Authenticator(pool, settings.api_token)
        middleware.append(
            Middleware(Authenticate, authenticator=authenticator, skip_paths=PROBE_PATHS)
        )
    app = Starlette(
        middleware=middleware,
        routes=[*metrics_api.routes, Route("/healthz", healthz, methods=["GET"])],
        exception_handlers={ApiError: api_error},
    )
    app.state.pool = pool
    app.state.metrics = metrics
    app.state.settings = settings
    return app
