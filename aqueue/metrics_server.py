"""The metrics role: GET /metrics (and GET /healthz) on a port of its own
(`--metrics-port`, on `--host`), for processes that run no api role, such as a fleet of
`--roles worker` processes. A minimal Starlette app under uvicorn (server.HttpRole), on
the process's event loop; the same Metrics object as everything else in the process.

With the api role too, both answer /metrics (the same registry): scrape one of them."""

from __future__ import annotations

import asyncpg
from starlette.applications import Starlette
from starlette.routing import Route

from aqueue.api import metrics as metrics_api
from aqueue.api.app import healthz
from aqueue.metrics import Metrics


def create_metrics_app(pool: asyncpg.Pool, metrics: Metrics) -> Starlette:
    """No Host check and no rate limit: it serves nothing but the process's metrics."""
    app = Starlette(routes=[*metrics_api.routes, Route("/healthz", healthz, methods=["GET"])])
    app.state.pool = pool
    app.state.metrics = metrics
    return app
