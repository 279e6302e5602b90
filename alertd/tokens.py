"""Signed link tokens (HMAC-SHA256): each is scoped to one action, one subscriber or alert,
and the subscriber's link secret (a random per-row value: changing it revokes every link)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from alertd.errors import InvalidToken, TokenExpired

MAX_TOKEN_CHARS = 200
# A token issued a little "in the future" (clocks of two workers) is still accepted.
CLOCK_SKEW = timedelta(minutes=5)


def new_link_secret() -> str:
    """A fresh random link secret for a subscriber row (URL-safe, 32 characters)."""
    return secrets.token_urlsafe(24)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _signature(key: bytes, payload: str, link_secret: str) -> str:
    # The link secret is signed, not sent: a token says nothing about it.
    message = f"{payload}|{link_secret}".encode()
    return _b64(hmac.new(key, message, hashlib.sha256).digest()[:18])


def _number(text: str) -> bool:
    return 0 < len(text) <= 12 and text.isascii() and text.isdigit()


def make_token(
    key: bytes,
    action: str,
    subject_id: int,
    link_secret: str,
    *,
    issued_at: datetime | None = None,
) -> str:
    """A URL-safe token that proves the link was made by us for this action, id and secret.

    With ``issued_at`` the token carries that moment (whole seconds), so that
    ``check_age`` can refuse it once it is too old.
    """
    payload = f"{action}.{subject_id}"
    if issued_at is not None:
        payload += f".{int(issued_at.timestamp())}"
    return f"{payload}.{_signature(key, payload, link_secret)}"


@dataclass(frozen=True)
class Token:
    """A token split into its parts, not yet verified."""

    action: str
    subject_id: int
    issued_at_s: int | None
    payload: str
    signature: str


def parse_token(action: str, token: str, *, expiring: bool) -> Token:
    """The parts of a token for ``action`` (``expiring``: it must carry an issue time).

    Raises:
        InvalidToken: the token is malformed or for another action.
    """
    parts = token.split(".") if len(token) <= MAX_TOKEN_CHARS and token.isascii() else []
    expected_parts = 4 if expiring else 3
    if len(parts) != expected_parts or parts[0] != action or not all(map(_number, parts[1:-1])):
        raise InvalidToken("this link is not valid")
    issued = int(parts[2]) if expiring else None
    return Token(action, int(parts[1]), issued, ".".join(parts[:-1]), parts[-1])


def verify_token(token: Token, keys: Sequence[bytes], link_secret: str | None) -> int:
    """The token's id if one of ``keys`` signed it with ``link_secret``.

    Raises:
        InvalidToken: forged, altered, signed with a removed key, or with a link secret
            that has since changed (or ``link_secret`` is None: no such row).
    """
    if link_secret is not None:
        for key in keys:
            expected = _signature(key, token.payload, link_secret)
            if hmac.compare_digest(expected.encode(), token.signature.encode()):
                return token.subject_id
    raise InvalidToken("this link is not valid")


def check_age(token: Token, max_age: timedelta, now: datetime) -> None:
    """Raises TokenExpired when the token's issue time is older than ``max_age`` at ``now``."""
    assert token.issued_at_s is not None
    age = now.timestamp() - token.issued_at_s
    if age > max_age.total_seconds() or age < -CLOCK_SKEW.total_seconds():
        raise TokenExpired("this link has expired")
