"""What every benchmark handler calls: one line per execution, in a file per worker process.

Line format: ``<i> <start time.time()> <enqueue time or -1>``. The harness reads the files
after the worker processes exit, so it counts executions (exactly once per job) and computes
enqueue-to-start latencies the same way for every system. The file is flushed every half
second and on exit, so a worker killed before its exit handlers run shows up as missing
executions (an INVALID run), never as a fast one."""

from __future__ import annotations

import atexit
import os
import time
from typing import IO, Any

ENV_DIR = "BENCH_RECORD_DIR"

_fh: IO[str] | None = None
_last_flush = 0.0


def _open() -> IO[str]:
    global _fh
    directory = os.environ.get(ENV_DIR)
    if not directory:
        raise RuntimeError(f"{ENV_DIR} is not set: the bench handlers need it")
    _fh = open(os.path.join(directory, f"rec-{os.getpid()}.txt"), "a", buffering=1 << 16)
    atexit.register(close)
    return _fh


def record(payload: Any) -> None:
    global _last_flush
    now = time.time()
    fh = _fh or _open()
    i = payload.get("i", -1) if isinstance(payload, dict) else -1
    t = payload.get("t", -1) if isinstance(payload, dict) else -1
    fh.write(f"{i} {now:.6f} {t}\n")
    if now - _last_flush > 0.5:
        fh.flush()
        _last_flush = now


def close() -> None:
    global _fh
    if _fh is not None:
        _fh.flush()
        _fh.close()
        _fh = None


def read_records(directory: str) -> list[tuple[int, float, float]]:
    """All (i, start, enqueued_at) lines written by the worker processes in ``directory``."""
    out: list[tuple[int, float, float]] = []
    for name in sorted(os.listdir(directory)):
        if not name.startswith("rec-"):
            continue
        with open(os.path.join(directory, name)) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) != 3:
                    continue
                out.append((int(parts[0]), float(parts[1]), float(parts[2])))
    return out
