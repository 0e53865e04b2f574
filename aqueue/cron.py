"""Cron schedules: what a schedule is, its cron expression and the ticks it names in
the schedule's own time zone, and what a scheduler does with a due one. Pure: no I/O.

Five fields (minute hour day-of-month month day-of-week), or six with seconds first
(second minute hour day-of-month month day-of-week), as Quartz, Spring and node-cron
write them. Ticks are computed by croniter in the schedule's IANA zone, so a daily
`0 3 * * *` stays at 03:00 local time across DST changes, following croniter's rules for
the hour that is skipped or repeated."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from aqueue.model import (
    JobSpec,
    ValidationError,
    check_name,
    check_payload,
    check_spec,
    json_fields,
)


def check_cron(expr: object) -> str:
    """The expression, if croniter accepts it with 5 or 6 fields; else ValidationError."""
    if not isinstance(expr, str) or not expr.strip():
        raise ValidationError("'cron' must be a cron expression such as \"*/5 * * * *\"")
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise ValidationError(
            f"'cron' must have 5 fields (minute hour day month weekday) or 6 with seconds "
            f"first; {expr!r} has {len(fields)}"
        )
    normal = " ".join(fields)
    seconds_first = len(fields) == 6
    if not croniter.is_valid(normal, second_at_beginning=seconds_first):
        raise ValidationError(f"'cron' {expr!r} is not a valid cron expression")
    # croniter takes dates no calendar has (`0 0 31 11 *`, `0 0 30 2 *`) and only fails
    # when asked for a tick: ask now, not in the scheduler
    try:
        croniter(normal, datetime.now(UTC), second_at_beginning=seconds_first).get_next(datetime)
    except CroniterError:
        raise ValidationError(
            f"'cron' {expr!r} never fires (its months have no such day)"
        ) from None
    return normal


def check_timezone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ValidationError("'timezone' must be an IANA time zone name such as \"UTC\"")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a name that is a folder of the zone database (`America`) or too long
        # for a file name; it is the caller's input, not a lost database connection
        shown = repr(name) if len(name) <= 60 else repr(name[:56]) + "..."
        raise ValidationError(
            f"'timezone' {shown} is not a known IANA time zone (e.g. UTC, Europe/Berlin)"
        ) from None


def next_tick(expr: str, zone: str, after: datetime) -> datetime:
    """The first tick of `expr` strictly after `after`, in UTC."""
    local = after.astimezone(ZoneInfo(zone))
    it = croniter(expr, local, second_at_beginning=len(expr.split()) == 6)
    tick: datetime = it.get_next(datetime)
    return tick.astimezone(UTC)


@dataclass(frozen=True)
class Firing:
    """What a scheduler does with a due schedule: enqueue the tick `run` (None: nothing)
    and move the schedule on to `next_at`. `missed`: later ticks were due too (the
    schedulers were down), collapsed by the policy."""

    run: datetime | None
    next_at: datetime
    missed: bool


# Ticks later than this count as missed (the schedulers were down): a tick merely late (a
# busy database, a scheduler restarting) still runs, each in turn.
MISSED_AFTER_SECONDS = 60.0


def fire(
    expr: str,
    zone: str,
    due: datetime,
    now: datetime,
    catch_up: bool,
    missed_after: float = MISSED_AFTER_SECONDS,
) -> Firing:
    """The schedule's tick `due` has come (due <= now). A tick on time, or late by less
    than `missed_after` seconds, runs and the schedule moves to its next tick (which may
    be due already: the next round runs it). After downtime (the tick is older than that
    and later ticks are due too) the missed ticks collapse: with catch_up, one run (for
    `due`, the earliest) and then on the clock; without, none, and on the clock from now.
    Never one run per missed tick."""
    following = next_tick(expr, zone, due)
    if following > now or (now - due).total_seconds() < missed_after:
        return Firing(run=due, next_at=following, missed=False)
    return Firing(run=due if catch_up else None, next_at=next_tick(expr, zone, now), missed=True)


# --- what a schedule is ------------------------------------------------------------------

SCHEDULE_FIELDS = frozenset(
    {
        "name",
        "cron",
        "timezone",
        "type",
        "payload",
        "queue",
        "priority",
        "max_attempts",
        "enabled",
        "catch_up",
    }
)


@dataclass(frozen=True)
class ScheduleSpec:
    """What a user asks for; the scheduler fills in next_run_at and last_run_at."""

    name: str
    cron: str
    type: str
    payload: Any = None
    timezone: str = "UTC"
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 5
    enabled: bool = True
    catch_up: bool = True

    def job(self, idempotency_key: str | None = None) -> JobSpec:
        """The job each tick enqueues."""
        return JobSpec(
            type=self.type,
            payload=self.payload,
            queue=self.queue,
            priority=self.priority,
            max_attempts=self.max_attempts,
            idempotency_key=idempotency_key,
        )


@dataclass(frozen=True)
class Schedule:
    """A stored schedule."""

    id: uuid.UUID
    name: str
    cron: str
    timezone: str
    type: str
    payload: Any
    queue: str
    priority: int
    max_attempts: int
    enabled: bool
    catch_up: bool
    source: str  # api (HTTP, CLI, Python) or code (registry.schedule)
    next_run_at: datetime
    last_run_at: datetime | None
    created_at: datetime
    updated_at: datetime

    def spec(self) -> ScheduleSpec:
        return ScheduleSpec(**{f: getattr(self, f) for f in ScheduleSpec.__dataclass_fields__})

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> Schedule:
        return cls(**{name: row[name] for name in _SCHEDULE_COLUMNS})

    def to_json(self) -> dict[str, Any]:
        return json_fields(self, _SCHEDULE_COLUMNS)


_SCHEDULE_COLUMNS = tuple(Schedule.__dataclass_fields__)


def _name_for(job_type: str) -> str:
    """A schedule's name when none is given: its type and 8 hex digits, within the 128
    characters a name may have."""
    return f"{job_type[:119]}-{uuid.uuid4().hex[:8]}"


def check_schedule(spec: ScheduleSpec, max_payload_bytes: int) -> ScheduleSpec:
    """Every field within what aqueue stores and runs; ValidationError names the first
    problem."""
    check_name("name", spec.name)
    cron = check_cron(spec.cron)
    check_timezone(spec.timezone)
    check_spec(spec.job())
    check_payload(spec.payload if spec.payload is not None else {}, max_payload_bytes)
    for flag in ("enabled", "catch_up"):
        if not isinstance(getattr(spec, flag), bool):
            raise ValidationError(f"'{flag}' must be true or false")
    return replace(spec, cron=cron, payload=spec.payload or {})


def parse_schedule(
    data: object, max_payload_bytes: int, base: ScheduleSpec | None = None
) -> ScheduleSpec:
    """A JSON body as a ScheduleSpec (with `base`: a PATCH of it); ValidationError names
    the problem. The seed's body works as is: {"type", "payload", "cron"}; without a
    name, one is made from the type."""
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object")
    unknown = sorted(set(data) - SCHEDULE_FIELDS)
    if unknown:
        raise ValidationError(
            f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(SCHEDULE_FIELDS))}"
        )
    if base is None:
        for required in ("type", "cron"):
            if required not in data:
                raise ValidationError(f"'{required}' is required")
        name = data.get("name") or _name_for(check_name("type", data["type"]))
        spec = ScheduleSpec(name=name, cron=data["cron"], type=data["type"])
    else:
        spec = base
    changes = {k: v for k, v in data.items() if k != "name" or v is not None}
    if "payload" in changes and changes["payload"] is None:
        changes["payload"] = {}
    return check_schedule(replace(spec, **changes), max_payload_bytes)
