"""`aqueue serve --app module:attr` finds a tasks module in the working directory, as
`uvicorn module:app` and `celery -A` do, also when started by the installed `aqueue`
console script (whose import path starts with its own bin/ directory)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from aqueue import JobStatus, enqueue, store
from tests.helpers import ROOT, subprocess_env, wait_for

pytestmark = pytest.mark.timeout(120)

TASKS = """
from aqueue import Registry

registry = Registry()


@registry.task("mytasks.greet")
async def greet(payload, ctx):
    return {"greeting": "hello " + payload["name"]}
"""


def console_script() -> Path:
    script = Path(sys.executable).with_name("aqueue")
    assert script.is_file(), f"the aqueue console script is not installed next to {sys.executable}"
    return script


async def test_serve_imports_the_app_from_the_working_directory(tmp_path, pool, db_url):
    folder = tmp_path / "project"  # a plain folder: no package, not on PYTHONPATH
    folder.mkdir()
    (folder / "mytasks.py").write_text(TASKS)
    proc = await asyncio.create_subprocess_exec(
        str(console_script()),
        *("serve", "--roles", "worker", "--app", "mytasks:registry"),
        cwd=folder,
        # ROOT alone: an empty entry (as subprocess_env leaves) would mean the cwd too
        env=subprocess_env(DATABASE_URL=db_url, PYTHONPATH=str(ROOT)),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        job = await enqueue(pool, "mytasks.greet", {"name": "folder"})

        async def finished() -> bool:
            if proc.returncode is not None:
                assert proc.stderr is not None
                raise AssertionError(f"aqueue serve exited: {(await proc.stderr.read()).decode()}")
            found = await store.get_job(pool, job.id)
            return found is not None and found.status is JobStatus.COMPLETED

        await wait_for(finished, timeout=60)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 60)
    done = await store.get_job(pool, job.id)
    assert done is not None and done.result == {"greeting": "hello folder"}
