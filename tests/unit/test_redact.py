"""The database URL and its password masked in log records and error lines."""

from __future__ import annotations

import logging

import pytest

from aqueue.redact import MASK, RedactingFilter, redact, url_secrets


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("postgresql://aqueue:s3cr3t-pw@db:5432/aqueue", "s3cr3t-pw"),
        ("postgresql://aqueue:p%40ss%2Fw0rd@db/aqueue", "p@ss/w0rd"),  # %-encoded
        ("postgresql://aqueue:p@ss:w0rd@db:5432/aqueue", "p@ss:w0rd"),  # not encoded
        ("postgresql://aqueue@db/aqueue?sslmode=require&password=s3cr3t-pw", "s3cr3t-pw"),
    ],
)
def test_the_url_and_its_password_are_masked_however_written(url, password):
    secrets = url_secrets(url)
    assert url in secrets and password in secrets
    text = f"could not connect to {url} (password {password})"
    assert redact(text, secrets) == f"could not connect to {MASK} (password {MASK})"


def test_a_url_without_a_password_or_none_masks_only_itself():
    assert url_secrets(None) == ()
    assert url_secrets("postgresql://aqueue@db/aqueue") == ("postgresql://aqueue@db/aqueue",)
    # a password too short to mask without masking half the log is left
    assert url_secrets("postgresql://a:pw@db/x") == ("postgresql://a:pw@db/x",)


def test_the_filter_masks_messages_arguments_and_tracebacks():
    url = "postgresql://aqueue:s3cr3t-pw@db:5432/aqueue"
    logger = logging.getLogger("tests.redact")
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter(url_secrets(url)))
    formatter = logging.Formatter("%(message)s")
    records: list[str] = []
    handler.emit = lambda record: records.append(formatter.format(record))  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        logger.warning("connecting to %s", url)
        logger.warning("password s3cr3t-pw in the message")
        try:
            raise ValueError(f"bad DSN {url}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert records[0] == f"connecting to {MASK}"
    assert records[1] == f"password {MASK} in the message"
    assert "s3cr3t" not in records[2] and f"ValueError: bad DSN {MASK}" in records[2]
