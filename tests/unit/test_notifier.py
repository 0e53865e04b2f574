"""The pooler warning: LISTEN cannot work through a transaction-mode pooler."""

from __future__ import annotations

import logging

import pytest

from aqueue.notifier import warn_if_pooler


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@db.internal:6432/app",
        "postgresql://u@pgbouncer:5432/app",
        "postgresql://u@my-pooler.example.com/app",
    ],
)
def test_a_url_that_looks_like_a_pooler_is_warned_about(url, caplog):
    with caplog.at_level(logging.WARNING, logger="aqueue.notifier"):
        assert warn_if_pooler(url)
    assert "LISTEN/NOTIFY does not work through a pooler in transaction mode" in caplog.text


def test_a_direct_postgres_url_is_not_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="aqueue.notifier"):
        assert not warn_if_pooler("postgresql://u@127.0.0.1:5432/app")
    assert caplog.text == ""
