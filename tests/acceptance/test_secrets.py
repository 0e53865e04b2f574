"""Secrets kept out of sight: the database URL read from a file, as Kubernetes and Docker
mount secrets."""

from __future__ import annotations

import json
from pathlib import Path

from tests.acceptance.test_cli import one_line_error, run_cli
from tests.helpers import subprocess_env


def test_commands_read_the_database_url_from_the_file_named(db_url, tmp_path):
    secret = tmp_path / "database-url"
    secret.write_text(db_url + "\n")
    env = subprocess_env(AQUEUE_DATABASE_URL_FILE=str(secret))
    assert "DATABASE_URL" not in env
    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    enqueued = run_cli("enqueue", "demo.echo", "--payload", '{"n": 1}', env=env)
    assert enqueued.returncode == 0, enqueued.stderr
    job = json.loads(enqueued.stdout)
    shown = run_cli("status", job["id"], env=env)
    assert json.loads(shown.stdout)["payload"] == {"n": 1}


def test_a_missing_file_is_one_line_naming_the_variable_and_path(tmp_path: Path):
    missing = tmp_path / "nothing-here"
    result = run_cli("queues", env=subprocess_env(AQUEUE_DATABASE_URL_FILE=str(missing)))
    assert result.returncode == 2
    assert one_line_error(result) == (
        f"aqueue: error: --database-url: the file AQUEUE_DATABASE_URL_FILE names ({missing}) "
        "cannot be read: No such file or directory"
    )
