"""Task registries the acceptance tests load into `aqueue serve --app tests.apps:...`."""

from __future__ import annotations

import asyncio
from typing import Any

from aqueue import JobContext, Registry

registry = Registry()


@registry.task("test.record")
async def record(payload: Any, ctx: JobContext) -> None:
    """Count every execution (outside the completion transaction: at-least-once shows
    here), and record the effect inside it, where a unique constraint would catch a
    second commit (exactly-once effects show there)."""
    await ctx.pool.execute("INSERT INTO executions (job_id) VALUES ($1)", ctx.job_id)
    if payload.get("sleep"):
        await asyncio.sleep(payload["sleep"])
    conn = await ctx.transaction()
    await conn.execute("INSERT INTO processed (job_id) VALUES ($1)", ctx.job_id)
