"""The job model: pure functions, no database."""

from __future__ import annotations

import itertools
import random
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aqueue import store
from aqueue.db import as_stored
from aqueue.model import (
    COMPAT_STATUS,
    FINAL_STATUSES,
    MAX_ATTEMPTS_LIMIT,
    MAX_IDEMPOTENCY_KEY,
    MAX_PRIORITY,
    TRANSITIONS,
    Job,
    JobSpec,
    JobStatus,
    ValidationError,
    backoff_seconds,
    check_name,
    check_result,
    check_spec,
    check_specs,
    failed_attempts,
    parse_job_id,
    parse_job_spec,
    storable_text,
    uuid7,
    uuid7s,
)

LIMIT = 1000


def make_job(status: JobStatus, attempts: int) -> Job:
    now = datetime.now(UTC)
    return Job(
        id=uuid7(),
        type="demo.echo",
        payload={},
        status=status,
        queue="default",
        priority=0,
        attempts=attempts,
        max_attempts=5,
        run_after=now,
        locked_by=None,
        locked_at=None,
        last_error=None,
        idempotency_key=None,
        result=None,
        created_at=now,
        updated_at=now,
        started_at=None,
        finished_at=None,
    )


# --- backoff ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (9, 256.0)]
)
def test_backoff_is_jittered_between_half_and_full_exponential_ceiling(attempt, ceiling):
    rng = random.Random(attempt)
    delays = [backoff_seconds(attempt, 1.0, 300.0, rng) for _ in range(200)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)


def test_backoff_is_capped():
    rng = random.Random(1)
    delays = [backoff_seconds(attempt, 1.0, 300.0, rng) for attempt in range(10, 60)]
    assert all(150.0 <= d <= 300.0 for d in delays)


def test_backoff_grows_exponentially_until_the_cap():
    lows = [backoff_seconds(a, 0.5, 1000.0, random.Random(0)) for a in range(1, 8)]
    ratios = [b / a for a, b in itertools.pairwise(lows)]
    assert ratios == pytest.approx([2.0] * 6)


def test_backoff_is_deterministic_with_a_seeded_rng():
    first = [backoff_seconds(a, 1.0, 60.0, random.Random(42)) for a in range(1, 10)]
    second = [backoff_seconds(a, 1.0, 60.0, random.Random(42)) for a in range(1, 10)]
    assert first == second


def test_backoff_jitter_spreads_delays():
    rng = random.Random(7)
    delays = {backoff_seconds(4, 1.0, 300.0, rng) for _ in range(50)}
    assert len(delays) == 50


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("priority", True),
        ("priority", 1.0),
        ("priority", MAX_PRIORITY + 1),
        ("priority", -MAX_PRIORITY - 1),
        ("max_attempts", 0),
        ("max_attempts", MAX_ATTEMPTS_LIMIT + 1),
        ("run_after", datetime(2030, 1, 1)),
        ("idempotency_key", ""),
        ("timeout_seconds", 0),
        ("concurrency_key", ""),
        ("fair_key", ""),
        ("depends_on", ["not-a-uuid"]),
    ],
)
def test_a_batch_refuses_one_bad_job_among_good_ones(field, value):
    specs = [JobSpec(type="a"), JobSpec(type="a", **{field: value}), JobSpec(type="a")]
    with pytest.raises(ValidationError):
        check_specs(specs)


def test_a_batch_takes_jobs_at_the_edges_of_every_range():
    specs = [
        JobSpec(type="a", priority=MAX_PRIORITY, max_attempts=1),
        JobSpec(type="a", priority=-MAX_PRIORITY, max_attempts=MAX_ATTEMPTS_LIMIT),
        JobSpec(type="a", timeout_seconds=0.5, idempotency_key="k", fair_key="f"),
    ]
    assert check_specs(specs) == specs


# --- uuid7 ------------------------------------------------------------------------------


def test_uuid7_is_version_7_with_rfc_variant():
    value = uuid7()
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_uuid7_carries_the_current_unix_milliseconds():
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= value.int >> 80 <= after


def test_uuid7_made_2ms_apart_sort_in_creation_order():
    ids = []
    for _ in range(5):
        ids.append(uuid7())
        time.sleep(0.002)
    assert ids == sorted(ids)
    assert [str(i) for i in ids] == sorted(str(i) for i in ids)


def test_uuid7_ids_behave_as_standard_uuids():
    # they may be asyncpg's faster UUID type: equal, hashed and printed as uuid.UUID is
    for value in [uuid7(), *uuid7s(3)]:
        plain = uuid.UUID(bytes=value.bytes)
        assert isinstance(value, uuid.UUID)
        assert (value == plain, hash(value) == hash(plain), str(value)) == (True, True, str(plain))
        assert {plain: 1}[value] == 1


def test_uuid7_values_are_unique():
    assert len({uuid7() for _ in range(10_000)}) == 10_000


def test_uuid7s_of_one_batch_are_version_7_unique_and_of_this_millisecond():
    before = time.time_ns() // 1_000_000
    batch = uuid7s(1_000)
    assert len(set(batch)) == 1_000
    assert {(v.version, v.variant) for v in batch} == {(7, uuid.RFC_4122)}
    assert {v.int >> 80 for v in batch} <= set(range(before, time.time_ns() // 1_000_000 + 1))


def test_uuid7s_of_one_batch_differ_in_every_one_of_their_62_random_bits():
    ones = zeros = 0
    for value in uuid7s(1_000):
        ones |= value.int
        zeros |= ~value.int
    tail = (1 << 62) - 1
    assert ones & tail == tail and zeros & tail == tail


# --- as_stored --------------------------------------------------------------------------


def test_a_flat_payload_is_stored_as_an_equal_copy():
    payload = {"to": "a@example.com", "n": 1, "x": 2.5, "ok": True, "none": None}
    stored = as_stored(payload)
    assert stored == payload and stored is not payload
    payload["n"] = 2
    assert stored["n"] == 1


@pytest.mark.parametrize(
    ("payload", "stored"),
    [
        ({"list": (1, 2)}, {"list": [1, 2]}),
        ({1: "a"}, {"1": "a"}),
        ({"nested": {"a": [None]}}, {"nested": {"a": [None]}}),
        ([1, "b"], [1, "b"]),
        ("text", "text"),
    ],
)
def test_a_payload_is_stored_as_json_gives_it_back(payload, stored):
    assert as_stored(payload) == stored


# --- parse_job_spec ---------------------------------------------------------------------


def test_parse_job_spec_accepts_a_full_valid_body():
    spec = parse_job_spec(
        {
            "type": "email.send",
            "payload": {"to": "a@example.com"},
            "queue": "email",
            "priority": -5,
            "run_after": "2030-01-02T03:04:05Z",
            "max_attempts": 3,
            "idempotency_key": "order-42",
        },
        LIMIT,
    )
    assert spec == JobSpec(
        type="email.send",
        payload={"to": "a@example.com"},
        queue="email",
        priority=-5,
        run_after=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        max_attempts=3,
        idempotency_key="order-42",
    )


def test_parse_job_spec_fills_defaults_for_a_type_only_body():
    assert parse_job_spec({"type": "demo.echo"}, LIMIT) == JobSpec(type="demo.echo")


def test_parse_job_spec_treats_null_payload_as_empty_object():
    assert parse_job_spec({"type": "a", "payload": None}, LIMIT).payload == {}


def test_parse_job_spec_accepts_an_array_payload():
    assert parse_job_spec({"type": "a", "payload": [1, 2]}, LIMIT).payload == [1, 2]


def test_parse_job_spec_accepts_a_payload_exactly_at_the_limit():
    payload = {"x": "a" * (LIMIT - len('{"x":""}'))}
    assert parse_job_spec({"type": "a", "payload": payload}, LIMIT).payload == payload


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (["type", "a"], "JSON object"),
        ("a", "JSON object"),
        (None, "JSON object"),
        ({"type": "a", "colour": "red"}, "colour"),
        ({}, "type"),
        ({"payload": {}}, "type"),
        ({"type": ""}, "type"),
        ({"type": 5}, "type"),
        ({"type": "has space"}, "type"),
        ({"type": "-leading"}, "type"),
        ({"type": "a" * 129}, "type"),
        ({"type": "a\n"}, "type"),
        ({"type": "a", "queue": "no/slash"}, "queue"),
        ({"type": "a", "queue": "default\n"}, "queue"),
        ({"type": "a", "queue": 3}, "queue"),
        ({"type": "a", "payload": "text"}, "payload"),
        ({"type": "a", "payload": 5}, "payload"),
        ({"type": "a", "payload": {"x": "a" * LIMIT}}, "payload"),
        ({"type": "a", "priority": "high"}, "priority"),
        ({"type": "a", "priority": 1.5}, "priority"),
        ({"type": "a", "priority": True}, "priority"),
        ({"type": "a", "priority": 1001}, "priority"),
        ({"type": "a", "priority": -1001}, "priority"),
        ({"type": "a", "max_attempts": 0}, "max_attempts"),
        ({"type": "a", "max_attempts": 101}, "max_attempts"),
        ({"type": "a", "max_attempts": "5"}, "max_attempts"),
        ({"type": "a", "run_after": "tomorrow"}, "run_after"),
        ({"type": "a", "run_after": "2030-01-01T00:00:00"}, "run_after"),
        ({"type": "a", "run_after": 1700000000}, "run_after"),
        ({"type": "a", "idempotency_key": "k" * (MAX_IDEMPOTENCY_KEY + 1)}, "idempotency_key"),
        ({"type": "a", "idempotency_key": ""}, "idempotency_key"),
        ({"type": "a", "idempotency_key": 7}, "idempotency_key"),
    ],
)
def test_parse_job_spec_rejects_bad_input_naming_the_problem(data, named):
    with pytest.raises(ValidationError, match=re.escape(named)):
        parse_job_spec(data, LIMIT)


@pytest.mark.parametrize("kind", ["queue", "type"])
@pytest.mark.parametrize("value", ["default\n", "\ndefault", "de\nfault"])
def test_a_name_with_a_newline_is_refused_naming_the_character(kind, value):
    with pytest.raises(ValidationError) as caught:
        check_name(kind, value)
    message = str(caught.value)
    assert f"'{kind}' {value!r}" in message
    assert f"character '\\n' at position {value.index(chr(10))} is not allowed" in message


def test_check_spec_refuses_a_queue_with_a_trailing_newline():
    # the path of aqueue.enqueue() from Python
    with pytest.raises(ValidationError, match="queue"):
        check_spec(JobSpec(type="a", queue="default\n"))


def test_parse_job_spec_accepts_bounds_of_priority_and_max_attempts():
    low = parse_job_spec({"type": "a", "priority": -1000, "max_attempts": 1}, LIMIT)
    high = parse_job_spec({"type": "a", "priority": 1000, "max_attempts": 100}, LIMIT)
    assert (low.priority, low.max_attempts, high.priority, high.max_attempts) == (
        -1000,
        1,
        1000,
        100,
    )


def test_parse_job_spec_keeps_the_run_after_offset():
    spec = parse_job_spec({"type": "a", "run_after": "2030-01-01T02:00:00+02:00"}, LIMIT)
    assert spec.run_after == datetime(2030, 1, 1, tzinfo=UTC)


# --- parse_job_id -----------------------------------------------------------------------


def test_parse_job_id_accepts_a_uuid():
    value = uuid7()
    assert parse_job_id(str(value)) == value


@pytest.mark.parametrize("text", ["", "42", "not-a-uuid", "0" * 31, "g" * 32])
def test_parse_job_id_rejects_a_non_uuid_naming_it(text):
    with pytest.raises(ValidationError, match="not a valid job id"):
        parse_job_id(text)


# --- compatibility words and failed attempts --------------------------------------------


def test_compat_status_covers_every_status_with_the_simple_clients_words():
    assert set(COMPAT_STATUS) == set(JobStatus)
    assert set(COMPAT_STATUS.values()) == {"pending", "processing", "completed", "failed"}
    assert COMPAT_STATUS[JobStatus.PENDING] == "pending"
    assert COMPAT_STATUS[JobStatus.RETRY] == "pending"
    assert COMPAT_STATUS[JobStatus.RUNNING] == "processing"
    assert COMPAT_STATUS[JobStatus.COMPLETED] == "completed"
    assert COMPAT_STATUS[JobStatus.DEAD] == "failed"


@pytest.mark.parametrize(
    ("status", "attempts", "failed"),
    [
        (JobStatus.PENDING, 0, 0),
        (JobStatus.RUNNING, 1, 0),
        (JobStatus.RUNNING, 3, 2),
        (JobStatus.RETRY, 2, 2),
        (JobStatus.COMPLETED, 1, 0),
        (JobStatus.COMPLETED, 4, 3),
        (JobStatus.DEAD, 5, 5),
    ],
)
def test_failed_attempts_does_not_count_a_running_or_successful_attempt(status, attempts, failed):
    assert failed_attempts(make_job(status, attempts)) == failed


# --- transitions ------------------------------------------------------------------------


def test_every_status_has_transitions_to_known_statuses():
    assert set(TRANSITIONS) == set(JobStatus)
    assert all(targets <= set(JobStatus) for targets in TRANSITIONS.values())


def test_completed_is_final():
    assert TRANSITIONS[JobStatus.COMPLETED] == frozenset()
    assert JobStatus.COMPLETED in FINAL_STATUSES


def test_only_a_claim_leads_to_running():
    sources = {s for s, targets in TRANSITIONS.items() if JobStatus.RUNNING in targets}
    assert sources == {JobStatus.PENDING, JobStatus.RETRY}


def test_dead_and_cancelled_leave_only_through_an_operator_retry():
    assert TRANSITIONS[JobStatus.DEAD] == {JobStatus.PENDING}
    assert TRANSITIONS[JobStatus.CANCELLED] == {JobStatus.PENDING}


def test_job_to_json_renders_ids_and_times_as_strings():
    job = make_job(JobStatus.PENDING, 0)
    body = job.to_json()
    assert body["id"] == str(job.id)
    assert body["status"] == "PENDING"
    assert datetime.fromisoformat(body["created_at"]) == job.created_at
    assert body["started_at"] is None


# --- the query file ---------------------------------------------------------------------


def test_load_queries_splits_named_sections():
    text = (
        "-- header\n\n-- name: first --\nSELECT 1;\n\n-- name: second_one --\n-- note\nSELECT 2;\n"
    )
    assert store.load_queries(text) == {"first": "SELECT 1;", "second_one": "-- note\nSELECT 2;"}


def test_every_query_store_uses_exists_and_is_not_empty():
    source = Path(store.__file__).read_text(encoding="utf-8")
    used = set(re.findall(r'Q\["([a-z_]+)"\]', source))
    assert used, "store.py uses no named query?"
    assert used <= set(store.Q)
    assert all(store.Q[name] for name in used)


@pytest.mark.parametrize(
    ("result", "named"),
    [
        ({"x": float("nan")}, "NaN or Infinity"),
        ([float("inf")], "NaN or Infinity"),
        ("a\x00b", "NUL character"),
        ({"k\ud800": 1}, "unpaired surrogate"),
        ({1: "int key"}, "keys must be strings"),
        ({"when": object()}, "not JSON"),
        ("x" * 50, "the limit is 40"),
    ],
)
def test_check_result_refuses_what_jsonb_cannot_store_naming_it(result, named):
    with pytest.raises(ValidationError, match=named):
        check_result(result, 40)


@pytest.mark.parametrize("result", [None, 1, 2.5, "text", [1, "a"], {"a": {"b": [True]}}])
def test_check_result_accepts_any_json_value(result):
    check_result(result, 1000)


def test_storable_text_escapes_nul_and_lone_surrogates():
    assert storable_text("a\x00b\ud800c", 100) == "a\\x00b\\ud800c"


def test_storable_text_keeps_the_end_of_a_long_text():
    assert storable_text("head " + "x" * 20 + " tail", 10) == "xxxxx tail"
