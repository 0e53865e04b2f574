"""The CLI on the embedded PostgreSQL: a data directory it cannot keep private is one
line on stderr, before anything starts."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tests.acceptance.test_cli import one_line_error, run_cli
from tests.helpers import subprocess_env


def test_a_data_dir_too_long_for_the_socket_is_one_line_and_exit_1():
    # Its socket would land in a directory every local user can reach.
    home = Path(tempfile.mkdtemp(prefix="aqueue-long-"))
    try:
        data_dir = home / ("d" * 100) / "aq"
        env = subprocess_env()
        env.pop("AQUEUE_TEST_DATABASE_URL", None)
        result = run_cli("migrate", "--data-dir", str(data_dir), env=env)
        assert result.returncode == 1
        assert "too long a path for the embedded PostgreSQL's socket" in one_line_error(result)
        assert not data_dir.exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)
