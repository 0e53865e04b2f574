"""Secrets kept out of what aqueue prints: the database URL and its password (and the
shared API token, --api-token), in any log record (message and traceback, uvicorn's and
asyncpg's included) and in the CLI's error line. aqueue's own messages never include
them; this is the net under what a library might put in an exception's text (a malformed
URL quoted back, a password that is not %-encoded and so read as part of the host or
port)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import parse_qs, unquote, urlsplit

MASK = "***"
# Shorter pieces would mask every occurrence of a common letter or digit in the logs.
SHORTEST = 4


def url_secrets(url: str | None) -> tuple[str, ...]:
    """What of a database URL is never shown: the URL itself and its password, as written
    (%-encoded) and decoded, from the user-info part or a `password=` parameter."""
    if not url:
        return ()
    found = {url}
    userinfo, at, _ = url.partition("://")[2].partition("/")[0].rpartition("@")
    if at and ":" in userinfo:
        # as written: a password with an unencoded @ or / still ends at the last @
        found.add(userinfo.partition(":")[2])
    try:
        parts = urlsplit(url)
        if parts.password:
            found.add(parts.password)
        for value in parse_qs(parts.query).get("password", []):
            found.add(value)
    except ValueError:  # a malformed URL: what was found by hand stands
        pass
    found |= {unquote(piece) for piece in found}
    return tuple(sorted((p for p in found if len(p) >= SHORTEST), key=len, reverse=True))


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:  # the longest first: the URL goes whole, not around its password
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A handler's filter that masks the secrets in every record it formats."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = tuple(secrets)
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = redact(message, self.secrets)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


def install(secrets: Iterable[str]) -> None:
    """Mask `secrets` on every handler of the root logger (logging.basicConfig's), which
    every logger of the process reaches, uvicorn's included (aqueue gives uvicorn no
    handlers of its own)."""
    secrets = tuple(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter(secrets))
