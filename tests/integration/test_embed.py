"""Embedding a worker in your own asyncio application (a FastAPI lifespan, say)."""

from __future__ import annotations

import asyncio
from typing import Any

import aqueue
import aqueue.embed
from aqueue import JobContext, JobStatus, Registry, enqueue
from tests.helpers import wait_status


async def test_an_embedded_worker_runs_jobs_and_drains_when_the_block_ends(pool, db_url):
    registry = Registry()
    finished: list[str] = []

    @registry.task("app.slow")
    async def slow(payload: Any, ctx: JobContext) -> str:
        await asyncio.sleep(0.5)
        finished.append(payload["name"])
        return "done"

    async with aqueue.embed.worker(db_url, registry, queues={"default": 5}) as embedded:
        quick = await enqueue(embedded.pool, "demo.echo", {"x": 1})
        result = await aqueue.wait(embedded.pool, quick.id, timeout=10, notifier=embedded.notifier)
        assert result.status is JobStatus.COMPLETED
        draining = await enqueue(embedded.pool, "app.slow", {"name": "last"})
        await wait_status(pool, draining.id, JobStatus.RUNNING)
    # leaving the block waited for the running job (graceful shutdown), as serve does
    assert finished == ["last"]
    assert (await aqueue.workers(pool))[0].state == "stopped"


async def test_embedding_refuses_a_database_without_the_schema(empty_db_url):
    import pytest

    from aqueue.db import SchemaError

    with pytest.raises(SchemaError):
        async with aqueue.embed.worker(empty_db_url, Registry()):
            pass
