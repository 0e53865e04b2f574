"""``--baseline REV``: an earlier aqueue revision measured beside the working tree's in the
same run. The revision's aqueue/ and sql/ (nothing else: the harness stays the current
one) are exported with `git archive` into the run's temporary directory, which the run
removes on exit and on Ctrl-C; that revision's code then runs only in subprocesses
(bench/aqueue_driver.py), never in the bench process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.systems.base import BENCH_ROOT

# What the aqueue package needs at run time: the code and, beside it, the schema and the
# statements (aqueue.db.sql_dir() looks for sql/ next to the package in a source tree).
EXPORTED = ("aqueue", "sql")


@dataclass(frozen=True)
class Baseline:
    rev: str  # as given on the command line
    sha: str
    short: str
    subject: str
    root: Path  # holds the revision's aqueue/ and sql/, first on its subprocesses' path
    blobs: dict[str, str] = field(repr=False)  # path -> git blob id in that revision
    differs: list[str] = field(default_factory=list)  # its files unlike the working tree

    @property
    def label(self) -> str:
        return f"aqueue@{self.short}"

    def env(self, record_dir: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        # The revision before the harness (BENCH_ROOT holds the working tree's aqueue/ too);
        # an editable install of the working tree is a meta-path finder consulted only
        # after these path entries, and the driver checks the result either way.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.root), str(BENCH_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env["BENCH_AQUEUE_ROOT"] = str(self.root)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if record_dir is not None:
            env["BENCH_RECORD_DIR"] = record_dir
        return env

    def command(self, *args: str) -> list[str]:
        # -P: no current directory (perhaps the working tree) at the front of sys.path
        return [sys.executable, "-P", "-m", "bench.aqueue_driver", *args]

    def check_code(self, report: dict[str, Any]) -> list[str]:
        """Errors unless every aqueue file a subprocess loaded is this revision's, byte for
        byte (its git blob id), and nothing came from anywhere else."""
        errors = [f"{self.label}: loaded {x}" for x in report.get("outside", [])]
        if not report.get("files"):
            errors.append(f"{self.label}: the subprocess reported no aqueue file loaded")
        for path, blob in report.get("files", {}).items():
            want = self.blobs.get(path)
            if want != blob:
                errors.append(
                    f"{self.label}: {path} loaded with blob {blob[:10]}, the revision has "
                    f"{want[:10] if want else 'no such file'}"
                )
        return errors

    def meta(self) -> dict[str, Any]:
        return {
            "rev": self.rev,
            "sha": self.sha,
            "label": self.label,
            "subject": self.subject,
            "files_differing_from_working_tree": self.differs,
            "runs_from": "git archive of aqueue/ and sql/ into the run's temporary "
            "directory, first on PYTHONPATH of subprocesses started with python -P",
        }


def _git(*args: str, text: bool = True) -> subprocess.CompletedProcess[Any]:
    return subprocess.run(
        ["git", "-C", str(BENCH_ROOT), *args],
        capture_output=True, text=text, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def resolve(rev: str) -> tuple[str, str, str]:
    """(sha, short sha, subject) of ``rev``; SystemExit with one line when it is not a
    commit of this repository holding aqueue/."""
    try:
        top = _git("rev-parse", "--show-toplevel")
    except FileNotFoundError:
        raise SystemExit("--baseline: git is not installed") from None
    if top.returncode != 0:
        raise SystemExit(f"--baseline: {BENCH_ROOT} is not a git checkout")
    found = _git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    if found.returncode != 0 or not found.stdout.strip():
        raise SystemExit(f"--baseline: {rev!r} is not a commit of {BENCH_ROOT}")
    sha = found.stdout.strip()
    if _git("cat-file", "-e", f"{sha}:aqueue/__init__.py").returncode != 0:
        raise SystemExit(f"--baseline: {rev!r} ({sha[:10]}) has no aqueue/ package")
    short = _git("rev-parse", "--short", sha).stdout.strip()
    subject = _git("log", "-1", "--format=%s", sha).stdout.strip()
    return sha, short, subject


def export(rev: str, resolved: tuple[str, str, str], into: Path) -> Baseline:
    """Write the aqueue/ and sql/ of ``rev`` (as :func:`resolve` found it) under ``into``."""
    sha, short, subject = resolved
    listing = _git("ls-tree", "-r", sha, "--", *EXPORTED)
    if listing.returncode != 0:
        raise SystemExit(f"--baseline: git ls-tree {sha[:10]} failed: {listing.stderr.strip()}")
    blobs: dict[str, str] = {}
    for line in listing.stdout.splitlines():
        info, _, path = line.partition("\t")
        _mode, kind, blob = info.split()
        if kind == "blob":
            blobs[path] = blob
    present = [p for p in EXPORTED if any(b.startswith(p + "/") for b in blobs)]
    archive = _git("archive", "--format=tar", sha, "--", *present, text=False)
    if archive.returncode != 0:
        raise SystemExit(f"--baseline: git archive {sha[:10]} failed: {archive.stderr!r}")
    root = into / f"baseline-{short}"
    root.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(root, filter="data")
    # what "aqueue" (the working tree, uncommitted edits and new files included) runs instead
    diff = _git("diff", "--name-only", sha, "--", *EXPORTED)
    new = _git("ls-files", "--others", "--exclude-standard", "--", *EXPORTED)
    differs = sorted(set(diff.stdout.split()) | set(new.stdout.split()))
    return Baseline(rev, sha, short, subject, root.resolve(), blobs, differs)


def read_origins(record_dir: str) -> list[dict[str, Any]]:
    """The reports the driver's CLI mode wrote on exit, one per process."""
    out = []
    for name in sorted(os.listdir(record_dir)):
        if name.startswith("aqueue-origin-") and name.endswith(".json"):
            out.append(json.loads(Path(record_dir, name).read_text()))
    return out
