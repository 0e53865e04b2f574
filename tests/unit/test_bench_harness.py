"""The benchmark harness: its worker processes (stopping one that is still starting) and
the order its rounds run the systems in."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.scenarios import Workers, in_turn, slice_bounds

# A worker that, like any Python worker, spends a while starting (imports, connecting)
# before its SIGTERM handler is installed; from then on SIGTERM stops it cleanly.
SLOW_STARTER = """
import signal, sys, time
time.sleep(0.5)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(60)
"""


async def test_a_worker_stopped_while_starting_up_still_stops_gracefully(tmp_path: Path):
    # In drain_2proc one process can drain every job before the other is up; stopping
    # that one must not kill it with the signal it cannot handle yet (code -15).
    workers = Workers([[sys.executable, "-c", SLOW_STARTER]], str(tmp_path))
    workers.start()
    try:
        await workers.stop()
    finally:
        workers.kill()
    assert workers.errors == []
    assert workers.procs[0].returncode == 0


def test_each_system_goes_first_in_one_round_of_as_many_and_the_cycle_is_kept():
    systems = ["aqueue", "aqueue@base", "pgqueuer", "sql"]
    rounds = [in_turn(systems, rep) for rep in range(1, 5)]
    assert [r[0] for r in rounds] == systems
    for r in rounds:
        k = systems.index(r[0])
        assert r == systems[k:] + systems[:k]
    assert in_turn(systems, 5) == systems and in_turn([], 3) == []


def test_an_interleaved_enqueue_is_cut_into_whole_batches_that_cover_every_job_once():
    for n, slices, unit in ((200_000, 10, 1000), (5_000, 10, 1), (2_000, 2, 1000),
                            (2_500, 10, 1000), (7, 10, 1), (1_000, 10, 1000)):  # fmt: skip
        bounds = slice_bounds(n, slices, unit)
        assert [first for first, _ in bounds] == [sum(c for _, c in bounds[:i]) for i in
                                                  range(len(bounds))]  # fmt: skip
        assert sum(count for _, count in bounds) == n
        assert all(count > 0 for _, count in bounds)
        assert all(count % unit == 0 for _, count in bounds[:-1])
        assert len(bounds) <= slices
    assert slice_bounds(200_000, 10, 1000) == [(i * 20_000, 20_000) for i in range(10)]
