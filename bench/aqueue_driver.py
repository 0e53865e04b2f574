"""Runs an earlier aqueue revision (``--baseline``) in a subprocess of its own, never in the
bench process, which has imported the working tree's aqueue.

    python -P -m bench.aqueue_driver aqueue serve ...   # the `aqueue` CLI of that revision
    python -P -m bench.aqueue_driver rpc                # its producer, driven over stdin/stdout

The environment names the revision's directory (BENCH_AQUEUE_ROOT, first on PYTHONPATH;
`-P` keeps the current directory, possibly a checkout of the working tree, off sys.path).
The driver refuses to run unless `aqueue` resolves there, and on exit reports every aqueue
module it loaded with the git blob id of its file, so the harness can prove that the code
that ran is byte for byte the revision's (bench/baseline.py checks the report).

The rpc mode answers one JSON line per request line: open, enqueue_one, enqueue_many,
produce (one of bench.producers' loops, timed in here), install, close."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import IO, Any

ENV_ROOT = "BENCH_AQUEUE_ROOT"
ENV_RECORD_DIR = "BENCH_RECORD_DIR"
WRONG_CODE_EXIT = 3


def blob_id(path: Path) -> str:
    """The id git gives this file's content: compared with the revision's tree."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _module_paths(module: Any) -> list[str]:
    file = getattr(module, "__file__", None)
    if file:
        return [file]
    # a namespace package (an editable install maps aqueue.sql to one) has only __path__
    return [str(p) for p in getattr(module, "__path__", [])]


def loaded_code(root: Path) -> dict[str, Any]:
    """Where every loaded aqueue module came from: files under ``root`` with their blob ids,
    and anything loaded from elsewhere (which must be nothing)."""
    files: dict[str, str] = {}
    outside: list[str] = []
    for name, module in list(sys.modules.items()):
        if name != "aqueue" and not name.startswith("aqueue."):
            continue
        for raw in _module_paths(module):
            path = Path(raw).resolve()
            if not path.is_relative_to(root):
                outside.append(f"{name} from {raw}")
            elif path.is_file():
                files[path.relative_to(root).as_posix()] = blob_id(path)
    sql_dir = None
    db = sys.modules.get("aqueue.db")
    if db is not None and hasattr(db, "sql_dir"):
        # the statements the store loaded at import come from here
        sql = Path(db.sql_dir()).resolve()
        sql_dir = str(sql)
        if not sql.is_relative_to(root):
            outside.append(f"sql/ from {sql}")
        else:
            for path in sorted(sql.glob("*.sql")):
                files[path.relative_to(root).as_posix()] = blob_id(path)
    package = getattr(sys.modules.get("aqueue"), "__file__", None)
    return {
        "pid": os.getpid(),
        "package": str(Path(package).resolve().parent) if package else None,
        "sql_dir": sql_dir,
        "files": files,
        "outside": outside,
    }


def import_checked(root: Path) -> None:
    """Import aqueue and stop at once (exit 3) unless it is the revision's."""
    import aqueue

    where = Path(aqueue.__file__).resolve()
    if not where.is_relative_to(root):
        print(
            f"bench.aqueue_driver: aqueue resolved to {where}, not under {root}: refusing to "
            "run the wrong code",
            file=sys.stderr,
        )
        raise SystemExit(WRONG_CODE_EXIT)
    print(f"bench.aqueue_driver: aqueue from {where.parent}", file=sys.stderr, flush=True)


def run_cli(root: Path, args: list[str]) -> int:
    import_checked(root)
    from aqueue.cli import main

    sys.argv = ["aqueue", *args]
    code: int | str | None = 1
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    report = loaded_code(root)
    record_dir = os.environ.get(ENV_RECORD_DIR)
    if record_dir:
        origin = Path(record_dir) / f"aqueue-origin-{os.getpid()}.json"
        origin.write_text(json.dumps(report))
    if report["outside"]:
        print(f"bench.aqueue_driver: loaded from outside {root}: {report['outside']}",
              file=sys.stderr)  # fmt: skip
        return WRONG_CODE_EXIT
    return code if isinstance(code, int) else 1


async def serve_rpc(root: Path, requests: IO[str], replies: IO[str]) -> None:
    from bench.producers import PRODUCERS
    from bench.systems.aqueue_system import AqueueSystem

    system = AqueueSystem()

    def reply(msg: dict[str, Any]) -> None:
        replies.write(json.dumps(msg) + "\n")
        replies.flush()

    reply({"ok": True, "ready": True, "code": loaded_code(root)})
    try:
        while True:
            line = await asyncio.to_thread(requests.readline)
            if not line:
                return  # the bench process is gone
            req = json.loads(line)
            cmd = req["cmd"]
            try:
                if cmd == "close":
                    await system.close()
                    reply({"ok": True, "code": loaded_code(root)})
                    return
                if cmd == "install":
                    await system.install(req["url"])
                    out: dict[str, Any] = {}
                elif cmd == "open":
                    await system.open(req["url"])
                    out = {}
                elif cmd == "enqueue_one":
                    await system.enqueue_one(req["payload"])
                    out = {}
                elif cmd == "enqueue_many":
                    await system.enqueue_many(req["payloads"])
                    out = {}
                elif cmd == "produce":
                    out = await PRODUCERS[req["kind"]](system, **req["params"])
                else:
                    raise ValueError(f"unknown request {cmd!r}")
            except Exception as exc:
                reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            else:
                reply({"ok": True, "result": out})
    finally:
        await system.close()


def main(argv: list[str]) -> int:
    root_env = os.environ.get(ENV_ROOT)
    if not root_env or not argv or argv[0] not in ("aqueue", "rpc"):
        print(f"usage: {ENV_ROOT}=DIR python -P -m bench.aqueue_driver aqueue ARGS... | rpc",
              file=sys.stderr)  # fmt: skip
        return 2
    root = Path(root_env).resolve()
    if argv[0] == "aqueue":
        return run_cli(root, argv[1:])
    # Replies go to a private copy of stdout; anything the library prints lands on stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    import_checked(root)
    try:
        asyncio.run(serve_rpc(root, sys.stdin, replies))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
