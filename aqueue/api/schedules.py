"""Schedule routes: create, list, read, change (PATCH), delete cron schedules."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aqueue import schedules
from aqueue.api.auth import requires
from aqueue.api.errors import ApiError, read_json
from aqueue.model import ValidationError
from aqueue.settings import Settings

BODY_LIMIT_OVERHEAD = 16_384


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["schedule_id"])
    except ValueError:
        raise ApiError(400, "not a valid schedule id (a UUID)") from None


async def _body(request: Request) -> dict:
    limit = _settings(request).max_payload_bytes
    data = await read_json(request, limit + BODY_LIMIT_OVERHEAD)
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object")
    return data


@requires("admin")
async def create_schedule(request: Request) -> JSONResponse:
    data = await _body(request)
    try:
        schedule = await schedules.create(
            request.app.state.pool, data, _settings(request).max_payload_bytes
        )
    except ValidationError as exc:
        raise ApiError(422, str(exc)) from None
    except schedules.ScheduleNameTaken as exc:
        raise ApiError(409, str(exc)) from None
    return JSONResponse(schedule.to_json(), status_code=201)


@requires("read")
async def list_schedules(request: Request) -> JSONResponse:
    found = await schedules.list_all(request.app.state.pool)
    return JSONResponse({"schedules": [s.to_json() for s in found]})


@requires("read")
async def get_schedule(request: Request) -> JSONResponse:
    try:
        schedule = await schedules.get(request.app.state.pool, _id(request))
    except schedules.ScheduleNotFound as exc:
        raise ApiError(404, str(exc)) from None
    return JSONResponse(schedule.to_json())


@requires("admin")
async def patch_schedule(request: Request) -> JSONResponse:
    schedule_id = _id(request)
    data = await _body(request)
    try:
        schedule = await schedules.update(
            request.app.state.pool, schedule_id, data, _settings(request).max_payload_bytes
        )
    except schedules.ScheduleNotFound as exc:
        raise ApiError(404, str(exc)) from None
    except ValidationError as exc:
        raise ApiError(422, str(exc)) from None
    except schedules.ScheduleNameTaken as exc:
        raise ApiError(409, str(exc)) from None
    return JSONResponse(schedule.to_json())


@requires("admin")
async def delete_schedule(request: Request) -> Response:
    try:
        await schedules.delete(request.app.state.pool, _id(request))
    except schedules.ScheduleNotFound as exc:
        raise ApiError(404, str(exc)) from None
    return Response(status_code=204)


routes = [
    Route("/schedules", create_schedule, methods=["POST"]),
    Route("/schedules", list_schedules, methods=["GET"]),
    Route("/schedules/{schedule_id}", get_schedule, methods=["GET"]),
    Route("/schedules/{schedule_id}", patch_schedule, methods=["PATCH"]),
    Route("/schedules/{schedule_id}", delete_schedule, methods=["DELETE"]),
]
