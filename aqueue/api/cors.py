"""Cross-origin access for the web pages of the origins `--cors-origins` names, and for no
other: off by default (no Access-Control-* header on any response). Starlette's
CORSMiddleware, for exact origins, without credentials (a page elsewhere never rides on
a browser's cookies or HTTP authentication here), with the methods the API's routes take
and the request headers it reads."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from aqueue.api.errors import error_response

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Content-Type: the JSON bodies; Authorization: API tokens. The API reads no other request
# header a page would set (idempotency keys travel in the body).
HEADERS = ("Authorization", "Content-Type")


class Cors(CORSMiddleware):
    """No `expose_headers`: Starlette adds those to every response that carries an Origin,
    allowed or not. A preflight from an origin not allowed gets a JSON 403 without any
    CORS header (Starlette's is a plain-text 400 that lists the methods and headers);
    one asking for a method or header not allowed, a JSON 400 saying which."""

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        super().__init__(
            app,
            allow_origins=tuple(origins),
            allow_methods=METHODS,
            allow_headers=HEADERS,
            allow_credentials=False,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        origin = request_headers["origin"]
        if not self.is_allowed_origin(origin):
            return error_response(
                403,
                f"the origin {origin[:100]!r} may not call this API from its pages "
                "(aqueue serve --cors-origins lists those that may)",
            )
        answer = super().preflight_response(request_headers)
        if answer.status_code == 200:
            return answer
        refused = bytes(answer.body).decode().removeprefix("Disallowed CORS ")
        response = error_response(
            400,
            f"cross-origin {refused} not allowed: methods {', '.join(METHODS)}; headers "
            f"{', '.join(HEADERS)} (and the CORS-safelisted ones)",
        )
        response.headers.update(
            {k: v for k, v in answer.headers.items() if k.lower().startswith("access-control-")}
        )
        return response
