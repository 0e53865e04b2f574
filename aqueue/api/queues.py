"""Queue routes: list queues with their depths, pause and resume one, retry its dead."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aqueue import control
from aqueue.api.errors import ApiError, read_json
from aqueue.model import ValidationError, check_name
from aqueue.settings import Settings


def _queue(request: Request) -> str:
    try:
        return check_name("queue", request.path_params["name"])
    except ValidationError as exc:
        raise ApiError(400, str(exc)) from None


async def list_queues(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    infos = await control.queues(request.app.state.pool, settings.heartbeat_seconds)
    return JSONResponse({"queues": [info.to_json() for info in infos]})


async def pause_queue(request: Request) -> JSONResponse:
    queue = _queue(request)
    await control.pause(request.app.state.pool, queue)
    return JSONResponse({"name": queue, "paused": True})


async def resume_queue(request: Request) -> JSONResponse:
    queue = _queue(request)
    await control.resume(request.app.state.pool, queue)
    return JSONResponse({"name": queue, "paused": False})


async def retry_dead(request: Request) -> JSONResponse:
    """`{"type": "x"}` (optional) retries only the dead jobs of that type."""
    queue = _queue(request)
    type_ = None
    if await request.body():
        data = await read_json(request, 4096)
        if not isinstance(data, dict) or set(data) - {"type"}:
            raise ApiError(400, 'the body must be {} or {"type": "<job type>"}')
        type_ = data.get("type")
    try:
        count = await control.retry_dead(request.app.state.pool, queue, type_)
    except ValidationError as exc:
        raise ApiError(400, str(exc)) from None
    return JSONResponse({"name": queue, "type": type_, "retried": count})


# what PUT /queues/{name}/limits accepts now; the other limits of the design (per-key
# concurrency caps, fair shares) are refused by name until they exist
LIMIT_FIELDS = frozenset({"rate_limit"})
NOT_YET = frozenset({"key_concurrency", "key_limits", "fair_weights"})


async def put_limits(request: Request) -> JSONResponse:
    """`{"rate_limit": "20/s"}` (or `N/min`, `N/h`; null removes it)."""
    queue = _queue(request)
    data = await read_json(request, 65_536)
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object")
    later = sorted(set(data) & NOT_YET)
    if later:
        raise ApiError(422, f"not supported in this version yet: {', '.join(later)}")
    unknown = sorted(set(data) - LIMIT_FIELDS)
    if unknown:
        raise ApiError(422, f"unknown field(s): {', '.join(unknown)}; allowed: rate_limit")
    rate = data.get("rate_limit")
    if rate is not None and not isinstance(rate, str):
        raise ApiError(422, "'rate_limit' must be a string such as \"20/s\", or null")
    try:
        await control.set_rate_limit(request.app.state.pool, queue, rate)
    except ValidationError as exc:
        raise ApiError(422, str(exc)) from None
    return JSONResponse({"name": queue, "limits": {"rate_limit": rate}})


routes = [
    Route("/queues/{name}/limits", put_limits, methods=["PUT"]),
    Route("/queues", list_queues, methods=["GET"]),
    Route("/queues/{name}/pause", pause_queue, methods=["POST"]),
    Route("/queues/{name}/resume", resume_queue, methods=["POST"]),
    Route("/queues/{name}/retry-dead", retry_dead, methods=["POST"]),
]
