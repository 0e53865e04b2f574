"""Stats routes: finished attempts per queue and minute, for the dashboard's charts."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aqueue import store
from aqueue.api.auth import requires
from aqueue.api.errors import ApiError

DEFAULT_MINUTES = 60
# a day: the statement reads the window's part of job_events, so the window is bounded
MAX_MINUTES = 1440


def _minutes(value: str | None) -> int:
    if value is None:
        return DEFAULT_MINUTES
    digits = value.isascii() and value.isdigit() and len(value) <= len(str(MAX_MINUTES))
    if not digits or not 1 <= int(value) <= MAX_MINUTES:
        raise ApiError(
            400, f"minutes must be a whole number from 1 to {MAX_MINUTES}, got {value[:40]!r}"
        )
    return int(value)


@requires("read")
async def attempt_stats(request: Request) -> JSONResponse:
    """`GET /stats?minutes=60`: per queue, per minute (the current one last), the attempts
    that completed and those that failed (RETRY or DEAD)."""
    unknown = sorted(set(request.query_params) - {"minutes"})
    if unknown:
        raise ApiError(400, f"unknown query parameter(s): {', '.join(unknown)}; allowed: minutes")
    minutes = _minutes(request.query_params.get("minutes"))
    stats = await store.attempt_stats(request.app.state.pool, minutes)
    return JSONResponse(stats.to_json())


routes = [Route("/stats", attempt_stats, methods=["GET"])]
