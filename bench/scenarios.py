"""The scenarios: each runs one system on a fresh database and returns a measurement with
its own correctness check (a run whose jobs did not all complete exactly once is INVALID)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

from bench.baseline import read_origins
from bench.httpload import post_all
from bench.recorder import read_records
from bench.systems.aqueue_baseline import AqueueBaselineSystem
from bench.systems.aqueue_system import all_jobs, has_history
from bench.systems.base import System, verify_jobs, worker_env


@dataclass(frozen=True)
class Sizes:
    enqueue_single: int
    enqueue_batch: int
    drain: int
    pickup_jobs: int
    load_seconds: float
    http_jobs: int
    memory_jobs: int
    history_jobs: int
    steady_seconds: float
    batch: int = 1000
    # the enqueue scenarios' turns: each system enqueues a tenth of its jobs, then the next
    enqueue_slices: int = 10
    pickup_rate: float = 50.0
    http_inflight: int = 32
    timeout_s: float = 600.0


FULL = Sizes(
    enqueue_single=5_000,
    # 200,000: 50,000 lasted ~1 s for aqueue, and one checkpoint or vacuum in that second
    # moved a repetition by a fifth (aqueue/pgqueuer read 1.61-2.04x across repetitions)
    enqueue_batch=200_000,
    # 20,000 by default: on a 100,000-job backlog pgqueuer at concurrency 10 slows to
    # ~170 jobs/s (a run would take ten minutes) and the plain-SQL cycle, whose completed
    # rows stay in its partial index until a vacuum, to ~3,500; --drain-jobs 100000 for
    # runs of aqueue against itself, where a drain then lasts seconds
    drain=20_000,
    pickup_jobs=500,
    load_seconds=30.0,
    http_jobs=5_000,
    memory_jobs=100_000,
    history_jobs=1_000_000,
    steady_seconds=600.0,
)
QUICK = Sizes(
    enqueue_single=200,
    enqueue_batch=2_000,
    drain=1_000,
    pickup_jobs=25,
    load_seconds=2.0,
    http_jobs=200,
    memory_jobs=3_000,
    history_jobs=20_000,
    steady_seconds=10.0,
    enqueue_slices=2,
    timeout_s=40.0,
)


@dataclass(frozen=True)
class Metric:
    key: str
    unit: str
    higher_is_better: bool


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    metrics: tuple[Metric, ...]
    systems: tuple[str, ...]  # which systems run it
    processes: int = 1
    concurrency: int = 10
    tuned: bool = True  # do the tuned peer variants run it
    sql_connections: int = 0  # the plain-SQL ceiling it is compared with (0: none)
    opt_in: bool = False  # runs only when named in --scenarios (too long for every run)
    # every system's producer open at once, the jobs enqueued in turns (Runner.interleaved)
    interleaved: bool = False


JOBS_S = (Metric("jobs_per_s", "jobs/s", True),)
QUEUES = ("aqueue", "pgqueuer", "procrastinate")

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("enqueue_single", "enqueue, one job per call, sequential", JOBS_S,
                 (*QUEUES, "sql"), tuned=False, interleaved=True),
        Scenario("enqueue_batch", "enqueue, batches of 1,000", JOBS_S, (*QUEUES, "sql"),
                 tuned=False, interleaved=True),
        Scenario("drain_c10", "drain pre-enqueued jobs, 1 worker process, concurrency 10",
                 JOBS_S, (*QUEUES, "sql"), concurrency=10, tuned=False, sql_connections=1),
        Scenario("drain_c50", "drain pre-enqueued jobs, 1 worker process, concurrency 50",
                 JOBS_S, (*QUEUES, "sql"), concurrency=50, sql_connections=1),
        Scenario("drain_2proc", "drain pre-enqueued jobs, 2 worker processes x concurrency 50",
                 JOBS_S, (*QUEUES, "sql"), processes=2, concurrency=50, sql_connections=2),
        Scenario(
            "pickup_latency", "pickup latency, idle worker, ~50 jobs/s one by one",
            (Metric("p50_ms", "ms", False), Metric("p95_ms", "ms", False),
             Metric("p99_ms", "ms", False),
             Metric("committed_p50_ms", "ms after the enqueue returned", False),
             Metric("committed_p99_ms", "ms after the enqueue returned", False)),
            (*QUEUES, "sql"), concurrency=10,
        ),
        Scenario(
            "load_latency", "latency under load: arrivals at half the system's drain rate",
            (Metric("p50_ms", "ms", False), Metric("p99_ms", "ms", False),
             Metric("rate_per_s", "jobs/s offered", True)),
            QUEUES, concurrency=50,
        ),
        Scenario("http_enqueue", "aqueue POST /jobs, 32 requests in flight",
                 (Metric("jobs_per_s", "jobs/s", True),
                  Metric("rate_limited_jobs_per_s", "jobs/s, --rate-limit on", True),
                  Metric("rate_limit_cost", "x without", True)),
                 ("aqueue",), tuned=False),
        Scenario(
            "drain_history",
            "drain 20,000 jobs with 1,000,000 finished jobs stored (concurrency 50)",
            (Metric("jobs_per_s", "jobs/s", True),
             Metric("vs_drain_c50", "x drain_c50 (empty)", True)),
            ("aqueue",), concurrency=50, tuned=False,
        ),
        Scenario(
            "drain_fair",
            "drain_c50 with every job under one of 100 fair keys (claim_flow, fair order)",
            (Metric("jobs_per_s", "jobs/s", True),
             Metric("vs_drain_c50", "x drain_c50 (plain)", True)),
            ("aqueue",), concurrency=50, tuned=False,
        ),
        Scenario(
            "drain_capped",
            "drain_c50 with every job under one of 100 concurrency keys, cap 10 per key",
            (Metric("jobs_per_s", "jobs/s", True),
             Metric("vs_drain_c50", "x drain_c50 (plain)", True)),
            ("aqueue",), concurrency=50, tuned=False,
        ),
        Scenario(
            "steady_bloat",
            "hot table under 10 min of steady load at half the drain_c50 rate (c50)",
            (Metric("hot_dead_max", "dead tuples", False),
             Metric("hot_dead_final", "dead tuples", False),
             Metric("hot_live_max", "live tuples", False),
             Metric("hot_mb_max", "MB", False), Metric("hot_mb_final", "MB", False),
             Metric("history_dead_max", "dead tuples", False),
             Metric("history_mb_final", "MB", False),
             Metric("rate_per_s", "jobs/s offered", True)),
            ("aqueue",), concurrency=50, tuned=False, opt_in=True,
        ),
        Scenario(
            "memory", "aqueue worker RSS over a long drain (concurrency 50)",
            (Metric("rss_warm_mb", "MB", False), Metric("rss_peak_mb", "MB", False),
             Metric("rss_growth_mb", "MB", False), Metric("jobs_per_s", "jobs/s", True)),
            ("aqueue",), concurrency=50, tuned=False,
        ),
    )
}  # fmt: skip


T = TypeVar("T")


def in_turn(systems: Sequence[T], turn: int) -> list[T]:
    """The systems in the order turn `turn` (from 1) runs them: each turn starts one further
    along, so that over as many turns as systems each goes first once. The first of a
    scenario runs right after the last of the one before (a drain's cleanup, its
    checkpoint): in a fixed order one system always took that seat."""
    if not systems:
        return []
    k = (turn - 1) % len(systems)
    return [*systems[k:], *systems[:k]]


def slice_bounds(n: int, slices: int, unit: int) -> list[tuple[int, int]]:
    """``n`` jobs cut into ``slices`` runs of whole batches of ``unit`` (the last takes what
    is left), as (first, count); no empty run."""
    per = max(unit, -(-n // max(1, slices)) // unit * unit)
    return [(first, min(per, n - first)) for first in range(0, n, per)]


def applies(scenario: Scenario, system: System) -> bool:
    if system.family not in scenario.systems:
        return False
    if system.scenarios is not None:
        return scenario.name in system.scenarios
    return system.variant == "default" or scenario.tuned


@dataclass
class Result:
    scenario: str
    label: str
    system: str
    variant: str
    rep: int
    metrics: dict[str, float | None] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def valid(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "label": self.label,
            "system": self.system,
            "variant": self.variant,
            "rep": self.rep,
            "valid": self.valid,
            "metrics": self.metrics,
            "settings": self.settings,
            "details": self.details,
            "errors": self.errors,
            "wall_seconds": round(self.seconds, 2),
        }


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, math.ceil(p / 100 * len(ordered)) - 1)
    return ordered[k]


# --- worker processes ---------------------------------------------------------------------


class Workers:
    """Worker OS processes of one system, started for one scenario."""

    def __init__(
        self, commands: list[list[str]], record_dir: str, env: dict[str, str] | None = None
    ) -> None:
        self.commands = commands
        self.record_dir = record_dir
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.errors: list[str] = []

    def start(self) -> None:
        env = self.env if self.env is not None else worker_env(self.record_dir)
        for n, cmd in enumerate(self.commands):
            log = open(os.path.join(self.record_dir, f"worker-{n}.log"), "wb")
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
            log.close()

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def exited_early(self) -> str | None:
        for n, p in enumerate(self.procs):
            if p.poll() is not None:
                return f"worker process {n} exited early with code {p.returncode}: " + (
                    self.log_tail(n)
                )
        return None

    def log_tail(self, n: int, chars: int = 1500) -> str:
        try:
            with open(os.path.join(self.record_dir, f"worker-{n}.log"), "rb") as fh:
                return fh.read().decode(errors="replace")[-chars:]
        except OSError:
            return ""

    async def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (graceful shutdown) once each process handles it, then SIGKILL after
        ``timeout``: an error."""
        deadline = time.monotonic() + timeout
        await self._until_sigterm_is_handled(deadline)
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for n, p in enumerate(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(p.wait, max(0.1, deadline - time.monotonic()))
            if p.poll() is None:
                p.kill()
                p.wait()
                self.errors.append(f"worker process {n} ignored SIGTERM for {timeout}s: killed")
            elif p.returncode != 0:
                self.errors.append(
                    f"worker process {n} exited with code {p.returncode}: {self.log_tail(n)}"
                )

    async def _until_sigterm_is_handled(self, deadline: float) -> None:
        """Wait until every live process has its SIGTERM handler installed. One still
        starting (imports, connecting) would die of the signal (code -15) instead of
        stopping gracefully, and a drain can end before a second process is up: in
        drain_2proc the first one drains the whole quick backlog in well under a second."""
        while time.monotonic() < deadline:
            if all(p.poll() is not None or handles_sigterm(p.pid) for p in self.procs):
                return
            await asyncio.sleep(0.01)

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def handles_sigterm(pid: int) -> bool:
    """Whether process ``pid`` catches SIGTERM now (Linux: the SigCgt mask in
    /proc/PID/status). True where that cannot be read: then nothing is waited for."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    except OSError:
        pass
    return True


async def wait_completed(
    system: System, conn: asyncpg.Connection, expected: int, workers: Workers,
    timeout: float, interval: float = 0.1,
) -> str | None:  # fmt: skip
    """Poll the database until ``expected`` jobs are completed; an error text otherwise."""
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        done = await system.completed(conn)
        if done >= expected:
            return None
        early = workers.exited_early()
        if early:
            return early
        await asyncio.sleep(interval)
    logs = " | ".join(workers.log_tail(n, 600) for n in range(len(workers.procs)))
    return f"timed out after {timeout:.0f}s: {done}/{expected} jobs completed; worker log: {logs}"


def check_records(
    records: list[tuple[int, float, float]], expected: set[int]
) -> tuple[list[str], list[tuple[int, float, float]]]:
    """Each expected job executed exactly once by the handlers, nothing else executed."""
    errors = []
    counts = Counter(r[0] for r in records)
    missing = [i for i in expected if counts.get(i, 0) == 0]
    twice = [i for i, c in counts.items() if c > 1]
    unexpected = [i for i in counts if i not in expected]
    if missing:
        errors.append(f"{len(missing)} jobs never executed by a handler (e.g. {missing[:5]})")
    if twice:
        errors.append(f"{len(twice)} jobs executed more than once (e.g. {twice[:5]})")
    if unexpected:
        errors.append(f"{len(unexpected)} unexpected executions (e.g. {unexpected[:5]})")
    return errors, [r for r in records if r[0] >= 0]


def check_db(db: dict[str, Any], expected: int) -> list[str]:
    errors = []
    if db["completed"] != expected:
        errors.append(f"database shows {db['completed']} completed jobs, expected {expected}")
    if db["completed_once"] != expected:
        errors.append(
            f"database shows {db['completed_once']} jobs completed on their first attempt "
            f"(exactly once), expected {expected}"
        )
    if db["not_completed"]:
        errors.append(f"database still holds {db['not_completed']} unfinished jobs")
    return errors


# --- the scenario runner ------------------------------------------------------------------


class Runner:
    def __init__(self, sizes: Sizes, tmp_root: str) -> None:
        self.sizes = sizes
        self.tmp_root = tmp_root
        # drain_c50 rates seen so far by label: the load_latency scenario offers half of it
        self.drain_rates: dict[str, float] = {}
        self._workers: list[Workers] = []  # the process groups the current run started
        self._last_record_dir = ""  # the latest latency run's records

    def record_dir(self) -> str:
        return tempfile.mkdtemp(prefix="rec-", dir=self.tmp_root)

    def workers(self, system: System, commands: list[list[str]], record_dir: str) -> Workers:
        workers = Workers(commands, record_dir, system.process_env(record_dir))
        self._workers.append(workers)
        return workers

    def _verify_code(self, system: System, result: Result) -> None:
        """The system's processes ran the code it stands for (an earlier revision's aqueue:
        every module from that revision, byte for byte)."""
        reports = [o for w in self._workers for o in read_origins(w.record_dir)]
        started = sum(len(w.procs) for w in self._workers)
        errors, evidence = system.verify_code(reports, started)
        result.errors += errors
        if evidence is not None:
            result.details["code"] = evidence

    async def run(self, scenario: Scenario, system: System, url: str, rep: int) -> Result:
        result = Result(scenario.name, system.label, system.system, system.variant, rep)
        result.settings = system.settings_for(scenario.name, scenario.concurrency)
        if scenario.processes > 1:
            result.settings["processes"] = scenario.processes
        started = time.monotonic()
        self._workers = []
        try:
            if system.system == "sql" and scenario.sql_connections:
                await self._sql(scenario, system, url, result)
            else:
                handler = {
                    "drain_c10": self._drain,
                    "drain_c50": self._drain,
                    "drain_2proc": self._drain,
                    "pickup_latency": self._pickup_latency,
                    "load_latency": self._load_latency,
                    "http_enqueue": self._http_enqueue,
                    "memory": self._memory,
                    "drain_history": self._drain_history,
                    "drain_fair": self._drain_flow,
                    "drain_capped": self._drain_flow,
                    "steady_bloat": self._steady_bloat,
                }[scenario.name]
                await handler(scenario, system, url, result)
        except Exception as exc:
            result.errors.append(f"{type(exc).__name__}: {exc}")
        self._verify_code(system, result)
        result.seconds = time.monotonic() - started
        return result

    # enqueue -----------------------------------------------------------------------------

    async def interleaved(
        self, scenario: Scenario, runs: list[tuple[System, str]], rep: int
    ) -> list[Result]:
        """An enqueue scenario for every system at once: each opens its producer on its own
        database, then the jobs go in turns, each system a slice of them (a tenth) before
        the next, each turn starting one system further along. Run one after the other,
        a spell of a few seconds in which the machine was slow (a neighbour on the host,
        a checkpoint) fell on whichever system ran in it, and moved one ratio by a fifth;
        in turns it falls on all of them."""
        single = scenario.name == "enqueue_single"
        n = self.sizes.enqueue_single if single else self.sizes.enqueue_batch
        batch = 1 if single else self.sizes.batch
        params: dict[str, Any] = {} if single else {"batch": batch}
        results: dict[int, Result] = {}
        elapsed: dict[int, float] = {}
        opened: list[System] = []
        bounds = slice_bounds(n, self.sizes.enqueue_slices, batch)
        started = time.monotonic()
        self._workers = []
        try:
            for system, url in runs:
                result = Result(scenario.name, system.label, system.system, system.variant, rep)
                results[id(system)] = result
                elapsed[id(system)] = 0.0
                try:
                    await system.open(url)
                except Exception as exc:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                opened.append(system)
            for turn, (first, count) in enumerate(bounds, start=1):
                for system in in_turn(opened, turn):
                    result = results[id(system)]
                    if result.errors:
                        continue
                    try:
                        done = await system.produce(scenario.name, n=count, first=first, **params)
                    except Exception as exc:
                        result.errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    elapsed[id(system)] += done["seconds"]
        finally:
            for system in opened:
                try:
                    await system.close()
                except Exception as exc:
                    results[id(system)].errors.append(f"{type(exc).__name__}: {exc}")
        for system, url in runs:
            result = results[id(system)]
            if not result.errors:
                await self._check_stored(system, url, n, result)
                result.metrics["jobs_per_s"] = n / elapsed[id(system)]
                result.details.update(jobs=n, seconds=elapsed[id(system)], slices=len(bounds))
                if not single:
                    result.details["batch"] = batch
            result.settings = system.producer_settings(scenario.name, batch)
            self._verify_code(system, result)
            result.seconds = time.monotonic() - started
        return [results[id(system)] for system, _url in runs]

    async def _stored(self, system: System, url: str) -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await system.stored(conn))
        finally:
            await conn.close()

    async def _check_stored(self, system: System, url: str, n: int, result: Result) -> None:
        stored = await self._stored(system, url)
        if stored != n:
            result.errors.append(f"database holds {stored} jobs after enqueueing {n}")

    # drain -------------------------------------------------------------------------------

    async def _prefill(self, system: System, url: str, n: int) -> None:
        await system.open(url)
        try:
            await system.produce("prefill", n=n, batch=self.sizes.batch)
        finally:
            await system.close()

    async def _drain(self, scenario: Scenario, system: System, url: str, result: Result) -> None:
        n = self.sizes.drain
        await self._prefill(system, url, n)
        rate = await self._drain_run(system, url, n, scenario, result)
        if rate and scenario.name == "drain_c50":
            self.drain_rates[system.label] = rate

    async def _drain_run(
        self, system: System, url: str, n: int, scenario: Scenario, result: Result,
        sample_pid_rss: list[tuple[float, int, int]] | None = None,
    ) -> float | None:  # fmt: skip
        record_dir = self.record_dir()
        cmd = system.worker_command(url, scenario.concurrency)
        workers = self.workers(system, [cmd] * scenario.processes, record_dir)
        conn = await asyncpg.connect(url)
        try:
            workers.start()
            if sample_pid_rss is not None:
                error = await self._wait_sampling(system, conn, n, workers, sample_pid_rss)
            else:
                error = await wait_completed(system, conn, n, workers, self.sizes.timeout_s)
            await workers.stop()
            if error:
                result.errors.append(error)
            result.errors += workers.errors
            db = await system.verify(conn)
        finally:
            workers.kill()
            await conn.close()
        result.errors += check_db(db, n)
        rec_errors, records = check_records(read_records(record_dir), set(range(n)))
        result.errors += rec_errors
        seconds = db["last_completion"] - db["first_claim"]
        rate = n / seconds if seconds > 0 else None
        result.metrics["jobs_per_s"] = rate
        starts = [r[1] for r in records]
        result.details.update(
            jobs=n,
            seconds=seconds,
            window="database: first claim to last completion",
            handler_window_s=(max(starts) - min(starts)) if starts else None,
        )
        return rate

    async def _wait_sampling(
        self, system: System, conn: asyncpg.Connection, n: int, workers: Workers,
        samples: list[tuple[float, int, int]],
    ) -> str | None:  # fmt: skip
        import psutil

        proc = psutil.Process(workers.procs[0].pid)
        deadline = time.monotonic() + self.sizes.timeout_s
        done, last_poll = 0, 0.0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now - last_poll >= 0.5:
                done = await system.completed(conn)
                last_poll = now
                if done >= n:
                    samples.append((time.time(), proc.memory_info().rss, done))
                    return None
            early = workers.exited_early()
            if early:
                return early
            samples.append((time.time(), proc.memory_info().rss, done))
            await asyncio.sleep(0.1)
        return f"timed out after {self.sizes.timeout_s:.0f}s: {done}/{n} jobs completed"

    # latency ---------------------------------------------------------------------------------

    async def _warm_up(
        self, system: System, conn: asyncpg.Connection, workers: Workers, result: Result
    ) -> bool:
        """One job through the idle worker: it is up and listening once that completes."""
        await system.produce("warm_up")
        error = await wait_completed(system, conn, 1, workers, timeout=60, interval=0.05)
        if error:
            result.errors.append("warm-up: " + error)
            return False
        return True

    async def _latency_run(
        self, scenario: Scenario, system: System, url: str, result: Result,
        produce: Any,
    ) -> None:  # fmt: skip
        record_dir = self._last_record_dir = self.record_dir()
        workers = self.workers(
            system, [system.worker_command(url, scenario.concurrency)], record_dir
        )
        conn = await asyncpg.connect(url)
        await system.open(url)
        try:
            workers.start()
            if not await self._warm_up(system, conn, workers, result):
                return
            n = await produce()
            error = await wait_completed(system, conn, n + 1, workers, self.sizes.timeout_s)
            await workers.stop()
            if error:
                result.errors.append(error)
            result.errors += workers.errors
            db = await system.verify(conn)
        finally:
            workers.kill()
            await system.close()
            await conn.close()
        result.errors += check_db(db, n + 1)
        rec_errors, records = check_records(read_records(record_dir), {-1, *range(n)})
        result.errors += rec_errors
        lat = [(start - t) * 1000 for _, start, t in records]
        for p in (50, 95, 99):
            result.metrics[f"p{p}_ms"] = percentile(lat, p)
        result.details.update(
            jobs=n,
            max_ms=max(lat) if lat else None,
            method="handler time.time() at start minus producer time.time() before enqueue",
        )

    async def _pickup_latency(
        self, scenario: Scenario, system: System, url: str, result: Result
    ) -> None:
        n, rate = self.sizes.pickup_jobs, self.sizes.pickup_rate

        returned: list[float] = []

        async def produce() -> int:
            out = await system.produce("pickup", n=n, rate=rate)
            returned.extend(out.get("returned", ()))
            return int(out["sent"])

        await self._latency_run(scenario, system, url, result, produce)
        result.details["offered_rate_per_s"] = rate
        if returned:
            # the same jobs, timed from their enqueue call's return (its commit done)
            starts = {i: start for i, start, _t in read_records(self._last_record_dir) if i >= 0}
            lat = [(starts[i] - at) * 1000 for i, at in enumerate(returned) if i in starts]
            result.metrics["committed_p50_ms"] = percentile(lat, 50)
            result.metrics["committed_p99_ms"] = percentile(lat, 99)

    async def _load_latency(
        self, scenario: Scenario, system: System, url: str, result: Result
    ) -> None:
        drain = self.drain_rates.get(system.label)
        rate = 0.5 * drain if drain else 100.0
        duration = self.sizes.load_seconds
        tick = 0.01
        achieved: dict[str, float] = {}

        async def produce() -> int:
            out = await system.produce("load", rate=rate, duration=duration, tick=tick)
            achieved["rate"] = out["rate"]
            return int(out["sent"])

        await self._latency_run(scenario, system, url, result, produce)
        result.metrics["rate_per_s"] = achieved.get("rate")
        result.details.update(
            target_rate_per_s=rate,
            rate_basis=(
                f"half of this run's drain_c50 rate ({drain:.0f} jobs/s)"
                if drain
                else "no drain_c50 result yet: 100 jobs/s"
            ),
            duration_s=duration,
            arrivals="every 10 ms tick, the jobs due so far (one call, batched when >1)",
        )

    # aqueue only -------------------------------------------------------------------------

    async def _http_enqueue(
        self, scenario: Scenario, system: System, url: str, result: Result
    ) -> None:
        # Without the rate limit, then (this tree only: a baseline may lack the flag) with
        # one so high it is never hit: what checking the budget costs each request.
        # The two alternate which goes first from one repetition to the next: the second
        # inserts into a table already holding the first's jobs.
        limited = not isinstance(system, AqueueBaselineSystem)
        variants: list[tuple[str, ...]] = [()]
        if limited:
            variants.append(("--rate-limit", "1000000/s"))
            self._http_rounds = getattr(self, "_http_rounds", 0) + 1
            if self._http_rounds % 2 == 0:
                variants.reverse()
        rates = {v: await self._post_through_api(system, url, result, v) for v in variants}
        result.metrics["jobs_per_s"] = rates[()]
        if limited:
            with_limit = rates[("--rate-limit", "1000000/s")]
            result.metrics["rate_limited_jobs_per_s"] = with_limit
            result.metrics["rate_limit_cost"] = with_limit / rates[()]
        result.settings = {
            "roles": "api",
            "client": f"bench.httpload keep-alive client, {self.sizes.http_inflight} connections",
            **({"rate_limit": "1000000/s, never hit (second measurement)"} if limited else {}),
        }

    async def _post_through_api(
        self, system: System, url: str, result: Result, extra: tuple[str, ...]
    ) -> float:
        """POST http_jobs jobs to a fresh `aqueue serve --roles=api` (with `extra` flags)
        and check they were all stored; returns jobs/s."""
        import httpx

        n, inflight = self.sizes.http_jobs, self.sizes.http_inflight
        port = free_port()
        record_dir = self.record_dir()
        command = [*system.api_command(url, port), *extra]  # type: ignore[attr-defined]
        api = self.workers(system, [command], record_dir)
        base = f"http://127.0.0.1:{port}"
        statuses: Counter[int] = Counter()
        before = await self._stored(system, url)
        try:
            api.start()
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                deadline = time.monotonic() + 60
                while True:
                    early = api.exited_early()
                    if early:
                        raise RuntimeError(early)
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError("the aqueue API did not answer /healthz in 60s")
                    await asyncio.sleep(0.1)
            bodies = (
                json.dumps({"type": "bench.noop", "payload": {"i": i, "t": 0}}).encode()
                for i in range(n)
            )
            t0 = time.perf_counter()
            statuses.update(await post_all("127.0.0.1", port, "/jobs", bodies, inflight))
            elapsed = time.perf_counter() - t0
            await api.stop()
            result.errors += api.errors
        finally:
            api.kill()
        if statuses.get(201, 0) != n:
            result.errors.append(f"expected {n} responses 201, got {dict(statuses)}")
        await self._check_stored(system, url, before + n, result)
        result.details.setdefault("runs", []).append(
            {"flags": list(extra), "jobs": n, "seconds": elapsed, "statuses": dict(statuses)}
        )
        return n / elapsed

    async def _memory(self, scenario: Scenario, system: System, url: str, result: Result) -> None:
        n = self.sizes.memory_jobs
        await self._prefill(system, url, n)
        samples: list[tuple[float, int, int]] = []
        await self._drain_run(system, url, n, scenario, result, sample_pid_rss=samples)
        mb = 1024 * 1024
        warm_at = max(1, n // 10)
        warm = [rss for _, rss, done in samples if done >= warm_at]
        rss_warm = warm[0] / mb if warm else None
        rss_peak = max(rss for _, rss, _ in samples) / mb if samples else None
        result.metrics.update(
            rss_warm_mb=rss_warm,
            rss_peak_mb=rss_peak,
            rss_growth_mb=(rss_peak - rss_warm) if rss_warm and rss_peak else None,
        )
        result.details.update(
            samples=len(samples),
            warm_up=f"first sample after {warm_at} jobs completed",
            rss_final_mb=samples[-1][1] / mb if samples else None,
        )

    async def _drain_history(
        self, scenario: Scenario, system: System, url: str, result: Result
    ) -> None:
        """drain_c50 with a long history already stored: finished jobs loaded in one
        statement (generate_series), where that aqueue keeps them (jobs_history since
        migration 004, jobs before), vacuumed and analyzed as autovacuum would have."""
        n, stored = self.sizes.drain, self.sizes.history_jobs
        conn = await asyncpg.connect(url)
        try:
            t0 = time.monotonic()
            table = "jobs_history" if await has_history(conn) else "jobs"
            await conn.execute(
                f"""INSERT INTO {table} (id, type, payload, status, attempts, created_at,
                                         started_at, finished_at, updated_at)
                    SELECT aqueue_uuid7(), 'bench.history', jsonb_build_object('i', g),
                           'COMPLETED', 1, now(), now(), now(), now()
                    FROM generate_series(1, $1) g""",
                stored,
            )
            await conn.execute(
                f"""INSERT INTO job_events (job_id, status, attempt, worker, started_at)
                    SELECT id, 'COMPLETED', 1, 'bench', started_at FROM {table}"""
            )
            await conn.execute(f"VACUUM ANALYZE {table}")
            await conn.execute("VACUUM ANALYZE job_events")
            load_s = time.monotonic() - t0
            # the drain's jobs are the ones created from now on (ids are time-ordered)
            since = uuid7_floor(time.time())
        finally:
            await conn.close()
        drained = Since(system, since)
        await self._prefill(system, url, n)
        rate = await self._drain_run(drained, url, n, scenario, result)  # type: ignore[arg-type]
        empty = self.drain_rates.get(system.label)
        result.metrics["vs_drain_c50"] = rate / empty if rate and empty else None
        result.details.update(
            history_jobs=stored,
            history_table=table,
            history_load_s=round(load_s, 1),
            drain_c50_this_run=empty,
        )

    async def _drain_flow(
        self, scenario: Scenario, system: System, url: str, result: Result
    ) -> None:
        """drain_c50 of jobs that use flow control, so claimed by claim_flow: 100 fair
        keys (the tags a round-robin enqueue gives) or 100 concurrency keys capped at 10
        (the cap never binds at concurrency 50: this is the claim's cost, not a limit)."""
        n = self.sizes.drain
        await self._prefill(system, url, n)
        conn = await asyncpg.connect(url)
        try:
            if not await conn.fetchval("SELECT to_regclass('concurrency_slots') IS NOT NULL"):
                result.details["skipped"] = "this revision has no flow control"
                return
            column = "fair_key" if scenario.name == "drain_fair" else "concurrency_key"
            await conn.execute(
                f"""WITH r AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM jobs)
                    UPDATE jobs j SET {column} = 'k' || (r.n % 100),
                        vtag = CASE WHEN '{column}' = 'fair_key' THEN r.n / 100 + 1 END
                    FROM r WHERE j.id = r.id"""
            )
            await conn.execute(
                """INSERT INTO queues (name, fair, key_concurrency)
                   SELECT DISTINCT queue, $1::boolean, $2::integer FROM jobs
                   ON CONFLICT (name) DO UPDATE
                   SET fair = excluded.fair, key_concurrency = excluded.key_concurrency""",
                column == "fair_key",
                10 if column == "concurrency_key" else None,
            )
            await conn.execute("VACUUM ANALYZE jobs")
        finally:
            await conn.close()
        rate = await self._drain_run(system, url, n, scenario, result)
        plain = self.drain_rates.get(system.label)
        result.metrics["vs_drain_c50"] = rate / plain if rate and plain else None
        result.details["drain_c50_this_run"] = plain

    async def _steady_bloat(
        self, scenario: Scenario, system: System, url: str, result: Result
    ) -> None:
        """Jobs arriving at half the drain_c50 rate for `steady_seconds`, one worker at
        concurrency 50; every few seconds the hot table's and the history's dead and live
        tuples (pg_stat_user_tables) and total size (pg_total_relation_size)."""
        drain = self.drain_rates.get(system.label)
        rate = 0.5 * drain if drain else 1000.0
        duration = self.sizes.steady_seconds
        interval = min(5.0, max(1.0, duration / 20))
        samples: list[dict[str, Any]] = []
        record_dir = self.record_dir()
        workers = self.workers(
            system, [system.worker_command(url, scenario.concurrency)], record_dir
        )
        conn = await asyncpg.connect(url)
        await system.open(url)
        try:
            workers.start()
            if not await self._warm_up(system, conn, workers, result):
                return
            history = "jobs_history" if await has_history(conn) else None
            t0 = time.monotonic()
            producing = asyncio.create_task(
                system.produce("load", rate=rate, duration=duration, tick=0.01)
            )
            while not producing.done():
                samples.append(await table_stats(conn, history, time.monotonic() - t0))
                await asyncio.wait({producing}, timeout=interval)
            out = producing.result()
            n = int(out["sent"])
            error = await wait_completed(system, conn, n + 1, workers, self.sizes.timeout_s)
            samples.append(await table_stats(conn, history, time.monotonic() - t0))
            await workers.stop()
            if error:
                result.errors.append(error)
            result.errors += workers.errors
            db = await system.verify(conn)
        finally:
            workers.kill()
            await system.close()
            await conn.close()
        result.errors += check_db(db, n + 1)
        rec_errors, _ = check_records(read_records(record_dir), {-1, *range(n)})
        result.errors += rec_errors
        mb = 1024 * 1024
        hot = [s["jobs"] for s in samples]
        hist = [s["history"] for s in samples if s["history"]]
        result.metrics.update(
            hot_dead_max=max(h["dead"] for h in hot),
            hot_dead_final=hot[-1]["dead"],
            hot_live_max=max(h["live"] for h in hot),
            hot_mb_max=max(h["bytes"] for h in hot) / mb,
            hot_mb_final=hot[-1]["bytes"] / mb,
            history_dead_max=max(h["dead"] for h in hist) if hist else None,
            history_mb_final=hist[-1]["bytes"] / mb if hist else None,
            rate_per_s=out["rate"],
        )
        result.details.update(
            jobs=n,
            duration_s=duration,
            target_rate_per_s=rate,
            rate_basis=(
                f"half of this run's drain_c50 rate ({drain:.0f} jobs/s)"
                if drain
                else "no drain_c50 result in this run: 1,000 jobs/s"
            ),
            sample_every_s=interval,
            hot_table="jobs",
            history_table=history,
            samples=samples,
        )

    # the plain-SQL ceiling ---------------------------------------------------------------

    async def _sql(self, scenario: Scenario, system: System, url: str, result: Result) -> None:
        out = await system.drain(  # type: ignore[attr-defined]
            url, self.sizes.drain, scenario.sql_connections, self.record_dir()
        )
        result.errors += out.pop("errors")
        result.metrics["jobs_per_s"] = out.pop("value")
        result.details.update(out)
        result.settings = {
            "tool": "pgbench -M prepared, custom script",
            "batch": 100,
            "connections": scenario.sql_connections,
        }


def uuid7_floor(epoch: float) -> uuid.UUID:
    """The smallest time-ordered id of a time: every job created later has a larger id."""
    return uuid.UUID(int=int(epoch * 1000) << 80)


class Since:
    """A system whose completion checks count only the jobs created since `since` (the
    drain's own, not the history loaded before it): a range of the primary key, so the
    0.1 s polls do not count a million stored jobs each time."""

    def __init__(self, system: System, since: uuid.UUID) -> None:
        self._system = system
        self._since = since

    def __getattr__(self, name: str) -> Any:
        return getattr(self._system, name)

    async def completed(self, conn: asyncpg.Connection) -> int:
        table = await all_jobs(conn)
        return int(
            await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE id >= $1 AND status = 'COMPLETED'",
                self._since,
            )
        )

    async def verify(self, conn: asyncpg.Connection) -> dict[str, Any]:
        return await verify_jobs(conn, await all_jobs(conn), self._since)


async def table_stats(conn: asyncpg.Connection, history: str | None, at: float) -> dict[str, Any]:
    """Dead and live tuples (pg_stat_user_tables) and total size with indexes and TOAST
    of the hot table and of the history (None when this aqueue has none)."""
    rows = await conn.fetch(
        """SELECT relname, n_dead_tup, n_live_tup, autovacuum_count,
                  pg_total_relation_size(relid) AS bytes
           FROM pg_stat_user_tables WHERE relname = ANY($1::text[])""",
        ["jobs", history or "jobs"],
    )
    by = {
        r["relname"]: {
            "dead": r["n_dead_tup"],
            "live": r["n_live_tup"],
            "bytes": r["bytes"],
            "autovacuums": r["autovacuum_count"],
        }
        for r in rows
    }
    return {"t": round(at, 1), "jobs": by["jobs"], "history": by.get(history or "")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
