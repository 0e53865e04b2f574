"""aqueue's benchmark handler: ``aqueue serve --app bench.tasks:registry``."""

from __future__ import annotations

from typing import Any

from aqueue import Registry
from bench.recorder import record

registry = Registry()


@registry.task("bench.noop")
async def noop(payload: Any, ctx: Any) -> None:
    record(payload)
