"""An earlier aqueue revision (``--baseline REV``), run through the same public API and the
same `aqueue serve` flags as the working tree's aqueue, but only in subprocesses that
import that revision: its workers and API via ``bench.aqueue_driver aqueue ...``, its
producer (schema install, enqueue loops, the producer side of drains and latency runs)
via one ``bench.aqueue_driver rpc`` subprocess per scenario run, which times its loops
itself (bench.producers, the loops the bench process runs for the other systems)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from typing import Any

from bench.baseline import Baseline
from bench.systems.aqueue_system import AqueueSystem

# A reply may take as long as a whole loop: load_latency offers jobs for 30 s, the full
# enqueue_batch sends 50,000 jobs, steady_bloat offers jobs for 10 minutes.
REPLY_TIMEOUT_S = 900.0


class AqueueBaselineSystem(AqueueSystem):
    system = "aqueue-base"

    def __init__(self, baseline: Baseline) -> None:
        super().__init__()
        self.baseline = baseline
        self._driver: asyncio.subprocess.Process | None = None
        self._log: str | None = None
        self._reports: list[dict[str, Any]] = []  # producer code reports since the last check

    @property
    def label(self) -> str:
        return self.baseline.label

    @property
    def family(self) -> str:
        return "aqueue"

    def worker_settings(self, concurrency: int) -> dict[str, Any]:
        return {**super().worker_settings(concurrency), "revision": self.baseline.sha}

    def cli(self) -> list[str]:
        return self.baseline.command("aqueue")

    def process_env(self, record_dir: str) -> dict[str, str]:
        return self.baseline.env(record_dir)

    # --- the producer subprocess -------------------------------------------------------

    async def _start(self) -> None:
        if self._driver is not None:
            raise RuntimeError(f"{self.label}: producer subprocess already running")
        fd, self._log = tempfile.mkstemp(
            prefix="driver-", suffix=".log", dir=self.baseline.root.parent
        )
        try:
            self._driver = await asyncio.create_subprocess_exec(
                *self.baseline.command("rpc"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=fd,
                env=self.baseline.env(),
            )
        finally:
            os.close(fd)
        ready = await self._receive()
        self._take_report(ready["code"])

    def _log_tail(self, chars: int = 1500) -> str:
        if not self._log:
            return ""
        try:
            with open(self._log, "rb") as fh:
                return fh.read().decode(errors="replace")[-chars:]
        except OSError:
            return ""

    async def _receive(self) -> dict[str, Any]:
        """The next reply line. Whatever interrupts the wait (Ctrl-C, a timeout, the driver's
        death) ends the driver: a reply still in flight would answer the next request."""
        driver = self._driver
        assert driver is not None and driver.stdout is not None
        try:
            line = await asyncio.wait_for(driver.stdout.readline(), REPLY_TIMEOUT_S)
        except TimeoutError:
            self.cleanup()
            raise RuntimeError(
                f"{self.label} producer: no reply in {REPLY_TIMEOUT_S:.0f}s"
            ) from None
        except BaseException:
            self.cleanup()
            raise
        if not line:
            code = await driver.wait()
            self._driver = None
            raise RuntimeError(
                f"{self.label} producer subprocess exited with code {code}: {self._log_tail()}"
            )
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"{self.label} producer: {reply.get('error')}")
        return reply

    async def _call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        driver = self._driver
        if driver is None or driver.stdin is None:
            raise RuntimeError(f"{self.label}: producer not open")
        try:
            driver.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
            await driver.stdin.drain()
        except BaseException:
            self.cleanup()
            raise
        return await self._receive()

    def _take_report(self, report: dict[str, Any]) -> None:
        errors = self.baseline.check_code(report)
        if errors:
            self.cleanup()
            raise RuntimeError("; ".join(errors))
        self._reports.append(report)

    async def _stop(self) -> None:
        driver = self._driver
        if driver is None:
            return
        try:
            reply = await self._call("close")
            self._take_report(reply["code"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(driver.wait(), 10)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        driver, self._driver = self._driver, None
        if driver is not None and driver.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                driver.kill()

    # --- the System interface ----------------------------------------------------------

    async def install(self, url: str) -> None:
        await self._start()
        try:
            await self._call("install", url=url)
        finally:
            await self._stop()
        self._reports.clear()  # checked above; the runs account for their own processes

    async def open(self, url: str) -> None:
        await self._start()
        try:
            await self._call("open", url=url)
        except BaseException:
            self.cleanup()
            raise

    async def close(self) -> None:
        await self._stop()

    async def enqueue_one(self, payload: dict[str, Any]) -> None:
        await self._call("enqueue_one", payload=payload)

    async def enqueue_many(self, payloads: list[dict[str, Any]]) -> None:
        await self._call("enqueue_many", payloads=payloads)

    async def produce(self, kind: str, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = (await self._call("produce", kind=kind, params=params))["result"]
        return result

    def verify_code(
        self, reports: list[dict[str, Any]], processes: int
    ) -> tuple[list[str], dict[str, Any] | None]:
        errors: list[str] = []
        if len(reports) != processes:
            errors.append(
                f"{self.label}: {processes} worker/API processes ran, {len(reports)} reported "
                "the code they loaded"
            )
        every = reports + self._reports
        self._reports = []
        for report in every:
            errors += self.baseline.check_code(report)
        files = {path for r in every for path in r.get("files", {})}
        evidence = {
            "revision": self.baseline.sha,
            "aqueue_from": sorted({str(r.get("package")) for r in every}),
            "processes_checked": len({r["pid"] for r in every}),
            "files_matching_revision_blobs": len(files),
        }
        return errors, evidence
