"""`python -m bench --baseline REV`: an earlier aqueue revision measured beside the working
tree's in one run. Its runs must be valid, must have loaded aqueue only from that
revision (never the working tree, whatever an editable install or the current directory
offers), and the run must leave no temporary files behind. Correctness only, never speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(180)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def _bench(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_baseline_runs_beside_aqueue_and_loads_only_the_revision(pg_url: str, tmp_path: Path):
    if not (ROOT / ".git").exists():
        pytest.skip("--baseline needs a git checkout")
    sha, short = _git("rev-parse", "HEAD"), _git("rev-parse", "--short", "HEAD")
    label = f"aqueue@{short}"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    scenarios = ("enqueue_single", "drain_c10", "pickup_latency")
    proc = _bench(
        "--quick", "--baseline", "HEAD", "--systems", "aqueue",
        "--scenarios", ",".join(scenarios), "--database-url", pg_url, "--out", str(out),
        env=_env(TMPDIR=str(tmp)), timeout=150,
    )  # fmt: skip
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (out / "latest.json").is_file(), output
    doc = json.loads((out / "latest.json").read_text())

    invalid = [
        f"{r['label']} {r['scenario']}: {r['errors']}" for r in doc["runs"] if not r["valid"]
    ]
    assert not invalid, invalid
    assert doc["valid"] is True and proc.returncode == 0, output
    # aqueue's one-connection variant runs beside it on the enqueue scenario, from the
    # working tree; the baseline is the revision alone
    assert doc["labels"] == ["aqueue", label, "aqueue:connection"]
    ran = {(r["label"], r["scenario"]) for r in doc["runs"]}
    expected = {(x, s) for x in ("aqueue", label) for s in scenarios}
    assert ran == expected | {("aqueue:connection", "enqueue_single")}, ran
    for r in doc["runs"]:
        for name, v in r["metrics"].items():
            assert v is not None, (name, r)
            # after the enqueue's return: a handler may start before the producer's process
            # has read the commit's answer (a loaded machine), so not always above 0
            assert v > 0 or name.startswith("committed_"), (name, r)

    base = doc["meta"]["baseline"]
    assert (base["rev"], base["sha"], base["label"]) == ("HEAD", sha, label)
    assert doc["meta"]["aqueue_from"] == str(ROOT / "aqueue")
    for r in doc["runs"]:
        code = r["details"].get("code")
        if r["label"] != label:
            assert code is None, r
            continue
        # exported under this run's TMPDIR, not the working tree (nor its editable install)
        assert code["revision"] == sha
        assert code["files_matching_revision_blobs"] > 0
        for where in code["aqueue_from"]:
            assert Path(where).is_relative_to(tmp), where
        # the producer subprocess, plus the worker where one runs
        assert code["processes_checked"] == (1 if r["scenario"] == "enqueue_single" else 2), r

    for row in doc["summary"]:
        assert row["ratio_aqueue_over"].get(label), row
    table = (out / "latest.md").read_text()
    assert f"| aqueue | {label} | aqueue:connection | aqueue/{label} |" in table
    assert sha in table
    # the exported revision, its logs and record files went with the run
    assert list(tmp.iterdir()) == []


def test_a_bad_baseline_is_one_line_and_a_nonzero_exit(pg_url: str, tmp_path: Path):
    proc = _bench(
        "--quick", "--baseline", "no-such-revision-xyz", "--systems", "aqueue",
        "--scenarios", "enqueue_single", "--database-url", pg_url, "--out", str(tmp_path),
        env=_env(), timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-revision-xyz" in lines[0], proc.stderr
    assert not (tmp_path / "latest.json").exists()


def test_the_driver_refuses_to_run_an_aqueue_from_elsewhere(tmp_path: Path):
    """The guard every baseline subprocess passes: with the working tree's aqueue first on
    the path instead of the revision's, it stops with exit 3 before running anything."""
    elsewhere = tmp_path / "revision"
    elsewhere.mkdir()
    cmd = [sys.executable, "-P", "-m", "bench.aqueue_driver", "aqueue", "--help"]
    refused = subprocess.run(
        cmd, cwd=tmp_path, env=_env(BENCH_AQUEUE_ROOT=str(elsewhere)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 3, refused.stderr
    assert "refusing to run the wrong code" in refused.stderr
    assert "usage: aqueue" not in refused.stdout

    accepted = subprocess.run(
        cmd, cwd=tmp_path, env=_env(BENCH_AQUEUE_ROOT=str(ROOT)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr
    assert "usage: aqueue" in accepted.stdout


TAMPER = """
import sys
import bench.cli

exported = bench.cli.export


def export_then_edit(*args):
    baseline = exported(*args)
    cli = baseline.root / "aqueue" / "cli.py"
    cli.write_text(cli.read_text() + "# not the revision's any more\\n")
    return baseline


bench.cli.export = export_then_edit
sys.exit(bench.cli.main(sys.argv[1:]))
"""


def test_a_process_running_other_code_than_the_revision_makes_its_run_invalid(
    pg_url: str, tmp_path: Path
):
    """The blob check bites: the exported cli.py edited after the export (loaded by the API
    process only), and that run is INVALID, naming the file."""
    if not (ROOT / ".git").exists():
        pytest.skip("--baseline needs a git checkout")
    proc = subprocess.run(
        [sys.executable, "-c", TAMPER, "--quick", "--baseline", "HEAD", "--systems", "",
         "--scenarios", "http_enqueue", "--database-url", pg_url, "--out", str(tmp_path)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert proc.returncode == 1, output
    [run] = doc["runs"]
    assert run["label"].startswith("aqueue@") and not run["valid"], run
    assert any("aqueue/cli.py loaded with blob" in e for e in run["errors"]), run["errors"]
