"""The procrastinate App both the producer and the worker processes use."""

from __future__ import annotations

from typing import Any

from procrastinate import App, PsycopgConnector

from bench.recorder import record


def make_app(url: str, pool: dict[str, Any] | None = None) -> App:
    app = App(connector=PsycopgConnector(conninfo=url, **(pool or {})))

    @app.task(name="bench.noop")
    async def noop(**kwargs: Any) -> None:
        record(kwargs)

    return app
