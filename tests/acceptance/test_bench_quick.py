"""The benchmark harness runs end to end (`python -m bench --quick`) and every run in it is
valid: each job completed exactly once, for every system. Correctness only, never speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = {"aqueue", "pgqueuer", "procrastinate", "sql"}

pytestmark = pytest.mark.timeout(240)


def test_bench_quick_runs_every_system_and_every_run_is_valid(pg_url: str, tmp_path: Path):
    pytest.importorskip("pgqueuer")
    pytest.importorskip("procrastinate")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--database-url", pg_url,
         "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=200,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    results = tmp_path / "latest.json"
    assert results.is_file(), output
    doc = json.loads(results.read_text())

    invalid = [
        f"{r['label']} {r['scenario']}: {r['errors']}" for r in doc["runs"] if not r["valid"]
    ]
    assert not invalid, invalid
    assert doc["valid"] is True
    assert proc.returncode == 0, output

    ran = {r["system"] for r in doc["runs"]}
    assert ran == SYSTEMS, ran
    # every scenario ran for every system it applies to, with its measurement present
    by_scenario: dict[str, set[str]] = {}
    for r in doc["runs"]:
        by_scenario.setdefault(r["scenario"], set()).add(r["system"])
        assert any(v is not None for v in r["metrics"].values()), r
    queues = {"aqueue", "pgqueuer", "procrastinate"}
    assert by_scenario.get("load_latency") == queues, by_scenario.get("load_latency")
    # and the database's own pickup: LISTEN, then one bare claim
    assert by_scenario.get("pickup_latency") == queues | {"sql"}, by_scenario
    # the plain-SQL ceiling: enqueues (bare INSERT, COPY) and drains (pgbench)
    for scenario in ("enqueue_single", "enqueue_batch", "drain_c10", "drain_c50", "drain_2proc"):
        assert by_scenario.get(scenario) == queues | {"sql"}, (scenario, by_scenario)
    for r in doc["runs"]:
        if r["scenario"] == "pickup_latency":
            # timed from the enqueue call's return: after its start, so never longer
            committed, whole = r["metrics"]["committed_p50_ms"], r["metrics"]["p50_ms"]
            assert committed is not None and 0 < committed <= whole, r
    # the other ways of driving and of measuring the enqueues run those scenarios alone
    labels = {r["label"]: set() for r in doc["runs"]}
    for r in doc["runs"]:
        labels[r["label"]].add(r["scenario"])
    assert labels["aqueue:connection"] == {"enqueue_single"}, labels
    assert labels["sql:same_row"] == {"enqueue_single", "enqueue_batch"}, labels
    # the pickup floor again, with aqueue's claim statement and schema
    assert labels["sql:aqueue_claim"] == {"pickup_latency"}, labels
    assert by_scenario.get("http_enqueue") == {"aqueue"}
    assert by_scenario.get("memory") == {"aqueue"}

    report = (tmp_path / "latest.md").read_text()
    assert report.startswith("# aqueue benchmark results")
    assert "a bare INSERT (or COPY) of aqueue's own row" in report
    assert (tmp_path / "latest.png").stat().st_size > 0
