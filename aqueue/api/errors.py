"""Errors the API answers with: a status code and a JSON body that says what is wrong."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Match


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def allowed_methods(request: Request) -> str:
    """The Allow header of a 405: every method the app's routes take at the request's path.
    Starlette's own names only the first route matching the path, where paths such as
    /jobs are a route per method."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def is_json_media_type(content_type: str | None) -> bool:
    """application/json or application/<anything>+json, parameters (charset) allowed."""
    if content_type is None:
        return False
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, or an ApiError (415 not declared JSON, 413 too large,
    400 malformed)."""
    content_type = request.headers.get("content-type")
    if not is_json_media_type(content_type):
        # A browser sends text/plain, form and multipart bodies cross-site without asking
        # (no CORS preflight): requiring JSON keeps any web page from enqueueing jobs.
        sent = f"Content-Type {content_type[:100]!r}" if content_type else "no Content-Type"
        raise ApiError(
            415, f"the body must be JSON: send Content-Type: application/json (got {sent})"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {declared} bytes; the limit is {limit}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"the body is larger than the limit of {limit} bytes")
    if not body.strip():
        raise ApiError(400, "the body is empty; send a JSON object")
    try:
        return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, too many digits, NaN
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value
