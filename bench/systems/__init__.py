"""One adapter per queue system, each driving the library through its public API."""

from __future__ import annotations

from bench.systems.base import System


def make_systems(names: list[str], tuned: bool) -> list[System]:
    """The systems (and variants) to run, in the order they interleave within a repetition."""
    out: list[System] = []
    for name in names:
        if name == "aqueue":
            from bench.systems.aqueue_system import AqueueConnectionSystem, AqueueSystem

            out += [AqueueSystem(), AqueueConnectionSystem()]
        elif name == "pgqueuer":
            from bench.systems.pgqueuer_system import PgqueuerSystem

            out.append(PgqueuerSystem("default"))
            if tuned:
                out.append(PgqueuerSystem("tuned"))
        elif name == "procrastinate":
            from bench.systems.procrastinate_system import ProcrastinateSystem

            out.append(ProcrastinateSystem("default"))
            if tuned:
                out.append(ProcrastinateSystem("tuned"))
        elif name == "sql":
            from bench.systems.sql_system import (
                SqlAqueueClaimSystem,
                SqlSameRowSystem,
                SqlSystem,
            )

            out += [SqlSystem(), SqlSameRowSystem(), SqlAqueueClaimSystem()]
        else:
            raise SystemExit(f"unknown system {name!r} (aqueue, pgqueuer, procrastinate, sql)")
    return out
