"""The metrics object without a database: bucket arithmetic, the families it renders, and
the bound on label values."""

from __future__ import annotations

import uuid

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aqueue.metrics import MAX_LABEL_PAIRS, OVERFLOW, Histogram, Metrics
from aqueue.model import JobStatus
from aqueue.store import ClaimedJob, Outcome


def claimed(queue: str = "q", type: str = "t", *, created: float, due: float, started: float):
    return ClaimedJob(uuid.uuid4(), type, {}, queue, 0, 1, 5, uuid.uuid4(), created, due, started)


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_value_on_a_bound_is_in_that_bound_s_bucket_and_buckets_are_cumulative():
    histogram = Histogram((0.0, 1.0, 2.0))
    for value in (0.0, 0.5, 1.0, 1.5, 3.0):
        histogram.observe(value)
    assert histogram.buckets() == [("0.0", 1), ("1.0", 3), ("2.0", 4), ("+Inf", 5)]
    assert histogram.sum == 6.0


def test_pickup_latency_runs_from_the_later_of_created_and_run_after():
    metrics = Metrics()
    jobs = [
        claimed(created=100.0, due=100.0, started=100.004),  # due at once: 4 ms
        claimed(created=100.0, due=160.0, started=160.5),  # delayed: from its run_after
        claimed(created=200.0, due=150.0, started=199.9),  # clocks: never below 0
    ]
    metrics.claimed("q", jobs, 0.002)
    seen = samples(metrics)
    assert seen[("job_pickup_latency_seconds_count", frozenset({("queue", "q")}))] == 3
    total = seen[("job_pickup_latency_seconds_sum", frozenset({("queue", "q")}))]
    assert abs(total - 0.504) < 1e-6
    le_5ms = frozenset({("queue", "q"), ("le", "0.005")})
    assert seen[("job_pickup_latency_seconds_bucket", le_5ms)] == 2
    batch = frozenset({("queue", "q"), ("le", "2.0")})
    assert seen[("worker_claim_batch_size_bucket", batch)] == 0
    assert seen[("worker_claim_batch_size_sum", frozenset({("queue", "q")}))] == 3


def test_an_empty_claim_is_a_batch_of_zero():
    metrics = Metrics()
    metrics.claimed("q", [], 0.001)
    seen = samples(metrics)
    assert seen[("worker_claim_batch_size_bucket", frozenset({("queue", "q"), ("le", "0.0")}))] == 1


def test_only_accepted_outcomes_count_and_every_status_starts_at_zero():
    metrics = Metrics()
    jobs = [claimed(created=0, due=0, started=1) for _ in range(3)]
    outcomes = [
        Outcome(jobs[0], JobStatus.COMPLETED),
        Outcome(jobs[1], JobStatus.RETRY),
        Outcome(jobs[2], JobStatus.DEAD),
    ]
    metrics.outcomes_written(outcomes, {jobs[0].lease_token, jobs[1].lease_token}, 0.01)
    seen = samples(metrics)
    labels = frozenset({("queue", "q"), ("type", "t")})
    assert seen[("jobs_completed_total", labels)] == 1
    assert seen[("jobs_retried_total", labels)] == 1
    assert seen[("jobs_dead_total", labels)] == 0  # refused: its lease was gone
    assert seen[("jobs_failed_total", labels)] == 1
    assert seen[("completer_batch_size_sum", frozenset())] == 3


def test_made_up_job_types_past_the_bound_are_counted_under_one_label():
    metrics = Metrics()
    for n in range(MAX_LABEL_PAIRS + 50):
        metrics.count_enqueued("q", f"type-{n}")
    assert len(metrics.enqueued) == MAX_LABEL_PAIRS + 1
    assert metrics.enqueued[(OVERFLOW, OVERFLOW)] == 50
    job = claimed(type="type-9999", created=0, due=0, started=0)
    metrics.attempt_finished(job, JobStatus.COMPLETED, 0.1)
    assert set(metrics.attempts) == {(OVERFLOW, OVERFLOW)}
