"""Queue depth for autoscalers: per queue, the jobs due and waiting for a worker and the
age of the oldest, in one cheap statement, keyed by queue name so that a JSON path such as
`queues.email.pending` reads one number (KEDA's metrics-api trigger, a script)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aqueue import control
from aqueue.api.auth import requires
from aqueue.api.errors import ApiError
from aqueue.model import ValidationError


def _named_queues(request: Request) -> list[str]:
    """`?queue=a&queue=b` or `?queue=a,b`; none: every queue."""
    unknown = sorted(set(request.query_params) - {"queue"})
    if unknown:
        raise ApiError(400, f"unknown query parameter(s): {', '.join(unknown)}; allowed: queue")
    names = (
        name.strip() for value in request.query_params.getlist("queue") for name in value.split(",")
    )
    return list(dict.fromkeys(name for name in names if name))


@requires("read")
async def queue_depths(request: Request) -> JSONResponse:
    try:
        depths = await control.depths(request.app.state.pool, _named_queues(request))
    except ValidationError as exc:
        raise ApiError(400, str(exc)) from None
    return JSONResponse({"queues": {d.name: d.to_json() for d in depths}})


routes = [Route("/queues/depth", queue_depths, methods=["GET"])]
