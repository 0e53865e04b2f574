"""Settings: every option of aqueue with its default, its flag and its environment
variable, validated once. Nothing else in the package holds a tunable literal."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aqueue.model import ValidationError, check_name

ALL_ROLES = ("api", "worker", "scheduler", "reaper")
# Roles that exist today; the others are refused with a clear message until they land.
AVAILABLE_ROLES = frozenset({"api", "worker", "reaper"})


class SettingsError(ValueError):
    """A flag or environment variable with a value aqueue cannot use."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    data_dir: Path = Path(".aqueue")
    roles: tuple[str, ...] = ("api", "worker", "reaper")
    host: str = "127.0.0.1"
    port: int = 8000
    app: str | None = None
    # queue name -> how many of its jobs one worker process runs at once
    queues: Mapping[str, int] = field(default_factory=lambda: {"default": 10})
    concurrency: int = 10
    lease_seconds: float = 30.0
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 300.0
    # the safety net under LISTEN/NOTIFY: how often an idle worker looks anyway
    poll_seconds: float = 5.0
    shutdown_grace_seconds: float = 30.0
    reaper_interval_seconds: float = 5.0
    reaper_batch: int = 1000
    max_payload_bytes: int = 1_000_000
    completer_max_batch: int = 1000
    # releases at shutdown that refund a job's attempt; later ones spend it
    free_releases: int = 3
    pool_min_size: int = 2
    pool_max_size: int = 10
    log_level: str = "INFO"
    # how long a migration waits for a lock before it gives up (instead of hanging, with
    # every query on that table queued behind it)
    migration_lock_timeout_seconds: float = 10.0
    # Host headers the API answers (`*` any); None: chosen by `host`, see api_allowed_hosts
    allowed_hosts: tuple[str, ...] | None = None
    # a filtered GET /jobs examines at most this many jobs per page (see list_jobs_bounded)
    list_scan_limit: int = 10_000
    # finished jobs older than this are deleted by the reaper role (None: kept for ever),
    # `retention_batch` per statement, at most `retention_batches` per reaper round
    retention_seconds: float | None = 7 * 86400.0
    retention_batch: int = 1000
    retention_batches: int = 100
    # the reapers VACUUM jobs once it holds this many dead tuples and more than this
    # fraction of its live ones (autovacuum may be off, or wake too rarely for a queue)
    hot_vacuum_dead: int = 10_000
    hot_vacuum_scale: float = 0.2

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

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


ENV_VARS = {
    "database_url": "DATABASE_URL",
    "data_dir": "AQUEUE_DATA_DIR",
    "roles": "AQUEUE_ROLES",
    "host": "AQUEUE_HOST",
    "port": "AQUEUE_PORT",
    "app": "AQUEUE_APP",
    "queues": "AQUEUE_QUEUES",
    "concurrency": "AQUEUE_CONCURRENCY",
    "lease_seconds": "AQUEUE_LEASE_SECONDS",
    "backoff_base_seconds": "AQUEUE_BACKOFF_BASE",
    "backoff_cap_seconds": "AQUEUE_BACKOFF_CAP",
    "poll_seconds": "AQUEUE_POLL_SECONDS",
    "shutdown_grace_seconds": "AQUEUE_SHUTDOWN_GRACE",
    "reaper_interval_seconds": "AQUEUE_REAPER_INTERVAL",
    "max_payload_bytes": "AQUEUE_MAX_PAYLOAD_BYTES",
    "allowed_hosts": "AQUEUE_ALLOWED_HOSTS",
    "pool_max_size": "AQUEUE_POOL_SIZE",
    "log_level": "AQUEUE_LOG_LEVEL",
    "migration_lock_timeout_seconds": "AQUEUE_MIGRATION_LOCK_TIMEOUT",
    "retention_seconds": "AQUEUE_RETENTION",
}
# QUEUE is what the seed's worker read; AQUEUE_QUEUES wins when both are set.
ENV_FALLBACKS = {"queues": "QUEUE"}


def env_value(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    environ = os.environ if environ is None else environ
    value = environ.get(ENV_VARS[name])
    if value is None and name in ENV_FALLBACKS:
        value = environ.get(ENV_FALLBACKS[name])
    return value or None


def parse_roles(text: str) -> tuple[str, ...]:
    roles = tuple(dict.fromkeys(r.strip() for r in text.split(",") if r.strip()))
    if not roles:
        raise SettingsError("--roles needs at least one of: " + ", ".join(ALL_ROLES))
    for role in roles:
        if role not in ALL_ROLES:
            raise SettingsError(f"unknown role {role!r}; roles are: {', '.join(ALL_ROLES)}")
        if role not in AVAILABLE_ROLES:
            raise SettingsError(f"role {role!r} is not available in this version yet")
    return roles


def parse_queues(text: str, concurrency: int) -> dict[str, int]:
    """`default,email:5` -> {"default": concurrency, "email": 5}."""
    queues: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, limit = item.partition(":")
        try:
            check_name("queue", name)
        except ValidationError as exc:
            raise SettingsError(f"--queues: {exc}") from None
        queues[name] = parse_positive_int(f"--queues {name}", limit) if limit else concurrency
    if not queues:
        raise SettingsError("--queues needs at least one queue name")
    return queues


def parse_positive_int(what: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{what} must be a whole number, got {text!r}") from None
    if value < 1:
        raise SettingsError(f"{what} must be at least 1, got {value}")
    return value


def parse_positive_float(what: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{what} must be a number, got {text!r}") from None
    if not value > 0:
        raise SettingsError(f"{what} must be greater than 0, got {text}")
    return value


def parse_port(text: str) -> int:
    port = parse_positive_int("--port", text)
    if port > 65535:
        raise SettingsError(f"--port must be at most 65535, got {port}")
    return port


# PostgreSQL's jsonb holds at most 2^28 - 1 bytes (255 MiB); a larger limit only lets the
# API buffer bodies that the database would then refuse.
MAX_PAYLOAD_LIMIT = 268_435_455


def parse_payload_limit(text: str) -> int:
    limit = parse_positive_int("--max-payload-bytes", text)
    if limit > MAX_PAYLOAD_LIMIT:
        raise SettingsError(
            f"--max-payload-bytes must be at most {MAX_PAYLOAD_LIMIT} (PostgreSQL's jsonb "
            f"limit), got {limit}"
        )
    return limit


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


def parse_allowed_hosts(text: str) -> tuple[str, ...]:
    """`api.example.com,*.internal` -> ("api.example.com", "*.internal"); `*` is any."""
    hosts = tuple(dict.fromkeys(h.strip().lower() for h in text.split(",") if h.strip()))
    if not hosts:
        raise SettingsError("--allowed-hosts needs at least one host name, or * for any")
    for host in hosts:
        valid = host == "*" or _ALLOWED_HOST.fullmatch(host) is not None
        if valid and host.startswith("["):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                valid = False
        if not valid:
            raise SettingsError(
                f"--allowed-hosts: {host!r} is not a host name, an IP address, an IPv6 address"
                " in brackets, *.domain or *; give it without a scheme or port"
            )
    return hosts


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_retention(text: str) -> float | None:
    """`7d`, `12h`, `30m`, `90s` or `3600` (seconds) -> seconds; `0` or `off` -> None
    (finished jobs are kept for ever)."""
    value = text.strip().lower()
    if value in ("off", "never", "forever"):
        return None
    match = _DURATION.fullmatch(value)
    if match is None:
        raise SettingsError(
            f"--retention must be a duration like 7d, 12h, 30m, 90s, or 0/off to keep "
            f"finished jobs for ever, got {text!r}"
        )
    seconds = float(match[1]) * _DURATION_UNITS[match[2]]
    return seconds or None
