"""Settings: every option of aqueue, declared once, validated once. Nothing else in the
package holds a tunable literal.

The `Settings` class body is the table of options. A field declared with `option(...)`
carries its default, its parser, its CLI flag, its environment variable, its help text and
the commands that take it; `OPTIONS` lists those rows, `aqueue/cli.py` builds its flags
from them, `load_settings` reads them (flag, else environment, else default) and the
README's configuration table is held to them by tests/unit/test_readme.py.

Plain fields (`reaper_batch`, `completer_max_batch`, `free_releases`, `pool_min_size`,
`list_scan_limit`, `max_url_bytes`, `max_header_bytes`, ...) are internal knobs with no
flag or variable: code and tests set them through `Settings(...)` or `with_overrides`.

Adding an option: one `option(...)` field below, read where it is used. A parser takes the
text of the flag or variable and returns the value, or raises SettingsError with a message
that completes a sentence about the option ("must be a number, got 'x'"): the loader puts
the flag (and the variable, when the value came from one) in front. `integer`,
`positive_float`, `seconds`, `duration` and `comma_list` cover most options. A rule across options
belongs in `_settle`. An option that holds a secret may also name `file_env`, a variable
whose value is the path of a file holding the value (see `read_secret_file`).
"""

from __future__ import annotations

import copy
import importlib.util
import ipaddress
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aqueue.model import ValidationError, check_name

T = TypeVar("T")

ALL_ROLES = ("api", "worker", "scheduler", "reaper")
COMMANDS = (
    "serve",
    "migrate",
    "enqueue",
    "status",
    "cancel",
    "retry",
    "retry-dead",
    "pause",
    "resume",
    "queues",
    "workers",
    "schedules",
    "limits",
    "tokens",
)


class SettingsError(ValueError):
    """A flag or environment variable with a value aqueue cannot use."""


# --- parsers: text -> value, or SettingsError("must be ..., got 'text'") ------------------


def integer(minimum: int | None = 1, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise SettingsError(f"must be a whole number, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise SettingsError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise SettingsError(f"must be at most {maximum}, got {value}")
        return value

    return parse


positive_int = integer(1)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"must be a number, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise SettingsError(f"must be a finite number greater than 0, got {text}")
    return value


# The longest span an option of seconds takes: ten years. PostgreSQL's make_interval does
# not refuse a larger number but wraps it (1e300 seconds comes back a negative interval: a
# lease that has expired when it is granted), and the event loop's timers overflow too.
MAX_SECONDS = 10 * 365 * 86_400.0


def seconds(text: str) -> float:
    """A number of seconds, greater than 0 and at most MAX_SECONDS."""
    return _within_max_seconds(positive_float(text), text)


def _within_max_seconds(value: float, text: str) -> float:
    if value > MAX_SECONDS:
        raise SettingsError(
            f"must be at most {MAX_SECONDS:.0f} seconds (ten years), got {text.strip()!r}"
        )
    return value


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def duration(text: str) -> float:
    """Seconds, from `90`, `2.5`, `30s`, `15m`, `2h`, `7d`, `1w` or a sum such as `1h30m`."""
    cleaned = text.strip().lower()
    try:
        number = positive_float(cleaned)
    except SettingsError:
        pass
    else:
        return _within_max_seconds(number, text)
    parts = _DURATION_PART.findall(cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise SettingsError(f"must be a duration such as 90, 30s, 15m, 2h or 7d, got {text!r}")
    total = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if not total > 0:
        raise SettingsError(f"must be longer than 0 seconds, got {text!r}")
    return _within_max_seconds(total, text)


def comma_list(
    item: Callable[[str], T], empty: str = "needs at least one value"
) -> Callable[[str], tuple[T, ...]]:
    """`a, b,,a` -> (item("a"), item("b")): blanks and repeats dropped, order kept."""

    def parse(text: str) -> tuple[T, ...]:
        values = tuple(dict.fromkeys(item(p.strip()) for p in text.split(",") if p.strip()))
        if not values:
            raise SettingsError(empty)
        return values

    return parse


def _role(name: str) -> str:
    if name not in ALL_ROLES:
        raise SettingsError(f"has an unknown role {name!r}; roles are: {', '.join(ALL_ROLES)}")
    return name


parse_roles = comma_list(_role, "needs at least one of: " + ", ".join(ALL_ROLES))

parse_port = integer(1, 65535)

# PostgreSQL's jsonb holds at most 2^28 - 1 bytes (255 MiB); a larger limit only lets the
# API buffer bodies that the database would then refuse.
MAX_PAYLOAD_LIMIT = 268_435_455


def parse_payload_limit(text: str) -> int:
    limit = positive_int(text)
    if limit > MAX_PAYLOAD_LIMIT:
        raise SettingsError(
            f"must be at most {MAX_PAYLOAD_LIMIT} (PostgreSQL's jsonb limit), got {limit}"
        )
    return limit


# Bodies are read into memory whole (JSON is parsed whole): a limit past this is no limit.
MAX_BODY_LIMIT = 1 << 30

parse_body_limit = integer(1, MAX_BODY_LIMIT)


def switch(text: str) -> bool:
    cleaned = text.strip().lower()
    if cleaned in ("on", "true", "yes", "1"):
        return True
    if cleaned in ("off", "false", "no", "0"):
        return False
    raise SettingsError(f"must be on or off, got {text!r}")


# a shared secret a person types or pastes: long enough that guessing it is hopeless
MIN_API_TOKEN_LENGTH = 16


def parse_api_token(text: str) -> str:
    token = text.strip()
    if len(token) < MIN_API_TOKEN_LENGTH or any(c.isspace() for c in token):
        raise SettingsError(
            f"must be at least {MIN_API_TOKEN_LENGTH} characters without spaces "
            "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def parse_log_level(text: str) -> str:
    if text.upper() not in logging.getLevelNamesMapping():
        raise SettingsError(f"{text!r} is not a logging level")
    return text.upper()


EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def parse_event_loop(text: str) -> str:
    name = text.strip().lower()
    if name not in EVENT_LOOPS:
        raise SettingsError(f"must be one of {', '.join(EVENT_LOOPS)}, got {text!r}")
    if name == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise SettingsError("asks for uvloop, which is not installed (pip install uvloop)")
    return name


# A queue without a limit of its own runs --concurrency jobs at once: see _settle.
QueueLimits = tuple[tuple[str, int | None], ...]


def _queue(item: str) -> tuple[str, int | None]:
    name, _, limit = item.partition(":")
    try:
        check_name("queue", name)
    except ValidationError as exc:
        raise SettingsError(f"has an invalid queue name: {exc}") from None
    if not limit:
        return name, None
    try:
        return name, positive_int(limit)
    except SettingsError as exc:
        raise SettingsError(f"gives the queue {name!r} a limit that {exc}") from None


parse_queue_limits = comma_list(_queue, "needs at least one queue name")


def resolve_queues(limits: QueueLimits, concurrency: int) -> dict[str, int]:
    # a queue named twice: its last limit counts, its first place does
    return {name: concurrency if limit is None else limit for name, limit in limits}


def parse_queues(text: str, concurrency: int) -> dict[str, int]:
    """`default,email:5` -> {"default": concurrency, "email": 5}."""
    return resolve_queues(parse_queue_limits(text), concurrency)


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# a name, `*.name`, an IPv4 address or a bracketed IPv6 address; `*` alone is any host
_ALLOWED_HOST = re.compile(r"(\*\.)?[a-z0-9_]([a-z0-9_.\-]*[a-z0-9_])?|\[[0-9a-f:.]+\]")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _allowed_host(text: str) -> str:
    host = text.lower()
    valid = host == "*" or _ALLOWED_HOST.fullmatch(host) is not None
    if valid and host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            valid = False
    if not valid:
        raise SettingsError(
            f"has {host!r}, which is not a host name, an IP address, an IPv6 address in "
            "brackets, *.domain or *; give it without a scheme or port"
        )
    return host


# `api.example.com,*.internal` -> ("api.example.com", "*.internal"); `*` is any
parse_allowed_hosts = comma_list(_allowed_host, "needs at least one host name, or * for any")


_ORIGIN_HOST = re.compile(r"[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _cors_origin(text: str) -> str:
    """`https://App.example.com:443` -> `https://app.example.com`: an origin as a browser
    sends it in its Origin header (lower case, no default port), so that it compares equal."""
    if text == "*":
        raise SettingsError(
            "does not take *: the API answers with job payloads and acts on queues, so name "
            "each origin whose pages may use it (https://app.example.com)"
        )
    if "*" in text:
        raise SettingsError(f"has {text!r}: wildcards are not taken, name each origin")
    shape = "an origin is scheme://host[:port] with nothing after it, e.g. https://app.example.com"
    try:
        parts = urlsplit(text.lower())
        port = parts.port
    except ValueError:
        raise SettingsError(f"has {text!r}, which is not an origin: {shape}") from None
    host = parts.hostname or ""
    bracketed = parts.netloc.rpartition("@")[2].startswith("[")
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            host = ""
    if (
        parts.scheme not in _DEFAULT_PORTS
        or not (bracketed or _ORIGIN_HOST.fullmatch(host))
        or parts.username is not None
        or parts.path
        or parts.query
        or parts.fragment
        or text.endswith(("?", "#"))
    ):
        raise SettingsError(f"has {text!r}, which is not an origin: {shape}")
    netloc = f"[{host}]" if bracketed else host
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        netloc += f":{port}"
    return f"{parts.scheme}://{netloc}"


# `https://app.example.com,http://localhost:3000` -> those origins, as browsers send them
parse_cors_origins = comma_list(_cors_origin, "needs at least one origin (https://app.example.com)")


# --- the table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One row of the table of options (see `option`)."""

    name: str
    default: Any
    parse: Callable[[str], Any]
    flag: str
    env: str
    help: str
    commands: tuple[str, ...]
    # a variable read when `env` is unset
    env_fallback: str | None
    # how the default reads in --help and the README, when str(default) would not do
    shown: str | None
    # a variable naming a file whose content (stripped of surrounding whitespace) is the
    # value, read when neither the flag nor `env` (nor `env_fallback`) is set: a secret as
    # Kubernetes and Docker mount them, kept out of the environment
    file_env: str | None = None

    @property
    def env_names(self) -> tuple[str, ...]:
        """The variables that hold the value itself."""
        return (self.env,) if self.env_fallback is None else (self.env, self.env_fallback)

    @property
    def variables(self) -> tuple[str, ...]:
        """Every variable the option reads: those with the value, then the file's."""
        return self.env_names if self.file_env is None else (*self.env_names, self.file_env)

    @property
    def shown_default(self) -> str:
        if self.shown is not None:
            return self.shown
        value = self.default
        if value is None:
            return "none"
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, tuple | list | Mapping):
            return ",".join(str(v) for v in value)
        return str(value)

    def describe(self, env: str | None) -> str:
        """How an error names the option: by its flag, and by the variable the bad value
        came from, if it came from one."""
        if env is not None and env == self.file_env:
            return f"{self.flag} (from the file {env} names)"
        return self.flag if env is None else f"{self.flag} (env {env})"


_ROW = "aqueue.option"


def option(
    default: T,
    *,
    parse: Callable[[str], Any],
    flag: str,
    env: str,
    help: str,
    commands: tuple[str, ...] = ("serve",),
    env_fallback: str | None = None,
    shown: str | None = None,
    file_env: str | None = None,
    secret: bool = False,
) -> T:
    """A Settings field that is also a row of the table of options. A `secret` one is
    left out of the Settings' repr, so that a logged or printed Settings shows no secret."""
    row = {
        "parse": parse,
        "flag": flag,
        "env": env,
        "help": help,
        "commands": commands,
        "env_fallback": env_fallback,
        "shown": shown,
        "file_env": file_env,
    }
    if type(default).__hash__ is None:  # a dict or list: each Settings gets its own copy
        made: Any = field(
            default_factory=lambda: copy.copy(default), metadata={_ROW: row}, repr=not secret
        )
    else:
        made = field(default=default, metadata={_ROW: row}, repr=not secret)
    return made


def retention(text: str) -> float | None:
    """A duration (see `duration`), or `0`/`off` for none: finished jobs kept for ever."""
    cleaned = text.strip().lower()
    if cleaned in ("off", "never", "forever") or re.fullmatch(r"0+(\.0*)?[smhdw]?", cleaned):
        return None
    return duration(text)


@dataclass(frozen=True)
class RateLimit:
    """`count` requests per `period` seconds, with bursts of up to `count` at once."""

    count: int
    period: float

    @property
    def interval(self) -> float:
        """Seconds one request spends of the budget (GCRA's emission interval)."""
        return self.period / self.count

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}[self.period]
        return f"{self.count}/{unit}"


_RATE = re.compile(r"(\d+)\s*/\s*(s|sec|second|min|minute|h|hour)")
_RATE_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0}
_RATE_PERIODS.update({"h": 3600.0, "hour": 3600.0})


def rate_limit(text: str) -> RateLimit:
    """`5/s`, `100/min`, `1000/h` -> RateLimit."""
    match = _RATE.fullmatch(text.strip().lower())
    if match is None or int(match[1]) < 1:
        raise SettingsError(f"must be a rate such as 5/s, 100/min or 1000/h, got {text!r}")
    return RateLimit(int(match[1]), _RATE_PERIODS[match[2]])


def _seconds(default: float, flag: str, env: str, help: str, **more: Any) -> float:
    return option(default, parse=seconds, flag=flag, env=env, help=help, **more)


@dataclass(frozen=True)
class Settings:
    database_url: str | None = option(
        None,
        parse=str,
        flag="--database-url",
        env="DATABASE_URL",
        help="PostgreSQL URL; without one, an embedded PostgreSQL is started in --data-dir",
        commands=COMMANDS,
        shown="embedded",
        # the URL holds the password: a file keeps it out of the environment, which child
        # processes inherit and /proc/<pid>/environ shows
        file_env="AQUEUE_DATABASE_URL_FILE",
        secret=True,
    )
    data_dir: Path = option(
        Path(".aqueue"),
        parse=Path,
        flag="--data-dir",
        env="AQUEUE_DATA_DIR",
        help="home of the embedded PostgreSQL",
        commands=COMMANDS,
    )
    roles: tuple[str, ...] = option(
        ("api", "worker", "scheduler", "reaper"),
        parse=parse_roles,
        flag="--roles",
        env="AQUEUE_ROLES",
        help="comma-separated roles this process runs",
    )
    host: str = option("127.0.0.1", parse=str, flag="--host", env="AQUEUE_HOST", help="API address")
    port: int = option(8000, parse=parse_port, flag="--port", env="AQUEUE_PORT", help="API port")
    # GET /metrics on a port of its own, on --host (the metrics role), for processes
    # without the api role; with it too, both answer (see README, Metrics)
    metrics_port: int | None = option(
        None,
        parse=parse_port,
        flag="--metrics-port",
        env="AQUEUE_METRICS_PORT",
        help="serve GET /metrics (and /healthz) on this port of --host too, for processes "
        "without the api role",
    )
    app: str | None = option(
        None,
        parse=str,
        flag="--app",
        env="AQUEUE_APP",
        help="your task registry as module:attribute (an aqueue.Registry)",
    )
    # queue name -> how many of its jobs one worker process runs at once
    queues: Mapping[str, int] = option(
        {"default": 10},
        parse=parse_queue_limits,
        flag="--queues",
        env="AQUEUE_QUEUES",
        # QUEUE is what the seed's worker read; AQUEUE_QUEUES wins when both are set.
        env_fallback="QUEUE",
        help="queues this worker serves, with optional per-queue concurrency: default,email:5",
    )
    concurrency: int = option(
        10,
        parse=positive_int,
        flag="--concurrency",
        env="AQUEUE_CONCURRENCY",
        help="jobs run at once per queue",
    )
    lease_seconds: float = _seconds(
        30.0, "--lease-seconds", "AQUEUE_LEASE_SECONDS", "how long a silent worker keeps a job"
    )
    backoff_base_seconds: float = _seconds(
        1.0, "--backoff-base", "AQUEUE_BACKOFF_BASE", "first retry delay, seconds"
    )
    backoff_cap_seconds: float = _seconds(
        300.0, "--backoff-cap", "AQUEUE_BACKOFF_CAP", "longest retry delay, seconds"
    )
    # the safety net under LISTEN/NOTIFY: how often an idle worker looks anyway
    poll_seconds: float = _seconds(
        5.0, "--poll-seconds", "AQUEUE_POLL_SECONDS", "safety-net poll of an idle worker, seconds"
    )
    shutdown_grace_seconds: float = _seconds(
        30.0, "--shutdown-grace", "AQUEUE_SHUTDOWN_GRACE", "seconds running jobs get at shutdown"
    )
    reaper_interval_seconds: float = _seconds(
        5.0, "--reaper-interval", "AQUEUE_REAPER_INTERVAL", "seconds between reaper rounds"
    )
    reaper_batch: int = 1000
    max_payload_bytes: int = option(
        1_000_000,
        parse=parse_payload_limit,
        flag="--max-payload-bytes",
        env="AQUEUE_MAX_PAYLOAD_BYTES",
        help="largest job payload accepted, as compact JSON",
        commands=("serve", "enqueue"),
    )
    # every request body, on every route, is refused past this (413) before any route
    # reads it; a payload travels inside a body, so --max-payload-bytes may not exceed it
    max_body_bytes: int = option(
        1_048_576,
        parse=parse_body_limit,
        flag="--max-body-bytes",
        env="AQUEUE_MAX_BODY_BYTES",
        help="largest request body the API takes, on any route (larger: 413)",
    )
    # HTTPS for the api role and the metrics port (both uvicorn servers): a PEM
    # certificate chain and its unencrypted key, both or neither (see _settle)
    ssl_certfile: Path | None = option(
        None,
        parse=Path,
        flag="--ssl-certfile",
        env="AQUEUE_SSL_CERTFILE",
        help="serve HTTPS (the API and --metrics-port) with this PEM certificate chain; "
        "needs --ssl-keyfile",
        shown="none (plain HTTP)",
    )
    ssl_keyfile: Path | None = option(
        None,
        parse=Path,
        flag="--ssl-keyfile",
        env="AQUEUE_SSL_KEYFILE",
        help="the PEM private key of --ssl-certfile, unencrypted",
    )
    # Origins whose pages may call the API from a browser (CORS): exact origins, never
    # `*`; their state-changing requests pass the cross-site check too (api/origin.py)
    cors_origins: tuple[str, ...] = option(
        (),
        parse=parse_cors_origins,
        flag="--cors-origins",
        env="AQUEUE_CORS_ORIGINS",
        help="origins whose web pages may call the API (CORS), comma-separated: "
        "https://app.example.com",
        shown="off",
    )
    # The request's URL (path and query string) and its headers (names and values summed)
    # past which the API answers 414 and 431: no route needs more, and uvicorn is held to
    # the same while it reads a request (aqueue/protocol.py), so a client cannot make the
    # server hold a head of any size.
    max_url_bytes: int = 8192
    max_header_bytes: int = 16384
    completer_max_batch: int = 1000
    # releases at shutdown that refund a job's attempt; later ones spend it
    free_releases: int = 3
    pool_min_size: int = 2
    pool_max_size: int = option(
        10,
        parse=positive_int,
        flag="--pool-size",
        env="AQUEUE_POOL_SIZE",
        help="database connections in the pool",
    )
    log_level: str = option(
        "INFO",
        parse=parse_log_level,
        flag="--log-level",
        env="AQUEUE_LOG_LEVEL",
        help="logging level",
    )
    # The event loop the process runs on. uvloop spends less of the client's CPU per
    # statement than asyncio's own loop (a worker: a tenth less per job in a drain at
    # concurrency 50; see README, Benchmarks); auto takes it where it is installed.
    event_loop: str = option(
        "auto",
        parse=parse_event_loop,
        flag="--loop",
        env="AQUEUE_LOOP",
        help="event loop: uvloop, asyncio, or auto (uvloop where installed)",
        commands=COMMANDS,
    )
    # how long a migration waits for a lock before it gives up (instead of hanging, with
    # every query on that table queued behind it)
    migration_lock_timeout_seconds: float = _seconds(
        10.0,
        "--lock-timeout",
        "AQUEUE_MIGRATION_LOCK_TIMEOUT",
        "seconds a migration waits for a lock held by another transaction before it gives up",
        commands=("serve", "migrate"),
    )
    # Host headers the API answers (`*` any); None: chosen by `host`, see api_allowed_hosts
    allowed_hosts: tuple[str, ...] | None = option(
        None,
        parse=parse_allowed_hosts,
        flag="--allowed-hosts",
        env="AQUEUE_ALLOWED_HOSTS",
        help="Host headers the API answers, comma-separated, *.domain for subdomains, * for any",
        shown="loopback --host: localhost,127.0.0.1,[::1]; else *",
    )
    # requests per client per period on the API, one budget for every API replica
    rate_limit: RateLimit | None = option(
        None,
        parse=rate_limit,
        flag="--rate-limit",
        env="AQUEUE_RATE_LIMIT",
        help="API requests per client (its token's name with --auth, else its address), "
        "shared by every API replica: 5/s, 100/min or 1000/h",
        shown="off",
    )
    # API authentication: None follows api_token (on when one is given); see auth_enabled
    auth: bool | None = option(
        None,
        parse=switch,
        flag="--auth",
        env="AQUEUE_AUTH",
        help="require a bearer token on every route but /healthz, /readyz and the "
        "dashboard's page, files and sign-in (tokens from aqueue tokens create, or "
        "--api-token): on or off",
        shown="on with --api-token, else off",
    )
    # the simple mode: one shared token with every scope, beside the database's tokens
    api_token: str | None = option(
        None,
        parse=parse_api_token,
        flag="--api-token",
        env="AQUEUE_API_TOKEN",
        help="one shared bearer token with every scope (turns --auth on)",
        shown="none",
        secret=True,
        file_env="AQUEUE_API_TOKEN_FILE",
    )
    threads: int = option(
        10,
        parse=positive_int,
        flag="--threads",
        env="AQUEUE_THREADS",
        help="threads for plain def handlers (blocking code), per worker process",
    )
    promote_after_seconds: float = _seconds(
        60.0,
        "--promote-after",
        "AQUEUE_PROMOTE_AFTER",
        "a job due this many seconds goes first in its queue, whatever its priority",
    )
    # a filtered GET /jobs examines at most this many jobs per page (see list_jobs_bounded)
    list_scan_limit: int = 10_000
    # finished jobs older than this are deleted by the reaper role (None: kept for ever),
    # `retention_batch` per statement, at most `retention_batches` per reaper round
    retention_seconds: float | None = option(
        7 * 86400.0,
        parse=retention,
        flag="--retention",
        env="AQUEUE_RETENTION",
        help="finished jobs older than this are deleted by the reaper role: 7d, 12h, 30m, "
        "or 0/off to keep them for ever",
        shown="7d",
    )
    retention_batch: int = 1000
    retention_batches: int = 100
    # the reapers VACUUM jobs once it holds this many dead tuples and more than this
    # fraction of its live ones (autovacuum may be off, or wake too rarely for a queue)
    hot_vacuum_dead: int = 10_000
    hot_vacuum_scale: float = 0.2
    # GET /metrics reads the database gauges at most once per this many seconds
    metrics_cache_seconds: float = 2.0

    @property
    def pool_size(self) -> int:
        """The pool is for handlers, the API and maintenance. A worker's own loops (one
        claim loop per queue, the completer, the heartbeat) keep connections of their own
        outside it, so handlers holding every pooled connection cannot starve them."""
        return self.pool_max_size

    @property
    def heartbeat_seconds(self) -> float:
        """Renew leases three times per lease: one lost heartbeat never loses a job."""
        return self.lease_seconds / 3

    @property
    def tls(self) -> bool:
        """Whether the HTTP servers speak HTTPS (the certificate and key come together)."""
        return self.ssl_certfile is not None

    @property
    def api_allowed_hosts(self) -> tuple[str, ...]:
        """Bound to loopback, the API answers only local names: a web page whose own name
        resolves to 127.0.0.1 (DNS rebinding) gets a 400 instead of every job. Bound
        elsewhere, any: a deployment's own ingress or proxy decides which names reach it."""
        if self.allowed_hosts is not None:
            return self.allowed_hosts
        if not is_loopback(self.host):
            return ("*",)
        bound = f"[{self.host}]" if ":" in self.host else self.host.lower()
        return tuple(dict.fromkeys((*LOOPBACK_HOSTS, bound)))

    @property
    def auth_enabled(self) -> bool:
        return self.auth if self.auth is not None else self.api_token is not None

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _rows() -> tuple[Option, ...]:
    defaults = Settings()
    return tuple(
        Option(name=f.name, default=getattr(defaults, f.name), **f.metadata[_ROW])
        for f in fields(Settings)
        if _ROW in f.metadata
    )


OPTIONS = _rows()


def options_for(command: str) -> tuple[Option, ...]:
    return tuple(o for o in OPTIONS if command in o.commands)


# --- loading -----------------------------------------------------------------------------


def load_settings(
    flags: Mapping[str, Any], environ: Mapping[str, str], command: str = "serve"
) -> Settings:
    """Settings for `command` from its flags (text or None, by option name) and the
    environment: a flag wins over its variable, which wins over the file its file
    variable names (`Option.file_env`), which wins over the default. An empty variable
    counts as unset. Options `command` does not take keep their defaults."""
    values: dict[str, Any] = {}
    for row in options_for(command):
        text, env = flags.get(row.name), None
        if text is None:
            env = next((name for name in row.variables if environ.get(name)), None)
            if env is None:
                continue
            text = read_secret_file(row, environ[env]) if env == row.file_env else environ[env]
        try:
            values[row.name] = row.parse(text)
        except SettingsError as exc:
            message = str(exc)
            if env is not None and env == row.file_env:
                # parsers quote what they refuse: not what a secret's file holds (too
                # short to be one, it is left, or every digit 1 of a message would go)
                message = message.replace(repr(text), "(its content)")
                if len(text) >= 4:
                    message = message.replace(text, "(its content)")
            raise SettingsError(f"{row.describe(env)} {message}") from None
    _settle(values, command)
    return Settings(**values)


# a secret is a line or two; a larger file is a wrong path (a log, a device)
MAX_SECRET_FILE_BYTES = 65_536


def read_secret_file(row: Option, path: str) -> str:
    """The content of the file `row.file_env` names, stripped of surrounding whitespace
    (the final newline of `echo ... > file`, or of a mounted Secret's value). Errors name
    the variable and the path, never the content."""
    where = f"{row.flag}: the file {row.file_env} names ({path})"
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise SettingsError(f"{where} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise SettingsError(f"{where} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SettingsError(f"{where} is not UTF-8 text") from None
    if not text:
        raise SettingsError(f"{where} is empty")
    return text


def _settle(values: dict[str, Any], command: str) -> None:
    """The rules across options, on the values given (the others keep their defaults)."""
    defaults = Settings()
    if ("ssl_certfile" in values) != ("ssl_keyfile" in values):
        given, missing = (
            ("--ssl-certfile", "--ssl-keyfile")
            if "ssl_certfile" in values
            else ("--ssl-keyfile", "--ssl-certfile")
        )
        raise SettingsError(
            f"{given} needs {missing} too: HTTPS takes a certificate and its private key"
        )
    # only where both apply: `aqueue enqueue` sends no HTTP request, its payload no body
    if "max_payload_bytes" in values and command == "serve":
        body = values.get("max_body_bytes", defaults.max_body_bytes)
        if values["max_payload_bytes"] > body:
            raise SettingsError(
                f"--max-payload-bytes ({values['max_payload_bytes']}) must not be larger "
                f"than --max-body-bytes ({body}): a payload travels inside a request body, "
                "so raise --max-body-bytes too"
            )
    if "queues" in values or "concurrency" in values:
        limits = values.get("queues") or tuple(dict.fromkeys(defaults.queues, None).items())
        values["queues"] = resolve_queues(limits, values.get("concurrency", defaults.concurrency))
    if "pool_max_size" in values:
        values["pool_min_size"] = min(defaults.pool_min_size, values["pool_max_size"])
    roles = values.get("roles", defaults.roles)
    port = values.get("port", defaults.port)
    if "api" in roles and values.get("metrics_port") == port:
        raise SettingsError(f"--metrics-port must differ from --port ({port}) with the api role")
    if values.get("auth") is False and values.get("api_token") is not None:
        raise SettingsError("--api-token needs authentication on: drop --auth off")
    base = values.get("backoff_base_seconds", defaults.backoff_base_seconds)
    if values.get("backoff_cap_seconds", defaults.backoff_cap_seconds) < base:
        raise SettingsError("--backoff-cap must not be smaller than --backoff-base")
