"""Benchmark harness: aqueue against pgqueuer, procrastinate and plain SQL, in one run.

Run it with ``python -m bench`` (see bench/README.md)."""
