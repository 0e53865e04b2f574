"""The metrics spec as the tests hold it (names, kinds, labels: shared with the alert rules
and the dashboard, so a rename here is a rename there), a parsed scrape, and promtool."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

COUNTERS = {
    "jobs_enqueued_total": {"queue", "type"},
    "jobs_completed_total": {"queue", "type"},
    "jobs_failed_total": {"queue", "type"},
    "jobs_retried_total": {"queue", "type"},
    "jobs_dead_total": {"queue", "type"},
    "worker_jobs_completed_total": {"queue", "type", "status"},
    "lease_reclaims_total": {"queue"},
    "notifier_reconnects_total": set(),
}
HISTOGRAMS = {
    "worker_job_duration_seconds": {"queue", "type"},
    "job_pickup_latency_seconds": {"queue"},
    "worker_claim_batch_size": {"queue"},
    "worker_claim_duration_seconds": {"queue"},
    "completer_batch_size": set(),
    "completer_write_duration_seconds": set(),
}
GAUGES = {
    "jobs_pending": {"queue"},
    "jobs_queue_depth": {"queue", "status"},
    "jobs_running": {"queue"},
    "jobs_oldest_pending_age_seconds": {"queue"},
    "workers_alive": {"queue"},
    "jobs_table_dead_tuples": set(),
    "jobs_table_live_tuples": set(),
    "jobs_table_size_bytes": set(),
    "jobs_history_size_bytes": set(),
    "jobs_table_last_autovacuum_timestamp_seconds": set(),
    "jobs_table_last_vacuum_timestamp_seconds": set(),
    "database_oldest_xmin_age_transactions": set(),
    "database_oldest_transaction_age_seconds": set(),
    "database_idle_in_transaction_sessions": set(),
    "database_idle_in_transaction_max_age_seconds": set(),
}
PROCESS = ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info")
DEPTH_STATUSES = {"pending", "scheduled", "waiting", "retry", "running"}


class Scrape:
    """One /metrics answer, parsed: kinds and label names by metric name, and samples."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.kinds: dict[str, str] = {}
        self.labels: dict[str, set[str]] = {}
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            # the parser names a counter family without its _total
            name = family.name + "_total" if family.type == "counter" else family.name
            self.kinds[name] = family.type
            self.labels.setdefault(name, set())
            for sample in family.samples:
                labels = {k: v for k, v in sample.labels.items() if k != "le"}
                self.labels[name] |= set(labels)
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))


def check_with_promtool(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is not installed: run scripts/system-tools as root, or apt-get install "
            "prometheus (this test is never skipped)"
        )
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    problems = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, f"promtool check metrics failed:\n{problems}"
