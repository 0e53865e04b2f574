"""Queue routes: list queues with their depths, pause and resume one, retry its dead."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aqueue import control
from aqueue.api.auth import requires
from aqueue.api.errors import ApiError, read_json
from aqueue.model import ValidationError, check_name
from aqueue.settings import Settings


def _queue(request: Request) -> str:
    try:
        return check_name("queue", request.path_params["name"])
    except ValidationError as exc:
        raise ApiError(400, str(exc)) from None


@requires("read")
async def list_queues(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    infos = await control.queues(request.app.state.pool, settings.heartbeat_seconds)
    return JSONResponse({"queues": [info.to_json() for info in infos]})


@requires("admin")
async def pause_queue(request: Request) -> JSONResponse:
    queue = _queue(request)
    await control.pause(request.app.state.pool, queue)
    return JSONResponse({"name": queue, "paused": True})


@requires("admin")
async def resume_queue(request: Request) -> JSONResponse:
    queue = _queue(request)
    await control.resume(request.app.state.pool, queue)
    return JSONResponse({"name": queue, "paused": False})


@requires("admin")
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


LIMIT_FIELDS = control.LIMIT_FIELDS


@requires("admin")
async def put_limits(request: Request) -> JSONResponse:
    """`{"rate_limit": "20/s", "key_concurrency": 2, "key_limits": {"customer:vip": 5},
    "fair_weights": {"A": 3, "B": 1}}`: the fields given are set (null removes one), the
    others kept. Answers with the queue's limits as they now stand."""
    queue = _queue(request)
    data = await read_json(request, 1_048_576)
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object")
    unknown = sorted(set(data) - set(LIMIT_FIELDS))
    if unknown:
        raise ApiError(
            422, f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(LIMIT_FIELDS)}"
        )
    if not data:
        raise ApiError(422, f"name at least one of: {', '.join(LIMIT_FIELDS)}")
    pool = request.app.state.pool
    try:
        await control.set_limits(pool, queue, **data)
    except ValidationError as exc:
        raise ApiError(422, str(exc)) from None
    return JSONResponse({"name": queue, "limits": await control.limits(pool, queue)})


routes = [
    Route("/queues/{name}/limits", put_limits, methods=["PUT"]),
    Route("/queues", list_queues, methods=["GET"]),
    Route("/queues/{name}/pause", pause_queue, methods=["POST"]),
    Route("/queues/{name}/resume", resume_queue, methods=["POST"]),
    Route("/queues/{name}/retry-dead", retry_dead, methods=["POST"]),
]
