"""The producer side of the scenarios: the timed enqueue loops and the arrival schedules of
the latency runs. One copy of each loop, run in the bench process for the systems under
test and inside a subprocess (bench/aqueue_driver.py) for an earlier aqueue revision, so
both sides of a before/after comparison are timed by the same code."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class Producer(Protocol):
    async def enqueue_one(self, payload: dict[str, Any]) -> None: ...

    async def enqueue_many(self, payloads: list[dict[str, Any]]) -> None: ...


async def enqueue_single(q: Producer, n: int, first: int = 0) -> dict[str, Any]:
    """``n`` jobs numbered from ``first`` (a slice of an interleaved run starts further on)."""
    t0 = time.perf_counter()
    for i in range(first, first + n):
        await q.enqueue_one({"i": i, "t": 0})
    return {"seconds": time.perf_counter() - t0}


async def enqueue_batch(q: Producer, n: int, batch: int, first: int = 0) -> dict[str, Any]:
    t0 = time.perf_counter()
    end = first + n
    for start in range(first, end, batch):
        await q.enqueue_many([{"i": i, "t": 0} for i in range(start, min(end, start + batch))])
    return {"seconds": time.perf_counter() - t0}


async def prefill(q: Producer, n: int, batch: int) -> dict[str, Any]:
    for start in range(0, n, batch):
        await q.enqueue_many([{"i": i, "t": 0} for i in range(start, min(n, start + batch))])
    return {"jobs": n}


async def warm_up(q: Producer) -> dict[str, Any]:
    await q.enqueue_one({"i": -1, "t": time.time()})
    return {"jobs": 1}


async def pickup(q: Producer, n: int, rate: float) -> dict[str, Any]:
    """``n`` jobs one by one at ``rate``/s, each stamped with time.time() just before its
    enqueue call (the handler's start time minus that stamp is the latency). ``returned``:
    time.time() once each call returned, its commit done (the latency from there leaves
    out the enqueue's own durable commit)."""
    t0 = time.monotonic()
    returned = []
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await q.enqueue_one({"i": i, "t": time.time()})
        returned.append(time.time())
    return {"sent": n, "returned": returned}


async def load(q: Producer, rate: float, duration: float, tick: float) -> dict[str, Any]:
    """Arrivals at ``rate``/s for ``duration`` s: every ``tick``, the jobs due so far, in one
    call (batched when more than one is due)."""
    sent = 0
    t0 = time.monotonic()
    while True:
        now = time.monotonic()
        if now - t0 >= duration:
            break
        due = int((now - t0) * rate) - sent
        if due > 0:
            t = time.time()
            payloads = [{"i": sent + k, "t": t} for k in range(due)]
            if due == 1:
                await q.enqueue_one(payloads[0])
            else:
                await q.enqueue_many(payloads)
            sent += due
        await asyncio.sleep(
            max(0.0, t0 + (math.floor((now - t0) / tick) + 1) * tick - time.monotonic())
        )
    return {"sent": sent, "rate": sent / (time.monotonic() - t0)}


PRODUCERS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "enqueue_single": enqueue_single,
    "enqueue_batch": enqueue_batch,
    "prefill": prefill,
    "warm_up": warm_up,
    "pickup": pickup,
    "load": load,
}
