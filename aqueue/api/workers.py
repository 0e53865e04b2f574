"""Worker routes: every aqueue process seen lately, alive, lost or stopped."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aqueue import control
from aqueue.api.auth import requires
from aqueue.settings import Settings


@requires("read")
async def list_workers(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    infos = await control.workers(request.app.state.pool, settings.heartbeat_seconds)
    return JSONResponse({"workers": [info.to_json() for info in infos]})


routes = [Route("/workers", list_workers, methods=["GET"])]
