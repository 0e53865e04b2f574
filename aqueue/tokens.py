"""API tokens: made, listed, revoked and checked. A token is `aq_` and 43 characters of
a URL-safe encoding of 32 random bytes; the database keeps its SHA-256 digest only (see
sql/010_tokens.sql), so the secret exists in one place: with whoever was given it.

Scopes say what a token may do over HTTP (the routes name theirs, aqueue/api/auth.py):
`enqueue` (POST /jobs and the seed's /submit-job and /job-status), `read` (every GET,
/metrics, /openapi.json), `admin` (cancel, retry, pause, resume, schedules, limits; it
includes the other scopes: an operator's token), and `worker` (reserved for the
remote-worker routes; no route asks for it yet)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aqueue import store
from aqueue.model import ValidationError, check_name

SCOPES = ("enqueue", "read", "admin", "worker")
# what each scope lets a token do besides itself
IMPLIED = {"admin": ("enqueue", "read")}
PREFIX = "aq_"
# the shared --api-token's name (aqueue/api/auth.py): no database token may take it
RESERVED_NAMES = frozenset({"api-token"})
# at most ten years: a token meant to live for ever is made without --expires
MAX_EXPIRES_SECONDS = 10 * 365 * 86_400


class TokenNameTaken(ValueError):
    """Names are never reused, not even a revoked token's."""


class TokenNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Token:
    """A token as the database knows it: everything but the secret."""

    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Token:
        return cls(
            row["name"],
            tuple(row["scopes"]),
            row["created_at"],
            row["expires_at"],
            row["revoked_at"],
            row["last_used_at"],
        )

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def to_json(self, now: datetime) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "name": self.name,
            "scopes": list(self.scopes),
            "state": self.state(now),
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
        }


@dataclass(frozen=True)
class Identity:
    """Who made a request: a token's name and what it may do (implied scopes included)."""

    name: str
    scopes: frozenset[str]
    expires_at: datetime | None = None

    def allows(self, needed: Iterable[str]) -> bool:
        return any(scope in self.scopes for scope in needed)


def parse_scopes(text: str | Iterable[str]) -> tuple[str, ...]:
    """`enqueue,read` (or a list) -> ("enqueue", "read"), checked; ValidationError else."""
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = tuple(dict.fromkeys(item.strip() for item in items if item.strip()))
    if not scopes:
        raise ValidationError(f"--scopes needs at least one of: {', '.join(SCOPES)}")
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise ValidationError(
            f"--scopes has an unknown scope {unknown[0]!r}; scopes are: {', '.join(SCOPES)}"
        )
    return scopes


def granted(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes a token holds, with those its scopes imply."""
    held = set(scopes)
    for scope in list(held):
        held.update(IMPLIED.get(scope, ()))
    return frozenset(held)


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def same_secret(given: str, expected: str) -> bool:
    """Constant-time: how long the comparison takes says nothing of how much matched."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


async def create(
    db: store.Executor, name: str, scopes: Iterable[str], expires_seconds: float | None
) -> tuple[Token, str]:
    """A new token and its secret, which is shown once and kept nowhere."""
    check_name("token", name)
    if name in RESERVED_NAMES:
        raise ValidationError(f"the token name {name!r} is reserved for --api-token")
    checked = parse_scopes(scopes)
    if expires_seconds is not None and not 0 < expires_seconds <= MAX_EXPIRES_SECONDS:
        raise ValidationError("--expires must be longer than 0 and at most 10 years")
    secret = new_secret()
    row = await store.insert_token(db, name, digest(secret), checked, expires_seconds)
    if row is None:
        raise TokenNameTaken(
            f"a token named {name!r} exists (names are never reused, even revoked ones)"
        )
    return Token.from_row(row), secret


async def list_all(db: store.Executor) -> list[Token]:
    return [Token.from_row(row) for row in await store.list_tokens(db)]


async def revoke(db: store.Executor, name: str) -> Token:
    row = await store.revoke_token(db, name)
    if row is None:
        raise TokenNotFound(f"no token named {name!r}")
    return Token.from_row(row)


async def authenticate(db: store.Executor, secret: str) -> Identity | None:
    """The identity of a live token, or None (unknown, revoked or expired: the caller
    learns no more than that, and neither does whoever tries tokens)."""
    if not secret.startswith(PREFIX):
        return None
    row = await store.authenticate_token(db, digest(secret))
    if row is None:
        return None
    return Identity(row["name"], granted(row["scopes"]), row["expires_at"])
