"""One worker process of a peer system, used through its public API:

    python -m bench.peer_worker pgqueuer|procrastinate --database-url URL --settings JSON

SIGTERM stops it gracefully (each library's own shutdown path), then it exits 0."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any

from bench.recorder import record


async def run_pgqueuer(url: str, settings: dict[str, Any]) -> None:
    import asyncpg
    from pgqueuer import PgQueuer
    from pgqueuer.models import Job

    conn = await asyncpg.connect(url)
    pgq = PgQueuer.from_asyncpg_connection(conn)

    @pgq.entrypoint("bench.noop")
    async def noop(job: Job) -> None:
        record(json.loads(job.payload) if job.payload else {})

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, pgq.shutdown.set)
    try:
        await pgq.run(**settings)
    finally:
        await conn.close()


async def run_procrastinate(url: str, settings: dict[str, Any]) -> None:
    from bench.systems.procrastinate_app import make_app

    settings = dict(settings)
    pool = settings.pop("pool", None) or {}
    app = make_app(url, pool)
    # procrastinate installs its own SIGTERM/SIGINT handlers (install_signal_handlers=True
    # by default) and stops gracefully on them.
    async with app.open_async():
        await app.run_worker_async(**settings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("system", choices=["pgqueuer", "procrastinate"])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--settings", default="{}")
    args = parser.parse_args()
    settings = json.loads(args.settings)
    runner = run_pgqueuer if args.system == "pgqueuer" else run_procrastinate
    asyncio.run(runner(args.database_url, settings))


if __name__ == "__main__":
    main()
