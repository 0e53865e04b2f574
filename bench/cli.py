"""python -m bench: run every scenario for every system, interleaved, and write the results."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import secrets
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench import report
from bench.baseline import Baseline, export, resolve
from bench.dbutil import Databases, safe_name
from bench.scenarios import FULL, QUICK, SCENARIOS, Result, Runner, Scenario, applies, in_turn
from bench.systems import make_systems
from bench.systems.base import System

DEFAULT_SYSTEMS = "aqueue,pgqueuer,procrastinate,sql"
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark aqueue against pgqueuer, procrastinate and the plain-SQL "
        "ceiling on one PostgreSQL, in one run.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small job counts, 1 repetition, no tuned peer variants (< 1 min)",
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="a PostgreSQL server whose user may CREATE DATABASE (default: "
        "$DATABASE_URL, else an embedded PostgreSQL in .aqueue/bench)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="repetitions of each measurement (default 3, --quick 1)",
    )
    p.add_argument(
        "--systems", default=DEFAULT_SYSTEMS, help=f"comma-separated (default {DEFAULT_SYSTEMS})"
    )
    p.add_argument(
        "--scenarios",
        default=",".join(n for n, s in SCENARIOS.items() if not s.opt_in),
        help="comma-separated, default all but the opt-in "
        + ",".join(n for n, s in SCENARIOS.items() if s.opt_in)
        + ": "
        + ",".join(SCENARIOS),
    )
    p.add_argument(
        "--drain-jobs",
        type=int,
        default=None,
        help="jobs per drain (default 20,000, --quick 1,000); 100000 makes aqueue's drains "
        "last seconds, but pgqueuer at concurrency 10 slows to ~170 jobs/s and the SQL "
        "ceiling to ~3,500 on such a backlog",
    )
    p.add_argument(
        "--steady-seconds",
        type=float,
        default=None,
        help="how long steady_bloat offers jobs (default 600, --quick 10)",
    )
    tuned = p.add_mutually_exclusive_group()
    tuned.add_argument(
        "--tuned",
        dest="tuned",
        action="store_true",
        default=None,
        help="also run the peers' tuned variants (default unless --quick)",
    )
    tuned.add_argument("--no-tuned", dest="tuned", action="store_false")
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the aqueue of this git revision (main~3, a tag, a sha) as "
        "aqueue@<sha>, in every scenario aqueue runs: before/after from one run",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="directory for latest.json/.md/.png (default bench/results)",
    )
    return p.parse_args(argv)  # fmt: skip


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


async def run(args: argparse.Namespace) -> int:
    sizes = QUICK if args.quick else FULL
    if args.steady_seconds is not None:
        sizes = dataclasses.replace(sizes, steady_seconds=args.steady_seconds)
    if args.drain_jobs is not None:
        if args.drain_jobs < 1:
            raise SystemExit("--drain-jobs must be at least 1")
        sizes = dataclasses.replace(sizes, drain=args.drain_jobs)
    repeat = args.repeat or (1 if args.quick else 3)
    tuned = args.tuned if args.tuned is not None else not args.quick
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    systems = make_systems(names, tuned)
    scenarios = []
    for name in (s.strip() for s in args.scenarios.split(",") if s.strip()):
        if name not in SCENARIOS:
            raise SystemExit(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
        scenarios.append(SCENARIOS[name])
    # A bad revision is one line and exit 1 before any database is touched.
    resolved = resolve(args.baseline) if args.baseline else None

    embedded = None
    url = args.database_url
    if not url:
        from aqueue.db import EmbeddedPostgres

        embedded = EmbeddedPostgres(Path(".aqueue/bench"))
        print("no --database-url/DATABASE_URL: starting the embedded PostgreSQL", flush=True)
        url = await embedded.start()

    dbs = Databases(url)
    tmp_root = tempfile.mkdtemp(prefix="aqueue-bench-")
    run_id = secrets.token_hex(2)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    results: list[Result] = []
    doc: dict[str, Any] = {}
    t_start = time.monotonic()
    baseline: Baseline | None = None
    try:
        if resolved is not None:
            baseline = export(args.baseline, resolved, Path(tmp_root))
            add_baseline(systems, baseline)
        labels = [s.label for s in systems]
        meta = {
            "started": started,
            "mode": "quick" if args.quick else "full",
            "repeat": repeat,
            "tuned_variants": tuned,
            "postgres": await dbs.server_version(),
            "database_url": redact(url) if not embedded else "embedded",
            "cpus": os.cpu_count(),
            "machine": platform.platform(),
            "python": platform.python_version(),
            "versions": {d: version(d) for d in ("aqueue", "pgqueuer", "procrastinate",
                                                  "asyncpg", "psycopg")},
            "sizes": dataclasses.asdict(sizes),
            "order": "for rep: for scenario: for system, each rep starting one system further "
                     "along; enqueue scenarios in turns of a tenth of the jobs per system",
            "command": " ".join(["python -m bench", *sys.argv[1:]]),
            "aqueue_from": aqueue_dir(),
        }  # fmt: skip
        if baseline is not None:
            meta["baseline"] = baseline.meta()
        # One template database per system with its schema installed; every measurement
        # then gets a fresh database copied from it (CREATE DATABASE ... TEMPLATE).
        templates: dict[str, str] = {}
        for system in systems:
            if system.schema in templates:
                continue
            name = safe_name("bench", run_id, "tpl", system.schema)
            tpl_url = await dbs.create(name)
            await system.install(tpl_url)
            templates[system.schema] = name

        runner = Runner(sizes, tmp_root)

        def record(rep: int, scenario: Scenario, result: Result) -> None:
            nonlocal doc
            results.append(result)
            shown = ", ".join(f"{k}={v:,.1f}" for k, v in result.metrics.items() if v is not None)
            status = "ok" if result.valid else "INVALID: " + "; ".join(result.errors)
            print(
                f"[rep {rep}/{repeat} {time.monotonic() - t_start:6.1f}s] "
                f"{scenario.name:15s} {result.label:20s} {shown}  ({status})",
                flush=True,
            )
            doc = build_doc(meta, labels, systems, scenarios, results)
            report.write(doc, args.out)

        for rep in range(1, repeat + 1):
            for scenario in scenarios:
                runs = [s for s in in_turn(systems, rep) if applies(scenario, s)]
                names = [
                    safe_name("bench", run_id, s.label, f"r{rep}", scenario.name) for s in runs
                ]
                if scenario.interleaved:
                    urls = [
                        await dbs.create(name, template=templates[system.schema])
                        for system, name in zip(runs, names, strict=True)
                    ]
                    done = await runner.interleaved(
                        scenario, list(zip(runs, urls, strict=True)), rep
                    )
                    for name in names:
                        await dbs.drop(name)
                    for result in done:
                        record(rep, scenario, result)
                    continue
                for system, name in zip(runs, names, strict=True):
                    db_url = await dbs.create(name, template=templates[system.schema])
                    result = await runner.run(scenario, system, db_url, rep)
                    await dbs.drop(name)
                    record(rep, scenario, result)
        meta["finished"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["wall_seconds"] = round(time.monotonic() - t_start, 1)
        doc = build_doc(meta, labels, systems, scenarios, results)
        report.write(doc, args.out)
    finally:
        for system in systems:
            system.cleanup()
        await dbs.drop_all()
        shutil.rmtree(tmp_root, ignore_errors=True)
        if embedded is not None:
            await embedded.stop()
    print(f"\nwrote {args.out}/latest.json, latest.md, latest.png", flush=True)
    print(report.markdown(doc), flush=True)
    return 0 if doc.get("valid") else 1


def add_baseline(systems: list[System], baseline: Baseline) -> None:
    """The earlier revision runs right after the working tree's aqueue in every round."""
    from bench.systems.aqueue_baseline import AqueueBaselineSystem

    at = next((i + 1 for i, s in enumerate(systems) if s.system == "aqueue"), 0)
    systems.insert(at, AqueueBaselineSystem(baseline))


def aqueue_dir() -> str:
    """Where the bench process's own aqueue (the one measured as "aqueue") comes from."""
    import aqueue

    return str(Path(aqueue.__file__).resolve().parent)


def build_doc(
    meta: dict[str, Any], labels: list[str], systems: list[Any], scenarios: list[Any],
    results: list[Result],
) -> dict[str, Any]:  # fmt: skip
    settings: dict[str, dict[str, Any]] = {}
    for r in results:
        settings.setdefault(r.label, {})[r.scenario] = r.settings
    present = [x for x in labels if any(r.label == x for r in results)]
    return {
        "meta": meta,
        "labels": present,
        "systems": sorted({s.system for s in systems}),
        "scenarios": [s.name for s in scenarios],
        "valid": bool(results) and all(r.valid for r in results),
        "settings": settings,
        "summary": report.summarize(results, present),
        "runs": [r.to_json() for r in results],
    }


def _terminate(signum: int, frame: Any) -> None:
    # SIGTERM unwinds like Ctrl-C: worker processes are killed and databases dropped
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
