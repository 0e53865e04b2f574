"""The job model: statuses and their transitions, the Job record, what a new job may
contain (validation of user input), and the retry backoff. Pure: no I/O here."""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID


class JobStatus(StrEnum):
    """PENDING -> RUNNING -> COMPLETED; RUNNING -> RETRY -> RUNNING ...; -> DEAD at
    max_attempts; CANCELLED is final."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    RETRY = "RETRY"
    COMPLETED = "COMPLETED"
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"


# Which status may follow which; every change in store.py is one of these.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.COMPLETED, JobStatus.RETRY, JobStatus.DEAD, JobStatus.CANCELLED}
    ),
    JobStatus.RETRY: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.DEAD: frozenset({JobStatus.PENDING}),  # retried by an operator
    JobStatus.CANCELLED: frozenset({JobStatus.PENDING}),  # retried by an operator
}

FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.DEAD, JobStatus.CANCELLED})


class ValidationError(ValueError):
    """User input that cannot become a job; the message says what is wrong."""


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and building
# a batch's thousand specs then cost 2.2 ms (0.6 ms unfrozen), a tenth of enqueueing them.
# (With a dict payload a spec was never hashable anyway.)
@dataclass(slots=True)
class JobSpec:
    """What a producer asks for; the database fills in the rest."""

    type: str
    payload: Any = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    run_after: datetime | None = None
    max_attempts: int = 5
    idempotency_key: str | None = None
    # seconds an attempt may run before its handler is cancelled (None: the task's default)
    timeout_seconds: float | None = None
    # jobs that must all COMPLETE before this one starts
    depends_on: tuple[uuid.UUID, ...] = ()
    # at most the queue's cap of jobs with this key run at once, across every worker
    concurrency_key: str | None = None
    # the tenant this job counts for: tenants share the queue in proportion to weight
    fair_key: str | None = None


# Not frozen either, for the same reason: building a frozen Job cost 5 us of the 14 us of
# Python in a single enqueue (1.4 us unfrozen). It is a copy of the row: changing it
# changes nothing stored.
@dataclass(slots=True)
class Job:
    """A job as stored. `to_json()` is the shape the HTTP API returns."""

    id: uuid.UUID
    type: str
    payload: Any
    status: JobStatus
    queue: str
    priority: int
    attempts: int
    max_attempts: int
    run_after: datetime
    locked_by: str | None
    locked_at: datetime | None
    last_error: str | None
    idempotency_key: str | None
    result: Any
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    timeout_seconds: float | None = None
    # how many of the jobs it depends on have not completed yet
    waiting_for: int = 0
    concurrency_key: str | None = None
    fair_key: str | None = None

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> Job:
        values = {name: row[name] for name in _JOB_FIELDS}
        values["status"] = JobStatus(values["status"])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return json_fields(self, _JOB_FIELDS)


_JOB_FIELDS = tuple(Job.__dataclass_fields__)


def json_fields(record: object, names: Sequence[str]) -> dict[str, Any]:
    """These attributes of a record as JSON values: times in ISO 8601, ids as strings."""
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(record, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, uuid.UUID):
            value = str(value)
        out[name] = value
    return out


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7). New jobs get one so that the primary-key
    index grows at its right edge instead of touching random pages on every insert."""
    value = _uuid7_prefix() | int.from_bytes(os.urandom(8), "big") & _RAND_B
    if _FastUUID is None:
        return UUID(int=value)
    return _FastUUID(value.to_bytes(16))


def uuid7s(count: int) -> list[uuid.UUID]:
    """`count` UUIDv7s of this instant, with one read of the random source. Ids made one
    after the other sort in the order they were made; ids of one batch share their time."""
    prefix = _uuid7_prefix()
    if _FastUUID is None:
        random_bytes = os.urandom(8 * count)
        return [
            UUID(int=prefix | int.from_bytes(random_bytes[i : i + 8], "big") & _RAND_B)
            for i in range(0, 8 * count, 8)
        ]
    # Bytes, not ints: the variant bits of every id set by one translate() of the random
    # bytes, each id its shared first half plus eight of them (0.30 against 0.55 ms for a
    # thousand ids, built per id from an int).
    head = (prefix >> 64).to_bytes(8)
    tails = bytearray(os.urandom(8 * count))
    tails[0::8] = tails[0::8].translate(_VARIANT_BYTE)
    return [_FastUUID(head + tails[i : i + 8]) for i in range(0, 8 * count, 8)]


def lease_salt() -> uuid.UUID:
    """The random bits of one claim's lease tokens (see the claim_lease statement)."""
    if _FastUUID is None:
        return UUID(bytes=os.urandom(16))
    return _FastUUID(os.urandom(16))


def _uuid7_prefix() -> int:
    """Version, variant and the time of a UUIDv7; the 12 bits after the milliseconds hold
    the sub-millisecond time (RFC 9562, method 3)."""
    ms, sub_ms = divmod(time.time_ns(), 1_000_000)
    prefix = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (sub_ms * 4096 // 1_000_000) << 64
    return prefix | 0b10 << 62


_RAND_B = 0x3FFF_FFFF_FFFF_FFFF
# a byte with its two top bits set to the RFC variant, 10
_VARIANT_BYTE = bytes((b & 0x3F) | 0x80 for b in range(256))

# asyncpg's UUID, the type it returns for every uuid column: a uuid.UUID subclass written
# in C that is built from its 16 bytes in 0.2 us, against 1.5 us for uuid.UUID(int=...),
# which was a fifth of the client's time in a COPY of 1,000 jobs.
_FastUUID: Callable[[bytes], UUID] | None
try:
    from asyncpg.pgproto.pgproto import UUID as _FastUUID
except ImportError:  # pragma: no cover - another asyncpg layout: the standard type will do
    _FastUUID = None


def backoff_seconds(
    attempt: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Delay before retry number `attempt` (1 = after the first failure): exponential,
    capped, with full jitter so that jobs failing together do not retry together."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return (rng or random).uniform(ceiling / 2, ceiling)


# --- validation of user input -----------------------------------------------------------

# Used with fullmatch: `$` would also match before a final "\n", letting "default\n"
# through as a queue no worker serves.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_.:\-]")
MAX_PRIORITY = 1000
# The effective priority of a job that waited longer than --promote-after: above any a
# producer can give, so it is next in its queue whatever keeps arriving (see promote).
PROMOTED_PRIORITY = MAX_PRIORITY + 1
MAX_ATTEMPTS_LIMIT = 100
MAX_IDEMPOTENCY_KEY = 255
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0
MAX_DEPENDENCIES = 1000
JOB_FIELDS = frozenset(
    {
        "type",
        "payload",
        "queue",
        "priority",
        "run_after",
        "max_attempts",
        "idempotency_key",
        "timeout_seconds",
        "depends_on",
        "concurrency_key",
        "fair_key",
    }
)
# concurrency and fair keys: free text (a customer id, "customer:vip"), bounded
MAX_FLOW_KEY = 200


def check_name(kind: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"'{kind}' must be a non-empty string")
    if not NAME_RE.fullmatch(value):
        raise ValidationError(
            f"'{kind}' {value!r} is not a valid name{_name_problem(value)}: use letters, "
            "digits and _ . : - (at most 128 characters, starting with a letter or digit)"
        )
    return value


def _name_problem(value: str) -> str:
    """What is wrong with a refused name, for the error message: a stray newline or space is
    easy to miss in the name as quoted."""
    for position, char in enumerate(value):
        if not _NAME_CHAR.fullmatch(char):
            return f" (character {char!r} at position {position} is not allowed)"
    if not value[0].isascii() or not value[0].isalnum():
        return f" (it starts with {value[0]!r})"
    if len(value) > 128:
        return f" (it has {len(value)} characters)"
    return ""


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if type(value) is int and low <= value <= high:
        return value  # the common case first: this runs for every job of a batch
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"'{name}' must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValidationError(f"'{name}' must be between {low} and {high}, got {value}")
    return value


def parse_timestamp(name: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise ValidationError(f"'{name}' must be an ISO 8601 timestamp string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"'{name}' {value!r} is not an ISO 8601 timestamp") from None
    return _check_timestamp(name, parsed)


def _check_timestamp(name: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise ValidationError(f"'{name}' must be a datetime")
    if value.tzinfo is None:
        raise ValidationError(f"'{name}' {value.isoformat()!r} needs a time zone (e.g. 'Z')")
    try:
        in_utc = value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        raise ValidationError(f"'{name}' {value.isoformat()!r} is out of range") from None
    if in_utc in (datetime.min, datetime.max):
        # asyncpg would store these as -infinity and infinity, and read them back without
        # a time zone: a job whose run_after is no longer a time
        raise ValidationError(f"'{name}' {value.isoformat()!r} is out of range")
    return value


def _check_text(where: str, text: str) -> None:
    """PostgreSQL text and jsonb hold neither NUL characters nor lone surrogates."""
    if "\x00" in text:
        raise ValidationError(f"{where} contains a NUL character (\\u0000), which cannot be stored")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{where} contains an unpaired surrogate (invalid Unicode)") from None


def check_payload(payload: object, max_bytes: int) -> None:
    if not isinstance(payload, dict | list):
        raise ValidationError("'payload' must be a JSON object or array")
    _check_json("'payload'", payload, max_bytes)


def check_result(result: object, max_bytes: int) -> None:
    """A handler's return value must be something PostgreSQL's jsonb stores: JSON without
    NaN or Infinity, NUL characters or lone surrogates, within the size limit. A result
    that is not is the attempt's failure, said in its error, instead of an outcome the
    database would refuse."""
    _check_json("the result", result, max_bytes)


def _check_json(where: str, value: object, max_bytes: int) -> None:
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_text(where, item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValidationError(f"{where} contains NaN or Infinity, which JSON cannot hold")
        elif isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise ValidationError(f"{where}: object keys must be strings")
                _check_text(where, key)
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    try:
        size = len(json.dumps(value, separators=(",", ":"), allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{where} is not JSON: {exc}") from None
    if size > max_bytes:
        raise ValidationError(f"{where} is {size} bytes; the limit is {max_bytes}")


def storable_text(text: str, max_chars: int) -> str:
    """`text` as PostgreSQL's text type takes it: NUL characters and lone surrogates (an
    exception's message may hold either) escaped, the end kept when it is too long (a
    traceback's last lines say the most)."""
    text = text.replace("\x00", "\\x00")
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text[-max_chars:]


def check_spec(spec: JobSpec) -> JobSpec:
    """Every field of a JobSpec within what aqueue stores (the payload aside: see
    parse_job_spec). Raises ValidationError naming the first problem."""
    check_name("type", spec.type)
    check_name("queue", spec.queue)
    return _check_spec_values(spec)


def check_specs(specs: Sequence[JobSpec]) -> Sequence[JobSpec]:
    """check_spec for a batch: each distinct type and queue name is checked once."""
    for name in {s.type for s in specs}:
        check_name("type", name)
    for name in {s.queue for s in specs}:
        check_name("queue", name)
    for spec in specs:
        _check_spec_values(spec)
    return specs


def _check_spec_values(spec: JobSpec) -> JobSpec:
    # the common job (default-ish priority and attempts, none of the optional fields)
    # in one expression: the full check's calls were a quarter of a batch's Python
    priority, attempts = spec.priority, spec.max_attempts
    if (
        type(priority) is int
        and -MAX_PRIORITY <= priority <= MAX_PRIORITY
        and type(attempts) is int
        and 1 <= attempts <= MAX_ATTEMPTS_LIMIT
        and spec.run_after is None
        and spec.idempotency_key is None
        and spec.timeout_seconds is None
        and spec.concurrency_key is None
        and spec.fair_key is None
        and not spec.depends_on
    ):
        return spec
    _check_int("priority", spec.priority, -MAX_PRIORITY, MAX_PRIORITY)
    _check_int("max_attempts", spec.max_attempts, 1, MAX_ATTEMPTS_LIMIT)
    if spec.run_after is not None:
        _check_timestamp("run_after", spec.run_after)
    key = spec.idempotency_key
    if key is not None:
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
            raise ValidationError(
                f"'idempotency_key' must be a string of 1 to {MAX_IDEMPOTENCY_KEY} characters"
            )
        _check_text("'idempotency_key'", key)
    if spec.timeout_seconds is not None:
        check_timeout(spec.timeout_seconds)
    if spec.concurrency_key is not None:
        check_flow_key("concurrency_key", spec.concurrency_key)
    if spec.fair_key is not None:
        check_flow_key("fair_key", spec.fair_key)
    if spec.depends_on and spec.fair_key is not None:
        # its place in the fair order is given at enqueue, and a job that waits for
        # others is not runnable then
        raise ValidationError("'fair_key' cannot be combined with 'depends_on' (yet)")
    if spec.depends_on:
        if len(spec.depends_on) > MAX_DEPENDENCIES:
            raise ValidationError(f"'depends_on' lists at most {MAX_DEPENDENCIES} jobs")
        if not all(isinstance(i, uuid.UUID) for i in spec.depends_on):
            raise ValidationError("'depends_on' must list job ids (UUIDs)")
    return spec


def check_flow_key(name: str, value: object) -> str:
    """A concurrency or fair key: a string of 1 to MAX_FLOW_KEY characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_FLOW_KEY:
        raise ValidationError(f"'{name}' must be a string of 1 to {MAX_FLOW_KEY} characters")
    _check_text(f"'{name}'", value)
    return value


def check_timeout(value: object, name: str = "timeout_seconds") -> float:
    """A per-attempt time limit in seconds: a number above 0, at most a week."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"'{name}' must be a number of seconds")
    if not (0 < value <= MAX_TIMEOUT_SECONDS) or math.isnan(value):
        raise ValidationError(
            f"'{name}' must be greater than 0 and at most {MAX_TIMEOUT_SECONDS:.0f} seconds"
        )
    return float(value)


def _parse_depends_on(value: object) -> tuple[uuid.UUID, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("'depends_on' must be a list of job ids")
    ids = []
    for item in value:
        try:
            ids.append(uuid.UUID(item))
        except ValueError:
            raise ValidationError(f"'depends_on': {item!r} is not a job id (a UUID)") from None
    return tuple(dict.fromkeys(ids))


def parse_job_spec(data: object, max_payload_bytes: int) -> JobSpec:
    """Turn a decoded JSON body into a JobSpec, or raise ValidationError naming the problem."""
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object")
    unknown = sorted(set(data) - JOB_FIELDS)
    if unknown:
        raise ValidationError(
            f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(JOB_FIELDS))}"
        )
    if "type" not in data:
        raise ValidationError("'type' is required")
    payload = data.get("payload")
    payload = {} if payload is None else payload
    check_payload(payload, max_payload_bytes)
    run_after = data.get("run_after")
    return check_spec(
        JobSpec(
            type=data["type"],
            payload=payload,
            queue=data.get("queue", "default"),
            priority=data.get("priority", 0),
            run_after=None if run_after is None else parse_timestamp("run_after", run_after),
            max_attempts=data.get("max_attempts", 5),
            idempotency_key=data.get("idempotency_key"),
            timeout_seconds=data.get("timeout_seconds"),
            depends_on=_parse_depends_on(data.get("depends_on")),
            concurrency_key=data.get("concurrency_key"),
            fair_key=data.get("fair_key"),
        )
    )


def parse_job_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValidationError(f"{value!r} is not a valid job id (a UUID)") from None


# The words of the simple clients' compatibility API (`GET /job-status/{id}`).
COMPAT_STATUS = {
    JobStatus.PENDING: "pending",
    JobStatus.RETRY: "pending",
    JobStatus.RUNNING: "processing",
    JobStatus.COMPLETED: "completed",
    JobStatus.DEAD: "failed",
    JobStatus.CANCELLED: "failed",
}


def failed_attempts(job: Job) -> int:
    """How many attempts of this job failed: the current one is not a failure while it
    runs, nor once it completed."""
    if job.status in (JobStatus.RUNNING, JobStatus.COMPLETED):
        return max(job.attempts - 1, 0)
    return job.attempts
