"""Signed link tokens (HMAC-SHA256): each is scoped to one action and one subscriber or alert."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta

from alertd.errors import InvalidToken, TokenExpired

MAX_TOKEN_CHARS = 200
# A token issued a little "in the future" (clocks of two workers) is still accepted.
CLOCK_SKEW = timedelta(minutes=5)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _signature(secret: str, payload: str) -> str:
    digest = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return _b64(digest[:18])


def _number(text: str) -> bool:
    return 0 < len(text) <= 12 and text.isascii() and text.isdigit()


def make_token(
    secret: str, action: str, subject_id: int, *, issued_at: datetime | None = None
) -> str:
    """A URL-safe token that proves the link was made by us for this action and id.

    With ``issued_at`` the token carries that moment (whole seconds), so that
    ``read_token(..., max_age=...)`` can refuse it once it is too old.
    """
    payload = f"{action}.{subject_id}"
    if issued_at is not None:
        payload += f".{int(issued_at.timestamp())}"
    return f"{payload}.{_signature(secret, payload)}"


def read_token(
    secret: str,
    action: str,
    token: str,
    *,
    max_age: timedelta | None = None,
    now: datetime | None = None,
) -> int:
    """The id the token was made for.

    Args:
        max_age: for expiring kinds: the token must carry an issue time no older than this
            (measured at ``now``, which is then required).

    Raises:
        InvalidToken: the token is malformed, forged, or for another action.
        TokenExpired: the token is genuine but older than ``max_age``.
    """
    parts = token.split(".") if len(token) <= MAX_TOKEN_CHARS and token.isascii() else []
    expected_parts = 3 if max_age is None else 4
    if len(parts) != expected_parts or parts[0] != action or not all(map(_number, parts[1:-1])):
        raise InvalidToken("this link is not valid")
    expected = _signature(secret, ".".join(parts[:-1]))
    if not hmac.compare_digest(expected.encode(), parts[-1].encode()):
        raise InvalidToken("this link is not valid")
    if max_age is not None:
        if now is None:
            raise ValueError("read_token needs now with max_age")
        age = now.timestamp() - int(parts[2])
        if age > max_age.total_seconds() or age < -CLOCK_SKEW.total_seconds():
            raise TokenExpired("this link has expired")
    return int(parts[1])
