"""GET /metrics: this process's Prometheus metrics (see aqueue/metrics.py), the database
gauges refreshed first (at most once per cache period, shared by concurrent scrapes)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aqueue.api.auth import requires
from aqueue.metrics import CONTENT_TYPE_LATEST, Metrics


@requires("read")
async def metrics(request: Request) -> Response:
    exposed: Metrics = request.app.state.metrics
    text = await exposed.exposition(request.app.state.pool)
    return Response(text, media_type=CONTENT_TYPE_LATEST)


PATH = "/metrics"
routes = [Route(PATH, metrics, methods=["GET"])]
