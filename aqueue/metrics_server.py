"""The metrics role: GET /metrics (and GET /healthz) on a port of its own
(`--metrics-port`, on `--host`), for processes that run no api role, such as a fleet of
`--roles worker` processes. A minimal Starlette app under uvicorn, on the process's event
loop; the same Metrics object as everything else in the process.

With the api role too, both answer /metrics (the same registry): scrape one of them."""

from __future__ import annotations

import socket

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aqueue.api import metrics as metrics_api
from aqueue.metrics import Metrics


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


def create_metrics_app(pool: asyncpg.Pool, metrics: Metrics) -> Starlette:
    """No Host check and no rate limit: it serves nothing but the process's metrics."""
    app = Starlette(routes=[*metrics_api.routes, Route("/healthz", healthz, methods=["GET"])])
    app.state.pool = pool
    app.state.metrics = metrics
    return app


class MetricsRole:
    name = "metrics"
    stop_seconds = 3.0  # uvicorn's graceful shutdown (1 s) and a margin

    def __init__(self, server: uvicorn.Server, sock: socket.socket | None) -> None:
        """`server`: uvicorn serving create_metrics_app's app, without signal handling of
        its own (see server._ApiServer); `sock`: bound by the server before startup (or
        None: uvicorn binds its config's host and port)."""
        self.server = server
        self.sock = sock

    async def run(self) -> None:
        await self.server.serve(sockets=[self.sock] if self.sock else None)

    def stop(self, now: bool = False) -> None:
        self.server.should_exit = True
        if now:
            self.server.force_exit = True
