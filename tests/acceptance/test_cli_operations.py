"""The operator's commands from a shell: cancel, retry, retry-dead, pause, resume,
queues, workers, limits, enqueue with a timeout, dependencies and flow keys, status
--wait."""

from __future__ import annotations

import json
import subprocess

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
    assert _listed_limits(db_url, "email") == {**NO_LIMITS, "rate_limit": "20/s"}
    cleared = run_cli("limits", "email", "--rate-limit", "off", "--database-url", db_url)
    assert cleared.returncode == 0
    assert cleared.stdout.strip() == "queue email: rate limit off"
    assert _listed_limits(db_url, "email") == NO_LIMITS
    bad = run_cli("limits", "email", "--rate-limit", "fast", "--database-url", db_url)
    assert bad.returncode == 1 and "must be a rate" in one_line_error(bad)


NO_LIMITS = {"rate_limit": None, "key_concurrency": None, "key_limits": None, "fair_weights": None}


def _listed_limits(db_url: str, queue: str) -> dict:
    listed = json.loads(run_cli("queues", "--json", "--database-url", db_url).stdout)
    limits: dict = next(q for q in listed if q["name"] == queue)["limits"]
    return limits


def _limits(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("limits", *args, "--database-url", db_url)


def test_limits_sets_key_caps_and_fair_weights_a_line_each(db_url):
    set_ = _limits(
        db_url,
        "email",
        "--key-concurrency",
        "2",
        "--key-limit",
        "customer:vip=5",
        "--key-limit",
        "customer:slow=1",
        "--fair-weight",
        "A=3",
        "--fair-weight",
        "B=0.5",
    )
    assert set_.returncode == 0, set_.stderr
    assert set_.stdout.splitlines() == [
        "queue email: key concurrency 2",
        "queue email: key limits customer:vip=5 customer:slow=1",
        "queue email: fair weights A=3 B=0.5",
    ]
    expected = {
        "rate_limit": None,
        "key_concurrency": 2,
        "key_limits": {"customer:vip": 5, "customer:slow": 1},
        "fair_weights": {"A": 3.0, "B": 0.5},
    }
    assert _listed_limits(db_url, "email") == expected
    # the fields not given are kept; a --key-limit list replaces the whole map
    _limits(db_url, "email", "--rate-limit", "10/s", "--key-limit", "customer:new=4")
    expected.update(rate_limit="10/s", key_limits={"customer:new": 4})
    assert _listed_limits(db_url, "email") == expected
    off = _limits(
        db_url, "email", "--key-concurrency", "off", "--key-limits", "off", "--fair-weights", "OFF"
    )
    assert off.returncode == 0, off.stderr
    assert off.stdout.splitlines() == [
        "queue email: key concurrency off",
        "queue email: key limits off",
        "queue email: fair weights off",
    ]
    assert _listed_limits(db_url, "email") == {**NO_LIMITS, "rate_limit": "10/s"}


def test_limits_with_no_option_prints_the_queues_limits_as_json(db_url):
    shown = _limits(db_url, "never-limited")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {"name": "never-limited", "limits": NO_LIMITS}
    _limits(db_url, "email", "--key-concurrency", "3", "--fair-weight", "A=2")
    shown = _limits(db_url, "email")
    assert json.loads(shown.stdout) == {
        "name": "email",
        "limits": {**NO_LIMITS, "key_concurrency": 3, "fair_weights": {"A": 2.0}},
    }


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--key-concurrency", "two"], "--key-concurrency must be a whole number"),
        (["--key-concurrency", "0"], "'key_concurrency' must be between 1 and 10000"),
        (["--key-concurrency", "10001"], "'key_concurrency' must be between 1 and 10000"),
        (["--key-limit", "vip"], "--key-limit must look like KEY=N"),
        (["--key-limit", "vip=5.5"], "--key-limit vip= must be a whole number"),
        (["--key-limit", "vip=0"], "'key_limits.vip' must be between 1 and 10000"),
        (["--key-limit", "=5"], "'key_limits' has a bad key"),
        (["--key-limits", "none"], "--key-limits takes only off"),
        (["--key-limit", "vip=5", "--key-limits", "off"], "not both"),
        (["--fair-weight", "A=heavy"], "--fair-weight A= must be a number"),
        (["--fair-weight", "A=0"], "'fair_weights.A' must be at least 0.001"),
        (["--fair-weight", "A=-2"], "'fair_weights.A' must be at least 0.001"),
        (["--fair-weight", "A=nan"], "'fair_weights.A' must be at least 0.001"),
        (["--fair-weight", "A=1e9"], "at most 1000"),
        (["--fair-weights", "0"], "--fair-weights takes only off"),
        (["--rate-limit", "1/fortnight"], "'rate_limit' must be a rate"),
    ],
)
def test_a_bad_limit_is_one_line_exit_1_and_changes_nothing(db_url, args, words):
    _limits(db_url, "email", "--key-concurrency", "7")
    bad = _limits(db_url, "email", "--rate-limit", "5/s", *args)
    assert bad.returncode == 1 and bad.stdout == ""
    assert words in one_line_error(bad)
    assert _listed_limits(db_url, "email") == {**NO_LIMITS, "key_concurrency": 7}


def test_a_bad_queue_name_or_a_missing_value_is_one_line():
    bad = run_cli("limits", "bad queue!", "--key-concurrency", "2")
    assert bad.returncode == 1 and "queue" in one_line_error(bad)
    missing = run_cli("limits", "email", "--key-concurrency")
    assert missing.returncode == 2
    assert "--key-concurrency" in missing.stderr and len(missing.stderr.splitlines()) == 1


def test_queues_shows_the_limits_in_its_table(db_url):
    _enqueue(db_url, "demo.echo", "--queue", "email", "--fair-key", "A")
    _limits(db_url, "email", "--rate-limit", "20/s", "--key-concurrency", "2")
    _limits(db_url, "email", *(f"--key-limit=k{i}={i}" for i in range(1, 6)))
    _enqueue(db_url, "demo.echo", "--queue", "plain")
    table = run_cli("queues", "--database-url", db_url).stdout.splitlines()
    assert table[0].split()[-2:] == ["workers", "limits"]
    email = next(line for line in table if line.startswith("email "))
    assert email.endswith("rate 20/s; key_concurrency 2; key_limits k1=1 k2=2 k3=3 (+2 more); fair")
    plain = next(line for line in table if line.startswith("plain "))
    assert plain.split()[-2:] == ["-", "-"]


def test_enqueue_with_a_concurrency_key_and_a_fair_key(db_url):
    job = _enqueue(db_url, "demo.echo", "--concurrency-key", "customer:1", "--fair-key", "A")
    assert (job["concurrency_key"], job["fair_key"]) == ("customer:1", "A")
    shown = json.loads(run_cli("status", job["id"], "--database-url", db_url).stdout)
    assert (shown["concurrency_key"], shown["fair_key"]) == ("customer:1", "A")
    bad = run_cli("enqueue", "demo.echo", "--concurrency-key", "", "--database-url", db_url)
    assert bad.returncode == 1 and "'concurrency_key' must be a string" in one_line_error(bad)
    both = run_cli(
        "enqueue",
        "demo.echo",
        "--fair-key",
        "A",
        "--depends-on",
        job["id"],
        "--database-url",
        db_url,
    )
    assert both.returncode == 1
    assert "'fair_key' cannot be combined with 'depends_on'" in one_line_error(both)
