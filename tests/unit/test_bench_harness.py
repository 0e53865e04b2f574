"""The benchmark harness's worker processes: stopping one that is still starting."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.scenarios import Workers

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
