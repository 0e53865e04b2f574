"""The operator's commands from a shell: cancel, retry, retry-dead, pause, resume,
queues, workers, enqueue with a timeout and dependencies, status --wait."""

from __future__ import annotations

import json

import pytest

from tests.acceptance.test_cli import one_line_error, run_cli

pytestmark = pytest.mark.timeout(120)


def _enqueue(db_url: str, *args: str) -> dict:
    created = run_cli("enqueue", *args, "--database-url", db_url)
    assert created.returncode == 0, created.stderr
    job: dict = json.loads(created.stdout)
    return job


def test_cancel_a_pending_job_then_cancelling_again_says_why(db_url):
    job = _enqueue(db_url, "demo.echo")
    cancelled = run_cli("cancel", job["id"], "--database-url", db_url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "CANCELLED"
    again = run_cli("cancel", job["id"], "--database-url", db_url)
    assert again.returncode == 1
    assert "already finished: it is CANCELLED" in one_line_error(again)


def test_retry_a_cancelled_job_and_an_unknown_one(db_url):
    job = _enqueue(db_url, "demo.echo")
    run_cli("cancel", job["id"], "--database-url", db_url)
    retried = run_cli("retry", job["id"], "--database-url", db_url)
    assert json.loads(retried.stdout)["status"] == "PENDING"
    unknown = run_cli("retry", "01a00000-0000-7000-8000-000000000000", "--database-url", db_url)
    assert unknown.returncode == 1 and "no job with id" in one_line_error(unknown)


def test_pause_shows_in_queues_and_resume_clears_it(db_url):
    _enqueue(db_url, "demo.echo", "--queue", "email")
    assert run_cli("pause", "email", "--database-url", db_url).stdout.strip() == (
        "queue email paused"
    )
    listed = run_cli("queues", "--json", "--database-url", db_url)
    email = next(q for q in json.loads(listed.stdout) if q["name"] == "email")
    assert email["paused"] is True and email["depth"]["pending"] == 1
    table = run_cli("queues", "--database-url", db_url).stdout
    assert table.splitlines()[0].split()[:3] == ["queue", "paused", "pending"]
    assert "email" in table and "yes" in table
    run_cli("resume", "email", "--database-url", db_url)
    listed = run_cli("queues", "--json", "--database-url", db_url)
    assert not next(q for q in json.loads(listed.stdout) if q["name"] == "email")["paused"]
    bad = run_cli("pause", "bad queue!", "--database-url", db_url)
    assert bad.returncode == 1 and "queue" in one_line_error(bad)


def test_retry_dead_counts_what_it_retried(db_url):
    result = run_cli("retry-dead", "default", "--type", "demo.fail", "--database-url", db_url)
    assert result.returncode == 0 and result.stdout.strip() == (
        "retried 0 dead job(s) of queue default"
    )


def test_enqueue_with_timeout_and_dependencies(db_url):
    parent = _enqueue(db_url, "demo.echo")
    child = _enqueue(db_url, "demo.echo", "--timeout", "2.5", "--depends-on", parent["id"])
    assert child["timeout_seconds"] == 2.5 and child["waiting_for"] == 1
    shown = json.loads(run_cli("status", child["id"], "--database-url", db_url).stdout)
    assert shown["depends_on"] == [parent["id"]]
    unknown = run_cli(
        "enqueue",
        "demo.echo",
        "--depends-on",
        "01a00000-0000-7000-8000-000000000000",
        "--database-url",
        db_url,
    )
    assert unknown.returncode == 1 and "unknown job" in one_line_error(unknown)


def test_status_wait_exits_3_when_the_job_has_not_finished(db_url):
    job = _enqueue(db_url, "demo.echo", "--queue", "nobody")
    waited = run_cli("status", job["id"], "--wait", "0.5", "--database-url", db_url)
    assert waited.returncode == 3
    assert json.loads(waited.stdout)["status"] == "PENDING"


def test_workers_with_none_seen(db_url):
    result = run_cli("workers", "--database-url", db_url)
    assert result.returncode == 0 and result.stdout.strip() == "no workers seen"


def test_limits_sets_and_clears_a_queue_rate(db_url):
    set_ = run_cli("limits", "email", "--rate-limit", "20/s", "--database-url", db_url)
    assert set_.returncode == 0 and set_.stdout.strip() == "queue email: rate limit 20/s"
    listed = json.loads(run_cli("queues", "--json", "--database-url", db_url).stdout)
    assert next(q for q in listed if q["name"] == "email")["limits"] == {"rate_limit": "20/s"}
    cleared = run_cli("limits", "email", "--rate-limit", "off", "--database-url", db_url)
    assert cleared.returncode == 0
    bad = run_cli("limits", "email", "--rate-limit", "fast", "--database-url", db_url)
    assert bad.returncode == 1 and "must be a rate" in one_line_error(bad)
